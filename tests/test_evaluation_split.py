"""Splitters: complete, disjoint, reproducible, and never training on the future."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale import compute
from daskml_scale.data import make_interactions
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.evaluation import leave_last_n_split, random_split, ratio_split, time_split


@pytest.fixture(scope="module")
def interactions():
    return make_interactions(3000, n_users=120, n_items=60, npartitions=4, seed=1)


def _key(df):
    return sorted(zip(df["user_id"], df["item_id"], df["timestamp"]))


def test_time_split(interactions):
    cutoff = "2025-02-01"
    train, test = time_split(interactions, cutoff)
    tr, te = compute(train, test)
    full = compute(interactions)[0]
    before = full["timestamp"] < pd.Timestamp(cutoff)
    assert 0 < before.sum() < len(full)  # the cutoff really splits the data
    assert _key(tr) == _key(full[before]) and _key(te) == _key(full[~before])
    with pytest.raises(ParameterError, match="not a timestamp"):
        time_split(interactions, "soon")
    with pytest.raises(SchemaError, match=r"time_split needs column\(s\) \['when'\]"):
        time_split(interactions, cutoff, time_col="when")


def test_random_split_reproducible_disjoint(interactions):
    tr1, te1 = compute(*random_split(interactions, 0.25, seed=3))
    tr2, te2 = compute(*random_split(interactions, 0.25, seed=3))
    pd.testing.assert_frame_equal(te1, te2)
    assert len(tr1) + len(te1) == 3000
    assert 0.18 < len(te1) / 3000 < 0.32
    full = compute(interactions)[0]
    assert _key(pd.concat([tr1, te1])) == _key(full)
    _, te3 = compute(*random_split(interactions, 0.25, seed=4))
    assert _key(te3) != _key(te1)
    with pytest.raises(ParameterError, match="test_size"):
        random_split(interactions, 1.5)


def _check_per_user(tr, te, full):
    assert _key(pd.concat([tr, te])) == _key(full)
    last_train = tr.groupby("user_id")["timestamp"].max()
    first_test = te.groupby("user_id")["timestamp"].min()
    common = first_test.index.intersection(last_train.index)
    assert (last_train[common] <= first_test[common]).all()  # no future row in training


@pytest.mark.parametrize("n", [1, 3])
def test_leave_last_n(interactions, n):
    full = compute(interactions)[0]
    tr, te = compute(*leave_last_n_split(interactions, n))
    _check_per_user(tr, te, full)
    sizes = full.groupby("user_id").size()
    want = sizes.where(sizes >= n + 1, 0).clip(upper=n)
    got = te.groupby("user_id").size().reindex(sizes.index, fill_value=0)
    pd.testing.assert_series_equal(got, want, check_names=False)
    # in memory gives the same split
    tr_p, te_p = leave_last_n_split(full, n)
    assert _key(te_p) == _key(te)


def test_ratio_split(interactions):
    full = compute(interactions)[0]
    tr, te = compute(*ratio_split(interactions, 0.3))
    _check_per_user(tr, te, full)
    sizes = full.groupby("user_id").size()
    got = te.groupby("user_id").size().reindex(sizes.index, fill_value=0)
    want = np.minimum(np.floor(sizes * 0.3 + 1e-9), sizes - 1).astype(int)
    assert (got.to_numpy() == want.to_numpy()).all()
    with pytest.raises(ParameterError, match="test_ratio"):
        ratio_split(interactions, 0)


def test_ties_in_time_are_deterministic_and_small_users_stay_in_train():
    df = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [5, 3, 4, 9], "timestamp": [7, 7, 1, 1]})
    tr, te = leave_last_n_split(dd.from_pandas(df, npartitions=2), 1)
    tr, te = compute(tr, te)
    assert te[["user_id", "item_id"]].values.tolist() == [[1, 5]]  # tie at t=7 broken by item id
    assert 2 in set(tr["user_id"])  # one row only: kept for training
    with pytest.raises(ParameterError, match="n must be a positive integer"):
        leave_last_n_split(df, 0)
    with pytest.raises(SchemaError, match="leave_last_n_split needs"):
        leave_last_n_split(df.drop(columns="timestamp"), 1)


def test_per_user_split_on_cluster(client, spread):
    full = compute(make_interactions(4000, n_users=150, n_items=60, seed=2))[0]
    interactions = dd.from_pandas(full, npartitions=6)  # (make_interactions gives one partition here)
    with spread() as ts:
        tr, te = compute(*leave_last_n_split(interactions, 2), client=client)
    ts.assert_spread(prefix="_per_user_flag")  # the per-user split ran on both workers
    _check_per_user(tr, te, full)
    _, te_local = leave_last_n_split(full, 2)  # in memory: the same split
    assert _key(te) == _key(te_local)
