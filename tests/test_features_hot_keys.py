"""Hot keys: entities with a large share of the rows are split into overlapping time buckets.

The split must change no value (bit for bit, against the unsplit result and the pandas oracle),
must leave no task with the whole hot entity, and must keep ``transform(new, history=...)`` equal
to ``transform(all)``.
"""

from __future__ import annotations

import json

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from test_features import assert_matches_oracle, by_id, make_frame, oracle, scattered

from daskml_scale.errors import ParameterError
from daskml_scale.features import TransactionFeatures
from daskml_scale.features._hot_keys import BUCKET, CONTEXT, split_partitions
from daskml_scale.features._partition import stage_lookback

HOT_MERCHANT, HOT_CARD = 3, 7
DAY = pd.Timedelta(days=1)


def make_hot_frame(n=6_000, days=180, seed=5):
    """One merchant with ~40% of the rows, one card with ~20% (and a skewed tail), over 180 days."""
    df = make_frame(n=n, days=days, hot_share=0.2, seed=seed)
    rng = np.random.default_rng(seed + 1)
    df.loc[rng.random(n) < 0.4, "merchant_id"] = HOT_MERCHANT
    return df


@pytest.fixture(scope="module")
def hot():
    return make_hot_frame()


@pytest.fixture(scope="module")
def unsplit(hot):
    tf = TransactionFeatures(hot_key_rows=None).fit(scattered(hot, 6))
    assert tf.hot_keys_ == {}
    return by_id(tf.transform(scattered(hot, 6)))


def hot_values(tf, column):
    return [v for v, _ in tf.hot_keys_.get(column, [])]


@pytest.mark.parametrize("hot_key_rows", ["auto", 150])
def test_hot_merchant_and_card_equal_pandas_and_the_unsplit_values(hot, unsplit, hot_key_rows):
    assert (hot.merchant_id == HOT_MERCHANT).mean() > 0.38 and (hot.card_id == HOT_CARD).mean() > 0.2
    tf = TransactionFeatures(hot_key_rows=hot_key_rows).fit(scattered(hot, 6))
    assert HOT_MERCHANT in hot_values(tf, "merchant_id") and HOT_CARD in hot_values(tf, "card_id")
    got = by_id(tf.transform(scattered(hot, 7, seed=3)))
    assert len(got) == len(hot) and got.index.is_unique
    # bit-identical to the unsplit result, every column, floats included
    pd.testing.assert_frame_equal(got, unsplit[got.columns], check_exact=True)
    want = oracle(hot)
    assert_matches_oracle(got, want, list(want.columns))


def test_a_transform_longer_than_the_fit_data_splits_what_is_hot_in_it(hot, unsplit):
    """Regression: hot keys were the entities over the limit in the fit data, so fitting on the
    first days and transforming the whole span left a merchant under the limit at fit (in 22 days)
    and 6x over it in the transform (180 days) in one task. Entities over limit / HEADROOM at fit are
    now listed with buckets of ``hot_key_rows`` rows at their fit rate."""
    limit, nparts = 400, 24
    early = hot[hot.timestamp < hot.timestamp.min() + 22 * DAY]
    in_fit = int((early.merchant_id == HOT_MERCHANT).sum())
    total = int((hot.merchant_id == HOT_MERCHANT).sum())
    assert in_fit < limit < total / 5
    tf = TransactionFeatures(hot_key_rows=limit, npartitions=nparts).fit(scattered(early, 3))
    assert HOT_MERCHANT in hot_values(tf, "merchant_id")
    ddf = scattered(hot, 6)
    stage = tf._stages(tf.frequencies_)[0]
    assert stage["entity"] == "merchant_id"
    parts = split_partitions(ddf, stage, tf.hot_keys_["merchant_id"], nparts, "tasks")
    per_task = parts.map_partitions(
        lambda p: pd.Series([int((p.merchant_id == HOT_MERCHANT).sum())]), meta=(None, "int64")
    ).compute()
    assert per_task.max() <= 1.5 * limit  # a bucket (about the limit at the fit rate) and its context
    got = by_id(tf.transform(ddf))
    want = by_id(TransactionFeatures(hot_key_rows=None).fit(scattered(early, 3)).transform(ddf))
    pd.testing.assert_frame_equal(got, want[got.columns], check_exact=True)


