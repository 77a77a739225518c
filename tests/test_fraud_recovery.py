"""XGBoost training that survives a lost worker: checkpoints, resume, early stopping carried over."""

from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
import xgboost as xgb

from daskml_scale.data import make_transactions
from daskml_scale.fraud import XGBoostFraudClassifier, _recovery


def _data(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=1.5, size=n) > 1.2).astype(int)
    return xgb.DMatrix(X[: n // 2], y[: n // 2]), xgb.DMatrix(X[n // 2 :], y[n // 2 :])


def test_resumed_early_stopping_stops_where_an_undisturbed_run_stops():
    """xgboost's own EarlyStopping on one uninterrupted run is the oracle."""
    dtrain, dvalid = _data()
    params = {
        "max_depth": 3,
        "eta": 0.3,
        "eval_metric": "aucpr",
        "nthread": 1,
        "objective": "binary:logistic",
    }
    evals = [(dvalid, "valid")]
    full = xgb.train(params, dtrain, 300, evals=evals, early_stopping_rounds=8, verbose_eval=False)
    assert full.num_boosted_rounds() < 300  # it did stop early
    for cut in (5, full.best_iteration + 3, full.num_boosted_rounds() - 2):
        first = xgb.train(params, dtrain, cut, evals=evals, verbose_eval=False,
                          callbacks=[_recovery._early_stopping(8, "valid", "aucpr", None, 0)])  # fmt: skip
        state = {
            "best_iteration": int(first.attr("best_iteration")),
            "best_score": float(first.attr("best_score")),
        }
        es = _recovery._early_stopping(8, "valid", "aucpr", state, cut)
        resumed = xgb.train(params, dtrain, 300 - cut, evals=evals, xgb_model=first, callbacks=[es],
                            verbose_eval=False)  # fmt: skip
        assert resumed.num_boosted_rounds() == full.num_boosted_rounds(), cut
        assert int(resumed.attr("best_iteration")) == full.best_iteration, cut


def test_checkpoint_save_latest_and_clear(tmp_path):
    dtrain, _ = _data()
    b = xgb.train({"max_depth": 2, "nthread": 1}, dtrain, 4)
    url = tmp_path / "ck"
    _recovery.save(url, bytes(b.save_raw("ubj")), 4, {"valid": {"aucpr": [0.1, 0.2]}})
    _recovery.save(url, bytes(b.save_raw("ubj")), 4, {"valid": {"aucpr": [0.1, 0.2]}})
    booster, rounds, history, stopping = _recovery.latest(url)
    assert rounds == 4 and history == {"valid": {"aucpr": [0.1, 0.2]}} and stopping is None
    np.testing.assert_array_equal(booster.predict(dtrain), b.predict(dtrain))
    assert len(list(url.glob("booster-*.ubj"))) == 1  # the older checkpoint was removed
    _recovery.clear(url)
    assert _recovery.latest(url) is None


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of its own: its workers get killed (the session cluster must not be disturbed)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
        c.as_current(),
        dask.config.set(scheduler=c),
    ):
        yield c


@pytest.mark.resilience
def test_worker_killed_mid_fit_resumes_from_checkpoint(own_cluster, tmp_path):
    c = own_cluster
    tx = c.persist(make_transactions(150_000, days=20, npartitions=4, fraud_rate=0.03, seed=3))
    params = dict(features=None, n_estimators=120, learning_rate=0.1, max_depth=5, n_jobs=1,
                  early_stopping_rounds=None)  # fmt: skip
    base = XGBoostFraudClassifier(**params).fit(tx, client=c)
    ck = tmp_path / "ck"
    model = XGBoostFraudClassifier(**params, checkpoint=str(ck), checkpoint_every=10)
    killed = {}

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 120
        while not (ck / "latest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = list(c.run(os.getpid).values())[-1]
        killed["rounds_at_kill"] = _recovery.latest(ck)[1]
        killed["at"] = time.time()
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    t.start()
    model.fit(tx, client=c)
    t.join(5)
    assert "at" in killed, "the worker was not killed"
    assert len(model.restarts_) == 1, model.restarts_
    r = model.restarts_[0]
    assert r["failed_at_unix"] - killed["at"] < 60  # noticed, no hang
    assert r["resumed_at"] >= killed["rounds_at_kill"] >= 10  # resumed from a checkpoint, not round 0
    assert model.booster_.num_boosted_rounds() == base.booster_.num_boosted_rounds() == 120
    m, b = model.validation_metrics_, base.validation_metrics_
    assert abs(m["pr_auc"] - b["pr_auc"]) < 0.02 and abs(m["roc_auc"] - b["roc_auc"]) < 0.01
    assert len(c.scheduler_info()["workers"]) == 2  # the nanny brought the worker back
