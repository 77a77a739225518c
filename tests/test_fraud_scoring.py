"""Batch scoring, thresholds, artifacts and the train/score CLI of the fraud models."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale.cli import main
from daskml_scale.data import make_transactions
from daskml_scale.errors import ArtifactError, ParameterError, SchemaError
from daskml_scale.fraud import SGDFraudClassifier, XGBoostFraudClassifier, load_model, score, tune_threshold
from daskml_scale.storage import write_parquet

FAST = {"learning_rate": 0.3, "n_estimators": 30, "early_stopping_rounds": 5, "max_depth": 4, "n_jobs": 1}


@pytest.fixture(scope="module")
def frames():
    """(train, new) pandas frames: 8 days of history, then 2 days to score."""
    with dask.config.set(scheduler="sync"):
        tx = make_transactions(12_000, days=10, npartitions=3, fraud_rate=0.03, seed=5).compute()
    tx = tx.reset_index(drop=True)
    cut = pd.Timestamp("2025-01-09")
    return tx[tx.timestamp < cut].reset_index(drop=True), tx[tx.timestamp >= cut].reset_index(drop=True)


@pytest.fixture(scope="module")
def xgb_model(frames):
    with dask.config.set(scheduler="sync"):
        return XGBoostFraudClassifier(**FAST).fit(frames[0])


@pytest.fixture(scope="module")
def sgd_model(frames):
    with dask.config.set(scheduler="sync"):
        return SGDFraudClassifier(epochs=2).fit(frames[0])


def _digests(path: Path) -> dict:
    """sha256 of every part; the manifest (job id, time) must list exactly those parts and hashes."""
    parts = {
        f.relative_to(path).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != "_manifest.json"
    }
    manifest = json.loads((path / "_manifest.json").read_text())
    assert {p["path"]: p["sha256"] for p in manifest["parts"]} == parts
    return parts


# ------------------------------------------------------------------------------------ scoring
def test_score_keeps_every_row_once_and_rerun_is_identical(tmp_path, frames, xgb_model):
    train, new = frames
    ddf = dd.from_pandas(new, npartitions=3, sort=False)
    hist = dd.from_pandas(train, npartitions=2, sort=False)
    out = tmp_path / "scores"
    summary = score(xgb_model, ddf, out=out, history=hist, threshold=0.7)
    assert summary["rows"] == len(new)
    written = pd.read_parquet(out)
    assert list(written.columns) == ["transaction_id", "score", "is_alert"]
    assert written.transaction_id.is_unique
    assert set(written.transaction_id) == set(new.transaction_id)  # every input row exactly once
    assert written.score.between(0, 1).all()
    assert (written.is_alert == (written.score >= 0.7)).all()
    assert summary["alerts"] == int(written.is_alert.sum())
    first = _digests(out)
    score(xgb_model, ddf, out=out, history=hist, threshold=0.7)  # rerun into the same place
    assert _digests(out) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # the scores equal the in-memory predictions with the same history
    expected = xgb_model.predict_proba(new, history=train)[:, 1]
    got = written.set_index("transaction_id").loc[new.transaction_id, "score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_score_lazy_without_out(frames, sgd_model):
    _, new = frames
    lazy = score(sgd_model, dd.from_pandas(new, npartitions=2, sort=False))
    assert isinstance(lazy, dd.DataFrame)
    out = lazy.compute()
    assert len(out) == len(new) and out.is_alert.dtype == bool
    assert (out.is_alert == (out.score >= sgd_model.threshold)).all()


def test_score_of_parquet_input_keeps_the_card_partitions(tmp_path, frames, xgb_model):
    """A parquet input, scored with history: the written parts are the card stage's partitions and
    nothing else moves rows. (With the merchant stage's features joined from a second shuffle,
    dask-expr saw the scored frame as two sources, so score's ``is_alert`` column (``scored["score"]
    >= threshold``) was aligned to it by two hidden shuffles on the index: the written parts held
    every card, their rows depended on how the graph was built (the CLI and the library wrote
    different files), and the lazy result failed on duplicate index labels.)"""
    from dask.dataframe.dask_expr._shuffle import ShuffleBase

    train, new = frames
    path = tmp_path / "new"
    dd.from_pandas(new, npartitions=3, sort=False).to_parquet(path, write_index=False)
    hist = dd.from_pandas(train, npartitions=2, sort=False)
    lazy = score(xgb_model, dd.read_parquet(path), history=hist, keep=["card_id"], threshold=0.3)
    # merchant, then card: nothing else moves rows
    assert len(list(lazy.optimize().expr.find_operations(ShuffleBase))) == 2
    parts = [p.compute() for p in lazy.to_delayed()]
    assert sum(map(len, parts)) == len(new)
    cards = [set(p.card_id) for p in parts]
    assert sum(map(len, cards)) == new.card_id.nunique()  # each card in one part
    out = pd.concat(parts, ignore_index=True)
    assert (out.is_alert == (out.score >= 0.3)).all()
    expected = xgb_model.predict_proba(new, history=train)[:, 1]
    got = out.set_index("transaction_id").loc[new.transaction_id, "score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_score_without_history_differs_at_the_start(frames, xgb_model):
    """History matters: without it the first transactions of each card look new."""
    train, new = frames
    with_h = xgb_model.predict_proba(new, history=train)[:, 1]
    without = xgb_model.predict_proba(new)[:, 1]
    assert not np.allclose(with_h, without)


def test_score_bad_inputs(frames, xgb_model):
    _, new = frames
    with pytest.raises(SchemaError, match="'merchant_id' is missing"):
        score(xgb_model, new.drop(columns="merchant_id"))
    with pytest.raises(ParameterError, match="'threshold' parameter"):
        score(xgb_model, new, threshold=-1)
    with pytest.raises(SchemaError, match="pandas or Dask DataFrame"):
        score(xgb_model, new.to_numpy())


def test_tune_threshold_budget_and_fpr(frames, xgb_model):
    _, new = frames
    model = copy.deepcopy(xgb_model)
    t = tune_threshold(model, new, method="budget", budget=0.01)
    assert model.threshold == t and xgb_model.threshold == 0.5
    p = model.predict_proba(new)[:, 1]
    assert (p >= t).sum() <= 0.01 * len(new)
    assert (p >= p[p < t].max()).sum() > 0.01 * len(new)  # the lowest threshold within the budget
    t_fpr = tune_threshold(model, new, method="fpr", target_fpr=0.001)
    neg = p[new.is_fraud.to_numpy() == 0]
    assert (neg >= t_fpr).mean() <= 0.001


# ------------------------------------------------------------------------------------ artifacts
@pytest.mark.parametrize("fmt", ["ubj", "json"])
def test_xgboost_artifact_round_trip(tmp_path, frames, xgb_model, fmt):
    _, new = frames
    path = xgb_model.save(tmp_path / "model", format=fmt)
    assert (path / f"model.{fmt}").is_file() and (path / "features.json").is_file()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "XGBoostFraudClassifier"
    assert manifest["versions"]["xgboost"]
    assert set(manifest["files"]) == {f"model.{fmt}", "features.json"}
    assert manifest["metadata"]["schema"]["categories"]["channel"] == ["online", "pos"]
    assert "pr_auc" in manifest["metadata"]["state"]["validation_metrics_"]
    loaded = load_model(path)
    assert isinstance(loaded, XGBoostFraudClassifier)
    assert loaded.get_params(deep=False).keys() == xgb_model.get_params(deep=False).keys()
    np.testing.assert_array_equal(loaded.predict_proba(new)[:, 1], xgb_model.predict_proba(new)[:, 1])
    assert XGBoostFraudClassifier.load(path).best_iteration_ == xgb_model.best_iteration_


def test_sgd_artifact_round_trip(tmp_path, frames, sgd_model):
    _, new = frames
    path = sgd_model.save(tmp_path / "sgd")
    assert {p.name for p in path.iterdir()} == {
        "manifest.json",
        "features.json",
        "coef.npy",
        "intercept.npy",
        "mean.npy",
        "scale.npy",
    }
    loaded = SGDFraudClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(new)[:, 1], sgd_model.predict_proba(new)[:, 1])
    # the loaded model continues training like the original
    loaded.partial_fit(new)
    assert loaded.n_rows_seen_ == sgd_model.n_rows_seen_ + len(new)


def test_raw_columns_model_round_trip(tmp_path, frames):
    train, new = frames
    model = SGDFraudClassifier(features=None, epochs=1).fit(train)
    loaded = load_model(model.save(tmp_path / "raw"))
    assert loaded.features is None and loaded.features_ is None
    np.testing.assert_array_equal(loaded.predict_proba(new), model.predict_proba(new))


def test_tampered_artifact_is_refused(tmp_path, xgb_model, sgd_model):
    path = xgb_model.save(tmp_path / "model")
    data = bytearray((path / "model.ubj").read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    (path / "model.ubj").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.ubj: sha256 mismatch"):
        load_model(path)
    path = sgd_model.save(tmp_path / "sgd")
    (path / "coef.npy").unlink()
    with pytest.raises(ArtifactError, match="coef.npy: missing"):
        load_model(path)
    with pytest.raises(ArtifactError, match="not a XGBoostFraudClassifier"):
        XGBoostFraudClassifier.load(sgd_model.save(tmp_path / "sgd2"))
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_model(tmp_path / "nothing")


# ------------------------------------------------------------------------------------ CLI
def test_cli_train_and_score(tmp_path, client, spread, frames, capsys):
    train, new = frames
    write_parquet(dd.from_pandas(train, npartitions=2, sort=False), tmp_path / "train")
    write_parquet(dd.from_pandas(new, npartitions=2, sort=False), tmp_path / "new")
    addr = ["--scheduler", client.scheduler.address]
    with spread() as ts:
        code = main(["train", "fraud", str(tmp_path / "train"), "--model", str(tmp_path / "m"), "--algo", "sgd",
                     "--valid-from", "2025-01-07", *addr])  # fmt: skip
    assert code == 0
    ts.assert_spread(prefix="")  # the CLI trained on the cluster given by --scheduler, both workers
    report = json.loads(capsys.readouterr().out)
    assert report["algo"] == "sgd" and report["validation"]["n"] > 0
    code = main(["score", str(tmp_path / "new"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s"),
                 "--history", str(tmp_path / "train"), *addr])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(new)
    full = pd.read_parquet(tmp_path / "s").sort_values("transaction_id", ignore_index=True)
    assert len(full) == len(new)
    # --start: the same scores, each shuffle carrying only the history its windows read (the
    # stages in another order, so the parts hold other rows)
    for start in ("auto", "2025-01-09"):
        code = main(["score", str(tmp_path / "new"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s2"),
                     "--history", str(tmp_path / "train"), "--start", start, *addr])  # fmt: skip
        assert code == 0 and json.loads(capsys.readouterr().out)["rows"] == len(new)
        got = pd.read_parquet(tmp_path / "s2").sort_values("transaction_id", ignore_index=True)
        pd.testing.assert_frame_equal(got, full, check_exact=True)
    # a start after the batch's first row is refused, before anything is written
    code = main(["score", str(tmp_path / "new"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s3"),
                 "--history", str(tmp_path / "train"), "--start", "2025-01-10", *addr])  # fmt: skip
    assert code == 2 and "start" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists()


def test_cli_errors_exit_2(tmp_path, client, capsys):
    code = main(["score", str(tmp_path), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "fraud", "x", "--model", "m", "--algo", "lightgbm"])