def test_no_task_holds_the_whole_hot_entity(hot):
    nparts = 24
    tf = TransactionFeatures(hot_key_rows=150, npartitions=nparts).fit(scattered(hot, 6))
    ddf = scattered(hot, 6)
    for stage in tf._stages(tf.frequencies_):
        col = stage["entity"]
        value = {"merchant_id": HOT_MERCHANT, "card_id": HOT_CARD}[col]
        [(_, width)] = [p for p in tf.hot_keys_[col] if p[0] == value]
        lookback = stage_lookback(stage)
        total = int((hot[col] == value).sum())
        parts = split_partitions(ddf, stage, tf.hot_keys_[col], nparts, "tasks")

        def count(p, col=col, value=value):
            mine = p[p[col] == value]
            return pd.DataFrame(
                {
                    "rows": [len(mine)],
                    "context": [int(mine[CONTEXT].sum())],
                    "buckets": [mine[BUCKET].nunique()],
                }
            )

        per_task = parts.map_partitions(count, meta=count(parts._meta)).compute()
        # every row once as its own, context rows only from the look-back before a bucket
        assert per_task["rows"].sum() - per_task["context"].sum() == total
        # pandas: own rows of each bucket, and rows in the look-back before it
        t = hot.loc[hot[col] == value, "timestamp"].to_numpy().view(np.int64)
        k = np.floor_divide(t, width)
        buckets = np.unique(k)
        largest = max(
            ((k == b).sum() + ((t >= b * width - lookback) & (t < b * width)).sum()) for b in buckets
        )
        overlap = max(((t >= b * width - lookback) & (t < b * width)).sum() for b in buckets)
        assert len(buckets) >= 3 and len(buckets) <= nparts
        assert per_task["buckets"].max() == 1  # consecutive buckets on different partitions
        assert per_task["rows"].max() == largest
        assert per_task["rows"].max() <= np.bincount(k - k.min()).max() + overlap  # one bucket + overlap
        assert per_task["rows"].max() <= total / 2  # well below the whole entity
        print(f"{col}={value}: {total} rows, {len(buckets)} buckets, largest task {per_task['rows'].max()}")
    # unsplit: one task holds the whole hot merchant
    one = ddf.shuffle(on="merchant_id", npartitions=nparts)
    rows = one.map_partitions(lambda p: pd.Series([(p.merchant_id == HOT_MERCHANT).sum()])).compute()
    assert rows.max() == (hot.merchant_id == HOT_MERCHANT).sum()


def test_history_equals_all_at_once_with_hot_keys(hot, unsplit):
    tf = TransactionFeatures(hot_key_rows=150).fit(scattered(hot))
    assert set(tf.hot_keys_) == {"merchant_id", "card_id"}
    full = by_id(tf.transform(scattered(hot)))
    pd.testing.assert_frame_equal(full, unsplit[full.columns], check_exact=True)
    start = hot.timestamp.min().normalize()
    # one-day batches and a four-day batch (crossing bucket edges), history trimmed
    for first, days in ((start + 40 * DAY, 1), (start + 61 * DAY, 1), (start + 70 * DAY, 4)):
        in_new = (hot.timestamp >= first) & (hot.timestamp < first + days * DAY)
        new = hot[in_new]
        hist = hot[(hot.timestamp < first) & (hot.timestamp >= first - tf.required_history_)]
        assert (new.merchant_id == HOT_MERCHANT).sum() > 5 and (new.card_id == HOT_CARD).sum() > 2
        got = by_id(tf.transform(scattered(new, 3), history=scattered(hist, 4)))
        assert len(got) == len(new)
        pd.testing.assert_frame_equal(got, full.loc[got.index], check_exact=True)


def test_rows_on_bucket_and_overlap_edges():
    """Rows exactly on a bucket's start, on the start minus the look-back, and 1ns either side."""
    width, lookback = 2 * DAY, DAY  # merchant stage: windows 1h and 24h
    ns = pd.Timedelta(1, unit="ns")
    base = make_frame(n=600, days=12, seed=2)
    k0 = pd.Timestamp("2025-03-01").value // width.value + 1
    rows = []
    rng = np.random.default_rng(0)
    for k in range(k0, k0 + 5):
        edge = pd.Timestamp(k * width.value)
        for at in (
            edge - lookback - ns,
            edge - lookback,
            edge - lookback + ns,
            edge - ns,
            edge,
            edge,
            edge + ns,
        ):
            rows.append((at, int(rng.integers(0, 40)), float(rng.integers(1, 100))))
    extra = pd.DataFrame(
        {
            "transaction_id": np.arange(len(rows), dtype=np.int64) + 10_000,
            "timestamp": pd.DatetimeIndex([r[0] for r in rows]).astype("datetime64[ns]"),
            "card_id": np.array([r[1] for r in rows], dtype=np.int64),
            "merchant_id": np.int64(HOT_MERCHANT),
            "amount": [r[2] for r in rows],
            "merchant_category": pd.array(["food"] * len(rows), dtype="str"),
            "channel": pd.array(["pos"] * len(rows), dtype="str"),
            "is_fraud": np.int64(0),
        }
    )
    df = pd.concat([base, extra], ignore_index=True)
    tf = TransactionFeatures(hot_key_rows=None).fit(scattered(df, 4))
    ref = by_id(tf.transform(scattered(df, 4)))
    tf.hot_keys_ = {"merchant_id": [[HOT_MERCHANT, width.value]]}  # buckets 2 days wide, 1 day overlap
    got = by_id(tf.transform(scattered(df, 5, seed=7)))
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert_matches_oracle(
        got, oracle(df), ["merchant_txn_count_1h", "merchant_txn_count_24h", "merchant_amount_mean_24h"]
    )
    # a bucket narrower than the look-back would lose rows: refused
    tf.hot_keys_ = {"merchant_id": [[HOT_MERCHANT, lookback.value - 1]]}
    with pytest.raises(ValueError, match="look-back"):
        tf.transform(scattered(df, 4))


