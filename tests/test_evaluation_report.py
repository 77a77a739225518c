"""Reports (HTML, JSON, PNG) and the ``daskml-scale evaluate`` command."""

from __future__ import annotations

import json

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from daskml_scale.cli import main
from daskml_scale.errors import ParameterError
from daskml_scale.evaluation import (
    ClassificationReport,
    RankingReport,
    Report,
    classification_metrics,
    ranking_metrics,
)


def _scored(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    s = np.round(rng.beta(1, 5, n), 3)
    y = (rng.random(n) < s).astype(int)
    return pd.DataFrame({"is_fraud": y, "score": s, "amount": rng.exponential(50, n)})


def _recs_truth():
    rng = np.random.default_rng(1)
    recs = pd.DataFrame(
        [(u, int(i), r) for u in range(30) for r, i in enumerate(rng.choice(50, 10, replace=False), 1)],
        columns=["user_id", "item_id", "rank"],
    )
    truth = pd.DataFrame([(u, int(i)) for u in range(5, 40) for i in rng.choice(50, 4, replace=False)])
    truth.columns = ["user_id", "item_id"]
    return recs, truth


def test_classification_report(tmp_path):
    df = _scored()
    r = Report.classification(dd.from_pandas(df, npartitions=5), amount="amount", threshold=0.3)
    m = classification_metrics(df, amount="amount", threshold=0.3)
    for key, v in m.items():
        assert r.metrics[key] == pytest.approx(v, nan_ok=True), key
    assert r.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(df["is_fraud"], df["score"]), abs=1e-9)
    assert {"roc", "pr", "gain", "score_distribution", "calibration"} <= set(r.tables)
    html = r._repr_html_()
    assert html.count("data:image/png;base64,") == 5 and "roc_auc" in html
    out = r.save(tmp_path / "rep")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "calibration.png",
        "gain.png",
        "manifest.json",
        "pr.png",
        "report.json",
        "roc.png",
        "score_distribution.png",
    ]
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads((out / "report.json").read_text())  # strict JSON (no NaN/Infinity tokens)
    assert d["kind"] == "classification" and d["metrics"]["n"] == 3000
    back = Report.load(out)
    assert back.metrics["pr_auc"] == r.metrics["pr_auc"]
    # the first ROC threshold (+inf, "no alert") is null in strict JSON, so it reads back as NaN
    pd.testing.assert_frame_equal(back.tables["roc"].iloc[1:], r.tables["roc"].iloc[1:], check_dtype=False)
    with pytest.raises(ParameterError, match="not a report written by Report.save"):
        Report.load(tmp_path)
    same = ClassificationReport(df, amount="amount", threshold=0.3)  # constructor form (used by the demo)
    assert isinstance(same, Report) and same.metrics == pytest.approx(r.metrics)


def test_reports_on_the_cluster_spread_and_match(client, spread):
    df = _scored()
    with spread() as ts:
        r = Report.classification(dd.from_pandas(df, npartitions=6), amount="amount", client=client)
    ts.assert_spread(prefix="hist_from_frame")
    assert r.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(df["is_fraud"], df["score"]), abs=1e-9)
    recs, truth = _recs_truth()
    with spread() as ts:
        rr = Report.ranking(dd.from_pandas(recs, npartitions=4), dd.from_pandas(truth, npartitions=3), k=5)
    ts.assert_spread(prefix="_rank_sums")
    assert rr.metrics == pytest.approx(ranking_metrics(recs, truth, k=5))


def test_ranking_report(tmp_path):
    recs, truth = _recs_truth()
    r = Report.ranking(dd.from_pandas(recs, npartitions=3), truth, k=5, ks=(1, 10))
    m = ranking_metrics(recs, truth, k=5)
    for key, v in m.items():
        assert r.metrics[key] == pytest.approx(v), key
    assert list(r.tables["metrics_at_k"]["k"]) == [1, 5, 10]
    assert r._repr_html_().count("data:image/png;base64,") == 1
    assert RankingReport(recs, truth, k=5, ks=(1, 10)).metrics == pytest.approx(r.metrics)
    assert sorted(p.name for p in r.save(tmp_path / "r").iterdir()) == ["manifest.json", "metrics_at_k.png", "report.json"]


def test_cli_evaluate(client, tmp_path, capsys):
    df = _scored()
    df.to_parquet(tmp_path / "scored.parquet")
    addr = ["--scheduler", client.scheduler.address]
    code = main(
        [
            "evaluate",
            "classification",
            str(tmp_path / "scored.parquet"),
            "--label",
            "is_fraud",
            "--score",
            "score",
            *addr,
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(df["is_fraud"], df["score"]), abs=1e-9)
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(df["is_fraud"], df["score"]), abs=1e-9)
    args = ["evaluate", "classification", str(tmp_path / "scored.parquet"), "--score-ranges", "auto"]
    assert main([*args, "--report", str(tmp_path / "rep"), *addr]) == 0
    assert json.loads(capsys.readouterr().out)["pr_auc"] == pytest.approx(out["pr_auc"], abs=1e-9)
    assert (tmp_path / "rep" / "roc.png").exists()
    args = [
        "evaluate",
        "classification",
        str(tmp_path / "scored.parquet"),
        "--score-ranges",
        "3",
        "--passes",
        "2",
    ]
    assert main([*args, *addr]) == 0
    assert json.loads(capsys.readouterr().out)["roc_auc"] == pytest.approx(out["roc_auc"], abs=1e-9)
    recs, truth = _recs_truth()
    recs.to_parquet(tmp_path / "recs.parquet")
    truth.to_parquet(tmp_path / "truth.parquet")
    code = main(
        [
            "evaluate",
            "ranking",
            str(tmp_path / "recs.parquet"),
            str(tmp_path / "truth.parquet"),
            "--k",
            "5",
            *addr,
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(ranking_metrics(recs, truth, k=5))
    code = main(["evaluate", "classification", str(tmp_path / "scored.parquet"), "--label", "nope", *addr])
    assert code == 2
    assert "not found" in capsys.readouterr().err
