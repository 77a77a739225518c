"""Dataset loaders on local copies only (nothing is downloaded in tests), and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daskml_scale.data import clean, load_creditcard, load_movielens, validate
from daskml_scale.data._datasets import REGISTRY
from daskml_scale.errors import ParameterError, SchemaError

ROOT = Path(__file__).resolve().parents[1] / "datasets"
SAMPLE = ROOT / "creditcard-sample" / "creditcard_sample.csv"


def test_movielens_latest_small_shipped_copy():
    ml = load_movielens("ml-latest-small")
    got = ml.compute()
    raw = pd.read_csv(ROOT / "movielens-latest-small" / "ratings.csv")
    assert len(got) == len(raw) == REGISTRY["ml-latest-small"]["rows"]
    assert list(got.columns) == ["user_id", "item_id", "timestamp", "weight"]
    np.testing.assert_array_equal(got["user_id"], raw["userId"])
    np.testing.assert_array_equal(got["weight"], raw["rating"])
    assert got["timestamp"].iloc[0] == pd.Timestamp(raw["timestamp"].iloc[0], unit="s")
    assert validate(ml, "interactions").passed


def test_movielens_100k_and_1m_formats(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    a = load_movielens(tmp_path / "ml-100k").compute()
    b = load_movielens(tmp_path / "ml-1m" / "ratings.dat").compute()
    assert a["item_id"].tolist() == [242, 302] and a["weight"].tolist() == [3.0, 3.0]
    assert b["user_id"].tolist() == [1, 1] and b["timestamp"].iloc[0] == pd.Timestamp(978300760, unit="s")


def test_movielens_refuses_unknown_hash_and_bad_paths(tmp_path):
    with pytest.raises(ParameterError, match="known_hash"):
        load_movielens("ml-25m", data_home=tmp_path)  # no sha256 recorded: refused before any download
    with pytest.raises(SchemaError, match="ratings"):
        load_movielens(tmp_path)
    with pytest.raises(ParameterError, match="does not exist"):
        load_movielens(tmp_path / "nope.csv")
    with pytest.raises(ParameterError, match="load_creditcard"):
        load_movielens("creditcard")


def test_creditcard_sample():
    tx = load_creditcard(SAMPLE, blocksize=20_000)
    assert tx.npartitions > 1
    got = tx.compute()
    raw = pd.read_csv(SAMPLE)
    assert got["transaction_id"].tolist() == list(range(len(raw)))  # row order across partitions
    assert got["timestamp"].iloc[-1] == pd.Timestamp("2013-09-01") + pd.Timedelta(
        seconds=raw["Time"].iloc[-1]
    )
    assert (got["card_id"] == 0).all() and (got["merchant_id"] == 0).all()
    np.testing.assert_array_equal(got["is_fraud"], raw["Class"])
    np.testing.assert_allclose(got["V28"], raw["V28"])
    res = clean(tx, "transactions")
    assert res.report.rows_out == len(raw) and res.report.rows_quarantined == 0


def test_creditcard_errors(tmp_path):
    with pytest.raises(ParameterError, match="known_hash"):
        load_creditcard(data_home=tmp_path)
    pd.DataFrame({"Time": [0.0], "Amount": [1.0]}).to_csv(tmp_path / "creditcard.csv", index=False)
    with pytest.raises(SchemaError, match="V1"):
        load_creditcard(tmp_path)


def test_manifest_agrees_with_registry():
    manifest = json.loads((ROOT / "manifest.json").read_text())["datasets"]
    for name, entry in REGISTRY.items():
        m = manifest[name]
        assert (m["url"], m["sha256"], m["license"], m["table"]) == (
            entry["url"],
            entry["sha256"],
            entry["license"],
            entry["table"],
        )
        assert m["schema_mapping"]
        if m["sha256"] is None:
            assert "unknown" in m["sha256_note"]
    from daskml_scale.storage import sha256_file

    for name, m in manifest.items():
        for rel, h in (m.get("local_sha256") or {}).items():
            base = ROOT.parent / m["local_copy"]
            f = base / rel if base.is_dir() else base
            assert sha256_file(f) == h, name