def test_string_ids_and_tz_aware_timestamps_with_hot_keys(hot):
    df = hot.assign(
        card_id=pd.array("c" + hot.card_id.astype(str), dtype="str"),
        merchant_id=pd.array("m" + hot.merchant_id.astype(str), dtype="str"),
        timestamp=hot.timestamp.dt.tz_localize("Asia/Kolkata"),
    )
    tf = TransactionFeatures(hot_key_rows=150).fit(scattered(df, 5))
    assert f"m{HOT_MERCHANT}" in hot_values(tf, "merchant_id") and f"c{HOT_CARD}" in hot_values(tf, "card_id")
    got = by_id(tf.transform(scattered(df, 5)))
    ref = by_id(TransactionFeatures(hot_key_rows=None).fit(scattered(df, 5)).transform(scattered(df, 4)))
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_hot_keys_survive_to_dict_and_old_specs_load(hot):
    tf = TransactionFeatures(hot_key_rows=150).fit(scattered(hot, 3))
    d = json.loads(json.dumps(tf.to_dict(), sort_keys=True))
    tf2 = TransactionFeatures.from_dict(d)
    assert tf2.hot_keys_ == tf.hot_keys_ and tf2.hot_key_rows == 150
    pd.testing.assert_frame_equal(
        by_id(tf2.transform(scattered(hot, 3))), by_id(tf.transform(scattered(hot, 3))), check_exact=True
    )
    old = json.loads(json.dumps(d))
    del old["fitted"]["hot_keys_"], old["params"]["hot_key_rows"]
    tf3 = TransactionFeatures.from_dict(old)
    assert tf3.hot_keys_ == {} and tf3.hot_key_rows == "auto"


def test_small_entities_are_not_listed_and_buckets_are_at_least_the_look_back(hot):
    # 6 days of data: the hot card's buckets are its 30-day look-back (one bucket in the fit data,
    # several in a longer transform); the merchant's look-back is 24h
    short = make_frame(n=2_000, hot_share=0.8, seed=3)
    tf = TransactionFeatures(hot_key_rows=10).fit(scattered(short, 4))
    assert dict(tf.hot_keys_["card_id"])[7] == 30 * DAY.value
    assert dict(tf.hot_keys_["merchant_id"])[HOT_MERCHANT] >= DAY.value
    # listed: the entities over hot_key_rows / 16 in the fit data, and no other
    limit = 300
    tf = TransactionFeatures(hot_key_rows=limit).fit(scattered(hot, 4))
    for col in ("merchant_id", "card_id"):
        counts = hot[col].value_counts()
        assert sorted(hot_values(tf, col)) == sorted(counts[counts > limit / 16].index)
    assert TransactionFeatures(hot_key_rows=10**6).fit(scattered(hot, 4)).hot_keys_ == {}


@pytest.mark.parametrize("value", [0, -3, True, 2.5, "many", "AUTO"])
def test_bad_hot_key_rows(hot, value):
    with pytest.raises(ParameterError, match="'hot_key_rows' parameter of TransactionFeatures must be"):
        TransactionFeatures(hot_key_rows=value).fit(dd.from_pandas(hot, npartitions=1))


def test_distributed_p2p_with_hot_keys_matches_unsplit(client, hot, unsplit):
    ddf = scattered(hot, 6)
    tf = TransactionFeatures(hot_key_rows=150, shuffle_method="p2p").fit(ddf, client=client)
    assert set(tf.hot_keys_) == {"merchant_id", "card_id"}
    got = by_id(tf.transform(ddf).compute())
    pd.testing.assert_frame_equal(got, unsplit[got.columns], check_exact=True)
