import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from daskml_scale import ParameterError
from daskml_scale.data import make_interactions, make_transactions
from daskml_scale.data._synthetic import BLOCK_ROWS
from daskml_scale.schema import INTERACTIONS, TRANSACTIONS


def test_transactions_schema_and_dtypes():
    df = make_transactions(5000, seed=1).compute()
    assert set(TRANSACTIONS.required) <= set(df.columns)
    assert df.transaction_id.is_unique
    assert df.transaction_id.dtype == np.int64
    assert df.timestamp.dtype == "datetime64[ns]"
    assert df.amount.dtype == np.float64 and (df.amount >= 0).all()
    assert set(df.is_fraud.unique()) <= {0, 1}
    assert len(df) == 5000


def test_interactions_schema():
    df = make_interactions(3000, n_users=100, n_items=40, seed=1).compute()
    assert list(df.columns) == list(INTERACTIONS.columns)
    assert df.user_id.between(0, 99).all() and df.item_id.between(0, 39).all()
    assert (df.weight == 1.0).all()


@pytest.mark.parametrize("make", [make_transactions, make_interactions])
def test_same_seed_same_rows_whatever_the_partitioning(make):
    n = 5 * BLOCK_ROWS + 123
    a = make(n, npartitions=1, seed=7).compute().reset_index(drop=True)
    b = make(n, npartitions=6, seed=7).compute().reset_index(drop=True)
    c = make(n, partition_rows=BLOCK_ROWS * 2, seed=7).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    d = make(n, npartitions=2, seed=8).compute().reset_index(drop=True)
    assert not a.equals(d)


def test_same_rows_on_a_cluster_as_on_the_sync_scheduler(client, spread):
    n = 3 * BLOCK_ROWS
    local = make_transactions(n, npartitions=3, seed=4)
    with spread() as ts:
        on_cluster = client.compute(local).result().reset_index(drop=True)
    ts.assert_spread()
    import dask

    with dask.config.set(scheduler="sync"):
        expected = local.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(on_cluster, expected)


@pytest.mark.parametrize("make", [make_transactions, make_interactions])
def test_a_billion_rows_is_lazy_with_one_task_per_partition(make):
    t0 = time.perf_counter()
    ddf = make(10**9, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0
    graph = ddf.optimize().__dask_graph__()
    assert len(graph) == ddf.npartitions  # one task per partition, nothing else
    assert ddf.npartitions == -(-(10**9) // (1 << 20))


def test_one_partition_costs_memory_of_that_partition_only():
    """Peak memory to materialise one partition grows with the partition, not with the dataset."""

    def peak(n_rows, partition_rows):
        ddf = make_transactions(n_rows, partition_rows=partition_rows, seed=0)
        tracemalloc.start()
        part = ddf.partitions[1].compute()
        _, p = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return p, len(part)

    small_data, rows_a = peak(10**6, 16 * BLOCK_ROWS)
    huge_data, rows_b = peak(10**9, 16 * BLOCK_ROWS)
    assert rows_a == rows_b == 16 * BLOCK_ROWS
    assert huge_data < 1.5 * small_data  # a 1000x larger dataset: same cost per partition
    bigger_part, _ = peak(10**9, 64 * BLOCK_ROWS)
    assert 2.5 * huge_data < bigger_part < 6 * huge_data  # ~4x rows, ~4x memory


def test_fraud_rate_is_planted_in_bursts():
    df = make_transactions(100_000, fraud_rate=0.01, seed=3).compute()
    assert 0.008 < df.is_fraud.mean() < 0.012
    fraud = df[df.is_fraud == 1].sort_values(["card_id", "timestamp"])
    gaps = fraud.groupby("card_id").timestamp.diff().dropna()
    assert (gaps < pd.Timedelta("1h")).mean() > 0.6  # bursts: minutes apart on the same card
    legit = df[df.is_fraud == 0]
    # amounts overlap between the classes: raw amount alone does not separate them
    assert fraud.amount.median() < legit.amount.quantile(0.95)


def test_interactions_popularity_is_skewed():
    df = make_interactions(50_000, n_users=500, n_items=1000, seed=2).compute()
    counts = df.item_id.value_counts()
    top = counts.iloc[: len(counts) // 100].sum() / counts.sum()
    assert top > 0.05  # the top 1% of items carry far more than 1% of interactions


def test_empty_and_tiny():
    assert len(make_transactions(0).compute()) == 0
    assert len(make_interactions(1, n_users=5, n_items=5).compute()) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_rows": -1}, "'n_rows' parameter of make_transactions must be an int >= 0"),
        ({"n_rows": 10, "npartitions": 0}, "'npartitions'.*>= 1"),
        ({"n_rows": 10, "npartitions": 2, "partition_rows": 5}, "not both"),
        ({"n_rows": 10, "fraud_rate": 0.7}, "'fraud_rate'.*\\[0, 0.5\\)"),
        ({"n_rows": 10, "days": 0}, "'days'"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        make_transactions(**kwargs)
