"""Batch scoring that keeps going (issue 13, part A): rows that cannot be scored go to a quarantine
with a reason; counts are conserved; ``strict`` fails before writing; both outputs commit together.

Every test here fails on the code before this change: a string amount was refused ("'amount' must be
numeric"), a missing timestamp failed the behaviour features of the whole batch, and ``score`` had no
``quarantine`` / ``strict``.
"""

from __future__ import annotations

import json

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale.cli import main
from daskml_scale.data import make_transactions
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.fraud import XGBoostFraudClassifier, score

FAST = {"learning_rate": 0.3, "n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 4, "n_jobs": 1}


@pytest.fixture(scope="module")
def frames():
    """(train, new) pandas frames with an extra numeric model column ``v1``."""
    with dask.config.set(scheduler="sync"):
        tx = make_transactions(8_000, days=10, npartitions=2, fraud_rate=0.03, seed=7).compute()
    tx = tx.reset_index(drop=True)
    tx["v1"] = np.random.default_rng(0).normal(size=len(tx))
    cut = pd.Timestamp("2025-01-09")
    return tx[tx.timestamp < cut].reset_index(drop=True), tx[tx.timestamp >= cut].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(frames):
    with dask.config.set(scheduler="sync"):
        return XGBoostFraudClassifier(**FAST).fit(frames[0])


# one planted row per kind of problem: (column, value, expected reason)
PLANTS = [
    ("amount", "12,50", "nonfinite_amount"),  # unparseable
    ("amount", None, "nonfinite_amount"),  # missing
    ("amount", "inf", "nonfinite_amount"),
    ("amount", float("-inf"), "nonfinite_amount;negative_amount"),  # two checks, one row
    ("amount", -3.0, "negative_amount"),
    ("timestamp", None, "invalid_timestamp"),  # missing time
    ("timestamp", "31/02/2025 25:00", "invalid_timestamp"),  # unparseable
    ("card_id", None, "missing_card_id"),
    ("merchant_id", None, "missing_merchant_id"),
    ("v1", "n/a", "nonfinite_v1"),  # unparseable extra model column
    ("v1", np.inf, "nonfinite_v1"),
]


def _plant(frame: pd.DataFrame, step: int = 97) -> tuple[pd.DataFrame, dict]:
    """``frame`` as strings/objects (wrong dtypes, as a CSV export gives) with the PLANTS rows; returns
    it and ``{transaction_id: reason}`` of the bad rows."""
    out = frame.copy()
    for col in ("amount", "timestamp", "v1"):
        out[col] = out[col].astype(object)
    out = out.astype({"card_id": "Float64", "merchant_id": "Float64"})  # ids read from a float column
    expected = {}
    for i, (col, value, reason) in enumerate(PLANTS):
        row = out.index[(i + 1) * step]
        out.at[row, col] = value
        expected[int(out.at[row, "transaction_id"])] = reason
    out["amount"] = out["amount"].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return out, expected


def _scores(path) -> pd.Series:
    return pd.read_parquet(path).set_index("transaction_id")["score"].sort_index()


def test_planted_bad_rows_are_quarantined_and_good_rows_scored_as_alone(tmp_path, frames, model):
    train, new = frames
    planted, expected = _plant(new)
    # a missing transaction id too (no id to report it by: counted by reason)
    planted["transaction_id"] = planted["transaction_id"].astype(object)
    no_id_row = planted.index[5]
    no_id_original = int(new.at[no_id_row, "transaction_id"])
    planted.at[no_id_row, "transaction_id"] = "x-17"
    # a bad row earlier than every good one: the first time score finds is then not a good row's
    negative = planted.index[planted.transaction_id.isin([k for k, r in expected.items() if r == "negative_amount"])]
    planted.at[negative[0], "timestamp"] = str(new.timestamp.min() - pd.Timedelta("1h"))
    # bad history rows: dropped from the history and counted, not a failure
    hist = train.copy()
    hist["timestamp"] = hist["timestamp"].astype(object)
    hist.loc[hist.index[::500], "timestamp"] = None
    n_hist_bad = len(hist.index[::500])

    summary = score(
        model,
        dd.from_pandas(planted, npartitions=3, sort=False),
        history=dd.from_pandas(hist, npartitions=2, sort=False),
        out=tmp_path / "scores",
        quarantine=tmp_path / "quarantine",
        start="auto",
    )
    n_bad = len(expected) + 1
    assert summary["rows_in"] == len(new)
    assert summary["rows_quarantined"] == n_bad
    assert summary["rows_scored"] == summary["rows"] == len(new) - n_bad
    assert summary["rows_scored"] + summary["rows_quarantined"] == summary["rows_in"]
    assert summary["conserved"] is True
    assert summary["counts"]["nonfinite_amount"] == 4
    assert summary["counts"]["negative_amount"] == 2
    assert summary["counts"]["invalid_timestamp"] == 2
    assert summary["counts"]["missing_card_id"] == 1
    assert summary["counts"]["missing_merchant_id"] == 1
    assert summary["counts"]["missing_transaction_id"] == 1
    assert summary["counts"]["nonfinite_v1"] == 2
    assert summary["history"] == {
        "rows_in": len(train),
        "rows_used": len(train) - n_hist_bad,
        "rows_dropped": n_hist_bad,
        "counts": {**dict.fromkeys(summary["counts"], 0), "invalid_timestamp": n_hist_bad},
    }

    written = pd.read_parquet(tmp_path / "scores")
    quarantined = pd.read_parquet(tmp_path / "quarantine")
    assert len(written) == summary["rows_scored"] and len(quarantined) == summary["rows_quarantined"]
    # the ids partition the input's: scored and quarantined are disjoint and together are the input
    scored_ids = set(written.transaction_id)
    q_ids = set(quarantined.transaction_id.dropna().astype(int))
    assert scored_ids.isdisjoint(q_ids)
    assert scored_ids | q_ids | {no_id_original} == set(new.transaction_id)
    assert quarantined.transaction_id.isna().sum() == 1
    # every bad row is there with its reason
    with_id = quarantined.dropna(subset=["transaction_id"])
    reasons = dict(zip(with_id.transaction_id.astype(int), with_id.reason))
    assert reasons == expected
    assert quarantined.loc[quarantined.transaction_id.isna(), "reason"].tolist() == ["missing_transaction_id"]
    assert {"source_partition", "source_row", "reason"} <= set(quarantined.columns)

    # the good rows' scores are exactly those of scoring the good rows alone (with the good history)
    good = new[new.transaction_id.isin(scored_ids)]
    alone = score(
        model,
        dd.from_pandas(good, npartitions=2, sort=False),
        history=dd.from_pandas(hist.dropna(subset=["timestamp"]).astype({"timestamp": "datetime64[ns]"}),
                               npartitions=2, sort=False),
        out=tmp_path / "alone",
    )  # fmt: skip
    assert alone["rows_quarantined"] == 0
    pd.testing.assert_series_equal(_scores(tmp_path / "scores"), _scores(tmp_path / "alone"))
    # start="auto" cuts the history by the batch's first time (found by a pass over its timestamps, bad rows
    # included: an earlier planted time only lowers the bound): the scores of the uncut history
    assert pd.to_datetime(planted["timestamp"], errors="coerce", format="mixed").min() < good.timestamp.min()
    uncut = model.predict_proba(
        dd.from_pandas(good, npartitions=2, sort=False),
        history=dd.from_pandas(hist.dropna(subset=["timestamp"]).astype({"timestamp": "datetime64[ns]"}),
                               npartitions=2, sort=False),
    ).compute().set_index("transaction_id")["score"].sort_index()  # fmt: skip
    pd.testing.assert_series_equal(_scores(tmp_path / "scores"), uncut, check_exact=True)
    assert written.score.between(0, 1).all()


def test_lazy_scores_leave_bad_rows_out(frames, model):
    _, new = frames
    planted, expected = _plant(new)
    lazy = score(model, planted)  # pandas input, wrong dtypes
    out = lazy.compute()
    assert len(out) == len(new) - len(expected)
    assert not set(expected) & set(out.transaction_id)


def test_without_quarantine_dir_bad_rows_are_counted(tmp_path, frames, model):
    _, new = frames
    planted, expected = _plant(new)
    summary = score(model, planted, out=tmp_path / "s")
    assert summary["quarantine"] is None
    assert summary["rows_quarantined"] == len(expected)
    assert summary["rows_scored"] + summary["rows_quarantined"] == summary["rows_in"] == len(new)


def test_strict_fails_before_writing_and_names_column_rule_count(tmp_path, frames, model):
    train, new = frames
    planted, _ = _plant(new)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "previous.txt").write_text("kept")
    with pytest.raises(
        SchemaError, match=r"4 of \d+ rows fail the check 'nonfinite' on column 'amount'"
    ) as e:
        score(model, planted, out=tmp_path / "s", quarantine=tmp_path / "q", strict=True)
    assert e.value.column == "amount"
    assert "negative_amount=2" in str(e.value) and "Nothing was written" in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no quarantine, no temporary directories
    assert (tmp_path / "s" / "previous.txt").read_text() == "kept"
    # bad history rows fail a strict run too
    hist = train.assign(amount=train.amount.where(train.index % 1000 != 0, -1.0))
    with pytest.raises(SchemaError, match="history rows fail the check 'negative' on column 'amount'"):
        score(model, new, history=hist, out=tmp_path / "s2", strict=True)
    assert not (tmp_path / "s2").exists()
    # clean data: strict changes nothing
    a = score(model, new, out=tmp_path / "a", strict=True)
    b = score(model, new, out=tmp_path / "b")
    assert a["rows_quarantined"] == b["rows_quarantined"] == 0
    pd.testing.assert_series_equal(_scores(tmp_path / "a"), _scores(tmp_path / "b"))


