"""`daskml-scale train als` and `daskml-scale recommend` end to end on the test cluster."""

from __future__ import annotations

import json

import pandas as pd

from daskml_scale.cli import main
from daskml_scale.data import make_interactions
from daskml_scale.recommend import ALSRecommender
from daskml_scale.storage import write_parquet


def test_train_als_then_recommend(client, tmp_path, capsys):
    data = tmp_path / "interactions"
    write_parquet(make_interactions(8_000, n_users=150, n_items=60, seed=2, npartitions=2), data)
    addr = ["--scheduler", client.scheduler.address]
    rc = main(["train", "als", str(data), "--model", str(tmp_path / "m"), "--engine", "distributed",
               "--factors", "6", "--iterations", "3", "--alpha", "2", *addr])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == pd.read_parquet(data)["user_id"].nunique()
    model = ALSRecommender.load(tmp_path / "m")
    assert model.engine == "distributed" and model.factors == 6 and model.alpha == 2.0

    out = tmp_path / "recs"
    rc = main(["recommend", "--model", str(tmp_path / "m"), "--out", str(out), "--n", "4",
               "--exclude-seen", str(data), *addr])  # fmt: skip
    assert rc == 0
    recs = pd.read_parquet(out)
    assert recs.columns.tolist() == ["user_id", "item_id", "score", "rank"]
    assert recs.groupby("user_id").size().max() == 4
    seen = pd.read_parquet(data)
    pairs = set(zip(seen["user_id"], seen["item_id"], strict=True))
    assert not any(p in pairs for p in zip(recs["user_id"], recs["item_id"], strict=True))


def test_recommend_missing_model_exits_2(tmp_path, capsys):
    rc = main(["recommend", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "manifest.json is missing" in capsys.readouterr().err
