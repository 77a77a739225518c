import json

import pandas as pd
import pytest

from daskml_scale import ParameterError
from daskml_scale.cli import main
from daskml_scale.demo import run_demo


@pytest.mark.slow
def test_demo_end_to_end_tiny(client, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--rows", "40000", "--out", str(out), "--scheduler", client.scheduler.address])
    assert code == 0
    printed = capsys.readouterr().out
    assert "roc_auc" in printed and "ndcg@10" in printed  # the summary table

    metrics = json.loads((out / "metrics.json").read_text())
    fraud = metrics["fraud"]["xgboost"]
    rec = metrics["recommend"]
    for key in ("roc_auc", "pr_auc"):
        assert 0.0 <= fraud[key] <= 1.0
    for model in ("als", "popularity"):
        for key in ("precision@10", "ndcg@10"):
            assert 0.0 <= rec[model][key] <= 1.0
    # quality on the planted signal, even this small
    assert fraud["roc_auc"] >= 0.9
    assert rec["als"]["ndcg@10"] > rec["popularity"]["ndcg@10"]

    scores = pd.read_parquet(out / "scores")
    assert list(scores.columns) == ["transaction_id", "score", "is_alert"]
    assert scores.transaction_id.is_unique and scores.score.between(0, 1).all()
    assert fraud["n"] == len(scores)  # every test-period transaction scored exactly once
    recs = pd.read_parquet(out / "recommendations")
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank"]
    assert recs.groupby("user_id")["rank"].max().max() <= 10
    assert not recs.duplicated(["user_id", "item_id"]).any()
    pngs = sorted(p.name for p in (out / "plots").rglob("*.png"))
    assert "roc.png" in pngs and "pr.png" in pngs
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # written atomically, no temporaries left


def test_demo_refuses_too_few_rows(tmp_path):
    with pytest.raises(ParameterError, match="'rows' parameter of run_demo must be >= 20000"):
        run_demo(rows=100, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