def test_outputs_commit_together_or_not_at_all(tmp_path, frames, model, monkeypatch):
    _, new = frames
    planted, _ = _plant(new)
    score(model, planted, out=tmp_path / "s", quarantine=tmp_path / "q")
    before = {p: sorted(f.name for f in (tmp_path / p).iterdir()) for p in ("s", "q")}
    before_rows = len(pd.read_parquet(tmp_path / "s")), len(pd.read_parquet(tmp_path / "q"))

    def boom(pdf):
        raise RuntimeError("worker lost mid-run")

    monkeypatch.setattr(model, "_predict_partition", boom)
    with pytest.raises(RuntimeError, match="worker lost"):
        score(model, planted, out=tmp_path / "s", quarantine=tmp_path / "q")
    # neither output changed, no temporary leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q", "s"]
    assert {p: sorted(f.name for f in (tmp_path / p).iterdir()) for p in ("s", "q")} == before
    assert (len(pd.read_parquet(tmp_path / "s")), len(pd.read_parquet(tmp_path / "q"))) == before_rows


def test_score_parameter_errors(tmp_path, frames, model):
    _, new = frames
    with pytest.raises(ParameterError, match="quarantine= needs out="):
        score(model, new, quarantine=tmp_path / "q")
    with pytest.raises(ParameterError, match="different directories"):
        score(model, new, out=tmp_path / "x", quarantine=tmp_path / "x")
    with pytest.raises(ParameterError, match="'strict' parameter"):
        score(model, new, strict="yes")
    with pytest.raises(SchemaError, match="column 'v1' is missing"):
        score(model, new.drop(columns="v1"))


