"""Training keeps one copy (issue 13): the featurized frame is never persisted; what the cluster holds
while xgboost trains is the down-sampled float32 model matrix with the label, and the validation part.
SGD keeps its featurized rows and scales them partition by partition in each epoch.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

from daskml_scale import schema as S
from daskml_scale.data import make_transactions
from daskml_scale.fraud import SGDFraudClassifier, XGBoostFraudClassifier
from daskml_scale.fraud._xgboost import _non_empty


def _in_memory(dask_scheduler=None) -> int:
    # (Client.nbytes also counts released tasks that the scheduler still knows)
    return sum(ts.nbytes for ts in dask_scheduler.tasks.values() if ts.state == "memory")


def _stored_bytes(client) -> int:
    """Bytes of the results held in the workers' memory."""
    return int(client.run_on_scheduler(_in_memory))


@pytest.fixture(scope="module")
def txns():
    # lazy: every fit reads and featurizes the generated partitions itself
    return make_transactions(40_000, days=20, npartitions=4, seed=3)


def test_xgboost_training_input_is_the_sampled_float32_matrix_only(client, txns):
    model = XGBoostFraudClassifier(negative_rate=0.2, valid_size=0.25, n_estimators=5, n_jobs=1)
    before = _stored_bytes(client)
    featurized, cutoff = model._prepare_fit(txns, client)
    train, valid = model._split(featurized, cutoff, client)
    del featurized
    stored = _stored_bytes(client) - before

    # what is kept: the model columns as float32, then the label
    assert list(train.columns) == [*model.model_columns_, S.IS_FRAUD]
    assert (train.dtypes[model.model_columns_] == np.float32).all()
    tr, va = train.compute(), valid.compute()
    assert len(tr) == model.n_train_ and len(va) == model.n_valid_
    # the negatives were sampled before anything was kept (about 20% of them)
    n_window = int((txns[S.TIMESTAMP] < cutoff).sum().compute())
    assert model.n_train_ < 0.3 * n_window
    # nothing else stays in cluster memory: the featurized frame (strings, float64 features, every
    # training row) would be several times these bytes
    exact = int(tr.memory_usage(index=True, deep=True).sum() + va.memory_usage(index=True, deep=True).sum())
    assert stored <= 1.1 * exact + 64 * 1024, (stored, exact)
    assert len(_non_empty(train, client).columns) == len(model.model_columns_) + 1


def test_fit_on_cluster_equals_fit_in_memory(client, txns):
    """The persisted float32 matrix trains the same model as the in-process path (pandas input)."""
    params = {
        "negative_rate": 0.5,
        "n_estimators": 10,
        "max_depth": 3,
        "n_jobs": 1,
        "early_stopping_rounds": None,
    }
    on_cluster = XGBoostFraudClassifier(**params).fit(txns.repartition(npartitions=1), client=client)
    local = XGBoostFraudClassifier(**params).fit(txns.compute())
    assert on_cluster.n_train_ == local.n_train_
    sample = txns.compute().iloc[:2000]
    np.testing.assert_allclose(
        on_cluster.decision_function(sample), local.decision_function(sample), rtol=1e-5
    )


def test_sgd_fit_leaves_nothing_on_the_workers(client, txns):
    """After fit nothing is left on the workers. (That the epochs, which scale and encode each
    partition inside their tasks, keep no dense matrix while they run is not observed here.)"""
    model = SGDFraudClassifier(negative_rate=0.5, epochs=2, strategy="sequential")
    before = _stored_bytes(client)
    model.fit(txns, client=client)
    assert model.n_epochs_ == 2 and np.isfinite(model.coef_).all()
    # after fit nothing is left behind on the workers (releases reach the scheduler asynchronously)
    gc.collect()
    deadline = time.monotonic() + 10
    while _stored_bytes(client) - before >= 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stored_bytes(client) - before < 64 * 1024


def test_fit_without_features_on_a_filtered_parquet_read(client, tmp_path):
    """Regression: persisting a projection of a filtered ``read_parquet`` with ``dask.persist`` (not
    optimized first) lost its futures on the next reduction ("lost dependencies", dask 2026.8): the
    checks of ``fit(features=None)`` failed at once on a 20M-row table."""
    import dask.dataframe as dd
    import pandas as pd

    from daskml_scale.storage import write_parquet

    write_parquet(make_transactions(60_000, days=20, npartitions=4, seed=0), tmp_path / "tx", client=client)
    table = dd.read_parquet(str(tmp_path / "tx"))
    train = table[table[S.TIMESTAMP] < pd.Timestamp("2025-01-15")]
    model = XGBoostFraudClassifier(features=None, n_estimators=3, n_jobs=1).fit(train, client=client)
    assert model.n_train_ + model.n_valid_ == int((train[S.TIMESTAMP].count()).compute())