def test_cli_score_quarantine_and_strict(tmp_path, client, frames, model, capsys):
    train, new = frames
    planted, expected = _plant(new)
    planted["transaction_id"] = planted["transaction_id"].astype("int64")
    planted = planted.astype({c: "str" for c in ("amount", "timestamp", "v1")})
    planted = planted.replace({"None": None, "NaT": None})
    planted.to_parquet(tmp_path / "new.parquet", index=False)  # amounts, times, ids as strings
    train.to_parquet(tmp_path / "train.parquet", index=False)
    model.save(tmp_path / "m")
    addr = ["--scheduler", client.scheduler.address]
    base = ["score", str(tmp_path / "new.parquet"), "--model", str(tmp_path / "m"), "--history",
            str(tmp_path / "train.parquet"), "--out", str(tmp_path / "s")]  # fmt: skip
    assert main([*base, "--quarantine", str(tmp_path / "q"), *addr]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_in"] == len(new)
    assert summary["rows_quarantined"] == len(expected)
    assert summary["rows_scored"] + summary["rows_quarantined"] == summary["rows_in"]
    q = pd.read_parquet(tmp_path / "q")
    assert dict(zip(q.transaction_id.astype(int), q.reason)) == expected
    assert len(pd.read_parquet(tmp_path / "s")) == summary["rows_scored"]
    keep = [*base[:-1], str(tmp_path / "s_keep"), "--keep", "is_fraud", "--keep", "amount"]
    assert main([*keep, "--quarantine", str(tmp_path / "q_keep"), *addr]) == 0
    capsys.readouterr()
    assert list(pd.read_parquet(tmp_path / "s_keep").columns) == [
        "transaction_id", "is_fraud", "amount", "score", "is_alert"
    ]  # fmt: skip

    strict = [*base[:-1], str(tmp_path / "s_strict"), "--quarantine", str(tmp_path / "q_strict"), "--strict"]
    assert main([*strict, *addr]) == 2
    err = capsys.readouterr().err
    assert "fail the check 'nonfinite' on column 'amount'" in err and "Nothing was written" in err
    assert not (tmp_path / "s_strict").exists() and not (tmp_path / "q_strict").exists()


def test_keep_carries_the_label_beside_its_score(tmp_path, frames, model):
    """keep=["is_fraud"]: the label is written next to each score (an evaluation reads one table); a
    bad label is carried as it is, never a reason to quarantine; the scores do not change."""
    train, new = frames
    planted, expected = _plant(new)
    planted["is_fraud"] = planted["is_fraud"].astype("float64")
    odd = planted.index[3]
    planted.at[odd, "is_fraud"] = np.nan  # an unknown label: still scored
    ddf = dd.from_pandas(planted, npartitions=3, sort=False)
    hist = dd.from_pandas(train, npartitions=2, sort=False)
    kept = score(model, ddf, history=hist, out=tmp_path / "k", quarantine=tmp_path / "kq", keep=["is_fraud"])
    plain = score(model, ddf, history=hist, out=tmp_path / "p")
    assert kept["rows_quarantined"] == plain["rows_quarantined"] == len(expected)
    written = pd.read_parquet(tmp_path / "k")
    assert list(written.columns) == ["transaction_id", "is_fraud", "score", "is_alert"]
    labels = planted.set_index("transaction_id")["is_fraud"]
    got = written.set_index("transaction_id")["is_fraud"]
    pd.testing.assert_series_equal(got, labels.loc[got.index], check_names=False)
    assert np.isnan(got.loc[int(planted.at[odd, "transaction_id"])])
    pd.testing.assert_series_equal(_scores(tmp_path / "k"), _scores(tmp_path / "p"))


def test_keep_errors(frames, model):
    _, new = frames
    with pytest.raises(SchemaError, match=r"keep names column\(s\) \['label'\]"):
        score(model, new, keep=["label"])
    with pytest.raises(ParameterError, match="names output column"):
        score(model, new, keep=["score"])
    with pytest.raises(ParameterError, match="list of column names"):
        score(model, new, keep="is_fraud")
