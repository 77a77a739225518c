"""TransactionFeatures: every feature against a direct pandas computation, history, edge cases, errors."""

from __future__ import annotations

import json

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from daskml_scale.errors import NotFittedError, ParameterError, SchemaError
from daskml_scale.features import TransactionFeatures

REQUIRED = list(TransactionFeatures.REQUIRED)


# ------------------------------------------------------------------------------------------ data
def make_frame(n=2_500, n_cards=40, n_merchants=25, days=6, seed=0, hot_share=0.0, nan_share=0.03):
    """Transactions with many exact ties (half the times on a 5-minute grid), NaN amounts, skewed cards."""
    rng = np.random.default_rng(seed)
    cards = (n_cards * rng.random(n) ** 2).astype(np.int64)
    if hot_share:
        cards[rng.random(n) < hot_share] = 7
    minutes = rng.integers(0, days * 24 * 12, n) * 5
    # half the rows off the grid by a random number of microseconds (ns-level exactness)
    jitter = np.where(rng.random(n) < 0.5, rng.integers(1, 10**8, n) * 1000 + 7, 0)
    ts = pd.Timestamp("2025-03-01") + pd.to_timedelta(minutes * 60 * 10**9 + jitter, unit="ns")
    amount = np.round(np.exp(rng.normal(3, 1, n)), 2)
    amount[rng.random(n) < nan_share] = np.nan
    return pd.DataFrame(
        {
            "transaction_id": rng.permutation(n).astype(np.int64) + 1000,
            "timestamp": ts.astype("datetime64[ns]"),
            "card_id": cards,
            "merchant_id": rng.integers(0, n_merchants, n).astype(np.int64),
            "amount": amount,
            "merchant_category": pd.array(rng.choice(["food", "fuel", "web"], n), dtype="str"),
            "channel": pd.array(rng.choice(["pos", "online"], n, p=[0.7, 0.3]), dtype="str"),
            "is_fraud": (rng.random(n) < 0.05).astype(np.int64),
        }
    )


def scattered(df, npartitions=7, seed=1, empty_at=3):
    """Rows shuffled into many partitions (entities span them), with one empty partition inserted."""
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    ddf = dd.from_pandas(shuffled, npartitions=npartitions, sort=False)
    if empty_at is None:
        return ddf
    empty = dd.from_pandas(df.iloc[:0], npartitions=1)
    parts = [ddf.partitions[i] for i in range(ddf.npartitions)]
    out = dd.concat(parts[:empty_at] + [empty] + parts[empty_at:])
    sizes = out.map_partitions(len).compute().tolist()
    assert 0 in sizes and sum(sizes) == len(df)
    return out


def by_id(ddf_or_df):
    df = ddf_or_df.compute() if hasattr(ddf_or_df, "compute") else ddf_or_df
    return df.set_index("transaction_id").sort_index()


# ---------------------------------------------------------------------------------------- oracle
def td(label):
    n, unit = (label[:-3], "min") if label.endswith("min") else (label[:-1], label[-1])
    return pd.Timedelta(int(n), unit={"min": "min", "h": "h", "d": "D", "s": "s"}[unit])


def _rolling(df, entity, col, window, how):
    s = df.sort_values([entity, "timestamp", "transaction_id"])
    r = s.groupby(entity, sort=False).rolling(td(window), on="timestamp", closed="left")[col]
    res = getattr(r, how)()
    return pd.Series(res.to_numpy(), index=s["transaction_id"].to_numpy())


def oracle(df, gap_horizon="30d"):
    """The features computed directly with pandas groupby + time-based rolling(closed='left')."""
    df = df.assign(one=1.0)
    out = pd.DataFrame(index=pd.Index(np.sort(df["transaction_id"].to_numpy()), name="transaction_id"))
    out["card_txn_count_1h"] = _rolling(df, "card_id", "one", "1h", "sum").fillna(0)
    out["card_txn_count_24h"] = _rolling(df, "card_id", "one", "24h", "sum").fillna(0)
    out["card_amount_sum_24h"] = _rolling(df, "card_id", "amount", "24h", "sum").fillna(0)
    out["card_amount_mean_7d"] = _rolling(df, "card_id", "amount", "7d", "mean")
    out["card_amount_sum_1h"] = _rolling(df, "card_id", "amount", "1h", "sum").fillna(0)
    out["card_amount_mean_24h"] = _rolling(df, "card_id", "amount", "24h", "mean")
    out["card_txn_count_7d"] = _rolling(df, "card_id", "one", "7d", "sum").fillna(0)
    out["card_amount_std_7d"] = _rolling(df, "card_id", "amount", "7d", "std")
    out["merchant_txn_count_1h"] = _rolling(df, "merchant_id", "one", "1h", "sum").fillna(0)
    out["merchant_txn_count_24h"] = _rolling(df, "merchant_id", "one", "24h", "sum").fillna(0)
    out["merchant_amount_mean_24h"] = _rolling(df, "merchant_id", "amount", "24h", "mean")
    # seconds since the latest strictly earlier transaction of the card within [t - horizon, t)
    u = df[["card_id", "timestamp"]].drop_duplicates().sort_values(["card_id", "timestamp"])
    u["prev"] = u.groupby("card_id")["timestamp"].shift()
    m = df.merge(u, on=["card_id", "timestamp"], how="left").set_index("transaction_id")
    gap = (m["timestamp"] - m["prev"]).dt.as_unit("ns")
    # nanoseconds / 1e9, correctly rounded (Series.dt.total_seconds can be 1 ulp off)
    none = gap.isna() | (gap > td(gap_horizon))  # a gap of exactly the horizon is inside it
    secs = np.where(none, np.nan, gap.to_numpy().view(np.int64) / 1e9)
    out["card_seconds_since_prev"] = pd.Series(secs, index=m.index)
    # amount profile over 30 days
    mean30 = _rolling(df, "card_id", "amount", "30d", "mean")
    std30 = _rolling(df, "card_id", "amount", "30d", "std")
    amount = df.set_index("transaction_id")["amount"]
    out["card_amount_ratio_30d"] = (amount / mean30.where(mean30 != 0)).reindex(out.index)
    out["card_amount_zscore_30d"] = ((amount - mean30) / std30.where(std30 > 0)).reindex(out.index)
    # (card, merchant) pairs over 30 days
    pair = df.assign(pair=df["card_id"] * 1000 + df["merchant_id"])
    cm = _rolling(pair, "pair", "one", "30d", "sum").fillna(0)
    out["card_merchant_txn_count_30d"] = cm
    out["card_new_merchant_30d"] = (cm == 0).astype(float)
    # distinct merchants of the card in [t - 24h, t): brute force
    distinct = {}
    for _, g in df.groupby("card_id"):
        t = g["timestamp"].to_numpy()
        mer = g["merchant_id"].to_numpy()
        for tid, ti in zip(g["transaction_id"].to_numpy(), t):
            mask = (t >= ti - np.timedelta64(24, "h")) & (t < ti)
            distinct[tid] = len(set(mer[mask]))
    out["card_distinct_merchant_24h"] = pd.Series(distinct)
    # row-local
    ts = df.set_index("transaction_id")["timestamp"]
    hours = (
        ts.dt.hour
        + ts.dt.minute / 60
        + ts.dt.second / 3600
        + ts.dt.microsecond / 3.6e9
        + ts.dt.nanosecond / 3.6e12
    )
    out["hour_sin"] = np.sin(2 * np.pi * hours / 24)
    out["dow_cos"] = np.cos(2 * np.pi * ts.dt.day_of_week / 7)
    return out


EXACT = [
    "card_txn_count_1h",
    "card_txn_count_24h",
    "card_txn_count_7d",
    "card_seconds_since_prev",
    "card_distinct_merchant_24h",
    "card_merchant_txn_count_30d",
    "card_new_merchant_30d",
    "merchant_txn_count_1h",
    "merchant_txn_count_24h",
]


def assert_matches_oracle(got, want, columns):
    for col in columns:
        a = got[col].reindex(want.index).to_numpy(dtype=float)
        b = want[col].to_numpy(dtype=float)
        if col in EXACT:
            np.testing.assert_array_equal(a, b, err_msg=col)
        else:
            rtol = 1e-6 if "std" in col or "zscore" in col else 1e-9
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-9, equal_nan=True, err_msg=col)


# ----------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def frame():
    return make_frame()


@pytest.fixture(scope="module")
def want(frame):
    return oracle(frame)


def test_required_features_equal_pandas_rolling(frame, want):
    ddf = scattered(frame, npartitions=7)
    # every busy card's rows are spread over several input partitions
    spread = ddf.map_partitions(lambda p: p[["card_id"]].drop_duplicates()).compute()["card_id"]
    assert (spread.value_counts() >= 5).sum() >= 10
    tf = TransactionFeatures().fit(ddf)
    got = by_id(tf.transform(ddf))
    assert len(got) == len(frame) and got.index.is_unique
    assert_matches_oracle(got, want, REQUIRED)
    assert got["card_txn_count_1h"].dtype == np.int64
    # the oracle really is non-trivial on this data: windows hold rows and ties exist
    assert got["card_txn_count_1h"].max() >= 2 and (got["card_seconds_since_prev"] == 300).any()
    assert (got["card_seconds_since_prev"] % 1 != 0).sum() > 100  # sub-second gaps, exact to the ns
    assert frame.duplicated(["card_id", "timestamp"]).sum() >= 10  # exact ties within a card


def test_all_features_equal_pandas(frame, want):
    ddf = scattered(frame, npartitions=5, seed=4, empty_at=0)
    got = by_id(TransactionFeatures().fit(ddf).transform(ddf))
    assert_matches_oracle(got, want, list(want.columns))


def test_same_values_whatever_the_partitioning(frame):
    tf = TransactionFeatures().fit(dd.from_pandas(frame, npartitions=1))
    one = by_id(tf.transform(dd.from_pandas(frame, npartitions=1)))
    many = by_id(tf.transform(scattered(frame, npartitions=11, seed=9)))
    pd.testing.assert_frame_equal(one, many[one.columns], check_exact=True)


def test_columns_kept_and_is_fraud_untouched(frame):
    ddf = scattered(frame)
    tf = TransactionFeatures().fit(ddf)
    got = by_id(tf.transform(ddf))
    names = list(tf.get_feature_names_out())
    assert list(got.reset_index().columns) == list(frame.columns) + names
    src = by_id(ddf)
    pd.testing.assert_frame_equal(got[src.columns], src, check_exact=True)
    # no feature reads the label: flipping it changes nothing
    flipped = frame.assign(is_fraud=1 - frame["is_fraud"])
    got2 = by_id(tf.transform(scattered(flipped)))
    pd.testing.assert_frame_equal(got[names], got2[names], check_exact=True)


def test_input_columns_are_enough(frame):
    ddf = scattered(frame)
    tf = TransactionFeatures().fit(ddf)
    cols = ["transaction_id", "timestamp", "card_id", "amount", "merchant_id", "merchant_category", "channel"]
    assert tf.input_columns_ == cols
    names = list(tf.get_feature_names_out())
    narrow = by_id(tf.transform(ddf[tf.input_columns_]))
    pd.testing.assert_frame_equal(narrow[names], by_id(tf.transform(ddf))[names], check_exact=True)


def test_history_gives_the_all_at_once_values(frame):
    cutoff = pd.Timestamp("2025-03-05")
    hist, new = frame[frame.timestamp < cutoff], frame[frame.timestamp >= cutoff]
    tf = TransactionFeatures().fit(scattered(frame))
    full = by_id(tf.transform(scattered(frame)))
    names = list(tf.get_feature_names_out())
    want = full.loc[np.sort(new.transaction_id.to_numpy())]
    # complete history: bit-identical
    got = by_id(tf.transform(scattered(new, 3), history=scattered(hist, 4, empty_at=1)))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    # the same with a known start (the history cut before the shuffles, hot keys split as fitted)
    got = by_id(tf.transform(scattered(new, 3), history=scattered(hist, 4, empty_at=1), start=cutoff))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    # history trimmed to the longest window (30d here covers it all, so trim to 2 days with short
    # windows below) and history overlapping the new rows: same values
    overlap = pd.concat([hist, new.iloc[:100]])
    got = by_id(tf.transform(scattered(new, 3), history=scattered(overlap, 5)))
    pd.testing.assert_frame_equal(got[names], want[names], check_exact=True)


def test_daily_batches_with_history_trimmed_to_required_history(frame):
    tf = TransactionFeatures(
        windows={"1h": ["count"], "24h": ["count", "sum", "nunique"]},
        profile_window="2d",
        gap_horizon="36h",
        other_entities={"merchant_id": {"1h": ["count"]}},
    ).fit(scattered(frame))
    assert tf.required_history_ == pd.Timedelta(days=2)
    full = by_id(tf.transform(scattered(frame)))
    for day in (pd.Timestamp("2025-03-05"), pd.Timestamp("2025-03-06")):  # one batch a day
        new = frame[(frame.timestamp >= day) & (frame.timestamp < day + pd.Timedelta(days=1))]
        hist = frame[(frame.timestamp < day) & (frame.timestamp >= day - tf.required_history_)]
        assert len(hist) < (frame.timestamp < day).sum()
        got = by_id(tf.transform(scattered(new, 3), history=scattered(hist, 2)))
        want = full.loc[got.index]
        assert len(got) == len(new)
        for col in tf.get_feature_names_out():  # bit-identical, floats included
            np.testing.assert_array_equal(got[col], want[col], err_msg=col)


def test_history_streams_through_the_shuffles_with_no_global_reduction(frame):
    """With history, each stage's shuffle takes the new rows and the history rows as they come:
    no reduction over the new rows (such as their first time) gates the history. Before, each
    stage's history was filtered by the new rows' minimum time before its shuffle, so every history
    partition read before that minimum was known stayed in worker memory until every new partition
    had been read (1.6 GiB of them on one of two workers for a 100M-row table: memory that grew with
    the table, not the partition size). Each task now trims its history to the stage's look-back of
    its own first new row, after the shuffle (exact: tests above and below)."""
    from dask.dataframe.dask_expr import new_collection
    from dask.dataframe.dask_expr._reductions import Reduction
    from dask.dataframe.dask_expr._shuffle import ShuffleBase

    cutoff = pd.Timestamp("2025-03-05")
    hist, new = frame[frame.timestamp < cutoff], frame[frame.timestamp >= cutoff]
    tf = TransactionFeatures(hot_key_rows=None).fit(scattered(frame))  # no context copies to count
    history = scattered(hist, 4)
    out = tf.transform(scattered(new, 3), history=history)
    assert list(out.expr.find_operations(Reduction)) == []
    shuffles = list(out.expr.find_operations(ShuffleBase))
    assert len(shuffles) == 2  # merchant, then card: each takes the new rows and the whole history
    assert sorted(len(new_collection(s.frame)) for s in shuffles) == [len(frame), len(frame)]
    # each history partition feeds one task: the merchant stage hands the history on to the card
    # stage (stacked again before the card shuffle, one read fed two shuffles, and waits for the
    # second could hold it)
    graph = out.__dask_graph__()
    padded = [k for k in graph if (k[0] if isinstance(k, tuple) else k).startswith("pad_like")]
    assert len(padded) == history.npartitions  # each of the history's partitions, once


def test_a_known_start_cuts_the_history_each_shuffle_carries(frame):
    """With start=, the stage with the longest look-back shuffles first with the history of its
    look-back only, and hands on only the history the next stage reads; the values, the columns and
    their order are those of the all-at-once transform, bit for bit."""
    from dask.dataframe.dask_expr import new_collection
    from dask.dataframe.dask_expr._shuffle import ShuffleBase

    tf = TransactionFeatures(
        windows={"1h": ["count"], "24h": ["count", "sum", "nunique"]},
        profile_window="2d",
        gap_horizon="36h",
        other_entities={"merchant_id": {"6h": ["count", "mean"]}},
        hot_key_rows=None,
    ).fit(scattered(frame))
    full = by_id(tf.transform(scattered(frame)))
    start = pd.Timestamp("2025-03-05")
    new = frame[frame.timestamp >= start]
    hist = frame[frame.timestamp < start]  # more than the 2 days needed: the rest is dropped
    out = tf.transform(scattered(new, 3), history=scattered(hist, 4), start=start)
    got = by_id(out)
    pd.testing.assert_frame_equal(got, full.loc[got.index], check_exact=True)
    assert list(out.columns) == list(frame.columns) + list(tf.get_feature_names_out())
    shuffles = list(out.expr.find_operations(ShuffleBase))
    carried = sorted(len(new_collection(s.frame)) for s in shuffles)
    within = [(hist.timestamp >= start - pd.Timedelta(w)).sum() for w in ("6h", "48h")]
    assert within[0] < within[1] < len(hist)
    # card first (2 days of history), then merchant (the 6 hours it reads, handed on by the card stage)
    assert carried == [len(new) + within[0], len(new) + within[1]]
    # an earlier start (a lower bound of the first new row) gives the same values; a later one raises
    early = by_id(
        tf.transform(scattered(new, 3), history=scattered(hist, 4), start=start - pd.Timedelta("5h"))
    )
    pd.testing.assert_frame_equal(early, got, check_exact=True)
    late = tf.transform(scattered(new, 3), history=scattered(hist, 4), start=start + pd.Timedelta("1h"))
    with pytest.raises(SchemaError, match="earlier than start"):
        late.compute()


def test_tasks_trim_their_history_to_the_look_back_of_their_first_new_row():
    """trim_history keeps the new rows and the history rows within the stage's look-back of the
    task's first new row (rows exactly on the bound kept), and nothing when the task has no new row."""
    from daskml_scale.features._partition import NEW, trim_history

    tf = TransactionFeatures(other_entities={}).fit(scattered(make_frame(n=50, seed=0)))
    stage = {**tf._stages()[-1], "new_only": True}
    t0 = pd.Timestamp("2025-03-10")
    times = [t0 - pd.Timedelta(days=40), t0 - pd.Timedelta(days=30), t0 - pd.Timedelta(days=1), t0, t0]
    pdf = pd.DataFrame(
        {
            "transaction_id": [1, 2, 3, 4, 5],
            "timestamp": times,
            "card_id": 1,
            "merchant_id": 2,
            "amount": 1.0,
            NEW: [False, False, False, True, True],
        }
    )
    assert trim_history(pdf, stage)["transaction_id"].tolist() == [2, 3, 4, 5]  # look-back 30 days
    assert len(trim_history(pdf.assign(**{NEW: False}), stage)) == 0
    assert trim_history(pdf.assign(**{NEW: True}), stage).equals(pdf.assign(**{NEW: True}))


def test_history_with_fewer_columns_and_no_label(frame):
    cutoff = pd.Timestamp("2025-03-04")
    hist = frame[frame.timestamp < cutoff].drop(columns=["is_fraud", "channel", "merchant_category"])
    new = frame[frame.timestamp >= cutoff]
    tf = TransactionFeatures().fit(scattered(frame))
    got = by_id(tf.transform(scattered(new, 2), history=scattered(hist, 3)))
    full = by_id(tf.transform(scattered(frame)))
    pd.testing.assert_frame_equal(got, full.loc[got.index], check_exact=True)
    assert got["is_fraud"].dtype == np.int64


def test_skewed_card_and_nan_amounts():
    df = make_frame(n=2_000, hot_share=0.8, nan_share=0.2, seed=3)
    assert (df.card_id == 7).mean() > 0.75
    want = oracle(df)
    got = by_id(TransactionFeatures().fit(scattered(df, 6)).transform(scattered(df, 6)))
    assert_matches_oracle(got, want, list(want.columns))
    assert got["card_amount_ratio_30d"][df.set_index("transaction_id").amount.isna()].isna().all()


def test_all_nan_amounts_give_zero_sum_and_nan_mean():
    df = make_frame(n=300, nan_share=1.0)
    got = by_id(TransactionFeatures().fit(scattered(df, 3)).transform(scattered(df, 3)))
    assert (got["card_amount_sum_24h"] == 0).all()
    assert got["card_amount_mean_7d"].isna().all()
    assert (got["card_txn_count_24h"] == oracle(df)["card_txn_count_24h"].reindex(got.index)).all()


def test_single_partition_and_first_transactions(frame):
    got = by_id(TransactionFeatures().fit_transform(dd.from_pandas(frame, npartitions=1)))
    first = frame.sort_values(["timestamp", "transaction_id"]).drop_duplicates("card_id")
    f = got.loc[first.transaction_id]
    assert f["card_seconds_since_prev"].isna().all()
    assert (f["card_txn_count_24h"] == 0).all() and (f["card_amount_sum_24h"] == 0).all()
    assert f["card_amount_mean_7d"].isna().all() and (f["card_new_merchant_30d"] == 1).all()


def test_string_ids_and_tz_aware_timestamps(frame):
    df = frame.assign(
        card_id=pd.array("c" + frame.card_id.astype(str), dtype="str"),
        timestamp=frame.timestamp.dt.tz_localize("Europe/Paris"),
    )
    got = by_id(TransactionFeatures().fit_transform(scattered(df, 4)))
    want = by_id(TransactionFeatures().fit_transform(scattered(frame, 4)))
    for col in REQUIRED:  # window features are computed on UTC instants: same as naive
        np.testing.assert_array_equal(got[col], want[col], err_msg=col)
    # hour features use the local wall clock
    np.testing.assert_allclose(got["hour_sin"], want["hour_sin"])


def test_frequency_encoding_learned_in_fit(frame):
    tf = TransactionFeatures(categoricals=["channel"], other_entities={}).fit(scattered(frame))
    freq = dict(tf.frequencies_["channel"])
    assert freq == pytest.approx(frame["channel"].value_counts(normalize=True).to_dict())
    new = frame.head(50).assign(channel=pd.array(["atm"] * 50, dtype="str"))
    got = tf.transform(dd.from_pandas(new, npartitions=2)).compute()
    assert (got["channel_freq"] == 0).all()  # unseen at fit
    assert "merchant_category_freq" not in got.columns
    # a missing value is a category of its own, learned like the others
    holed = frame.assign(channel=frame["channel"].where(frame.index % 10 != 0))
    tf = TransactionFeatures(categoricals=["channel"], other_entities={}).fit(scattered(holed))
    assert dict(tf.frequencies_["channel"])[None] == pytest.approx(0.1)
    got = by_id(tf.transform(scattered(holed)))
    missing = holed.set_index("transaction_id")["channel"].isna().reindex(got.index)
    assert missing.sum() == 250
    np.testing.assert_allclose(got.loc[missing, "channel_freq"], 0.1)
    assert (got.loc[~missing, "channel_freq"] > 0.2).all()


def test_custom_windows_entities_and_names(frame):
    tf = TransactionFeatures(
        entity="merchant_id",
        counterparty="card_id",
        windows={"30min": ["count", "nunique"], "2d": ["sum"]},
        profile_window="365d",
        gap_horizon="2d",
        other_entities={"card_id": {"6h": ["count"]}},
        time_features=False,
        categoricals=[],
    ).fit(scattered(frame))
    names = list(tf.get_feature_names_out())
    assert names == [
        "card_txn_count_6h",
        "merchant_txn_count_30min",
        "merchant_distinct_card_30min",
        "merchant_amount_sum_2d",
        "merchant_seconds_since_prev",
        "merchant_amount_ratio_365d",
        "merchant_amount_zscore_365d",
        "merchant_card_txn_count_365d",
        "merchant_new_card_365d",
    ]
    assert tf.required_history_ == pd.Timedelta(days=365)
    got = by_id(tf.transform(scattered(frame)))
    np.testing.assert_array_equal(
        got["merchant_txn_count_30min"],
        _rolling(frame.assign(one=1.0), "merchant_id", "one", "30min", "sum").fillna(0).sort_index(),
    )
    allmean = _rolling(frame, "merchant_id", "amount", "365d", "mean").sort_index()
    np.testing.assert_allclose(got["merchant_amount_ratio_365d"], got["amount"] / allmean, rtol=1e-9)


def test_minimal_configuration_gives_only_the_required_features(frame):
    tf = TransactionFeatures(
        windows={"1h": ["count"], "24h": ["count", "sum"], "7d": ["mean"]},
        counterparty=None,
        profile_window=None,
        other_entities={},
        time_features=False,
        categoricals=[],
    ).fit(scattered(frame))
    assert sorted(tf.get_feature_names_out()) == sorted(REQUIRED)
    assert tf.required_history_ == pd.Timedelta(days=30)  # the gap horizon is the longest look-back
    assert clone(tf).set_params(gap_horizon="7d").fit(scattered(frame)).required_history_ == td("7d")
    got = by_id(tf.transform(scattered(frame)))
    assert_matches_oracle(got, oracle(frame), REQUIRED)


def test_to_dict_round_trip(frame):
    tf = TransactionFeatures(
        windows={"30min": ["count"], "24h": ("sum", "mean"), "1h": ["std"]},
        other_entities={"merchant_id": {"2d": ["count"], "1h": ["sum"]}},
        categoricals=["merchant_category", "channel"],
    ).fit(scattered(frame))
    d = json.loads(json.dumps(tf.to_dict(), sort_keys=True))
    tf2 = TransactionFeatures.from_dict(d)
    assert tf2.get_params() == {
        **tf.get_params(),
        "windows": {"30min": ["count"], "24h": ["sum", "mean"], "1h": ["std"]},
    }
    assert list(tf2.get_params()["windows"]) == ["30min", "24h", "1h"]
    assert list(tf2.get_feature_names_out()) == list(tf.get_feature_names_out())
    a = by_id(tf.transform(scattered(frame)))
    b = by_id(tf2.transform(scattered(frame)))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    with pytest.raises(ParameterError, match="to_dict"):
        TransactionFeatures.from_dict({"kind": "Other"})
    edited = json.loads(json.dumps(d))
    edited["fitted"]["feature_names_out_"] = edited["fitted"]["feature_names_out_"][:-1]
    with pytest.raises(ParameterError, match="do not match"):
        TransactionFeatures.from_dict(edited)
    # scikit-learn's clone keeps the parameters
    assert clone(tf).get_params() == tf.get_params()


# ------------------------------------------------------------------------------------ bad inputs
def test_missing_timestamp_column(frame):
    ddf = dd.from_pandas(frame.drop(columns=["timestamp"]), npartitions=2)
    with pytest.raises(SchemaError, match="'timestamp'") as e:
        TransactionFeatures().fit(ddf)
    assert e.value.column == "timestamp"


def test_non_datetime_timestamp(frame):
    ddf = dd.from_pandas(frame.assign(timestamp=frame.timestamp.astype(str)), npartitions=2)
    with pytest.raises(SchemaError, match="'timestamp' of the input must be datetime64"):
        TransactionFeatures().fit(ddf)
    tf = TransactionFeatures().fit(dd.from_pandas(frame, npartitions=2))
    with pytest.raises(SchemaError, match="'timestamp'"):
        tf.transform(ddf)


def test_bad_history_and_amount(frame):
    tf = TransactionFeatures().fit(dd.from_pandas(frame, npartitions=2))
    ddf = dd.from_pandas(frame, npartitions=2)
    hist = dd.from_pandas(frame.drop(columns=["merchant_id"]), npartitions=2)
    with pytest.raises(SchemaError, match="history has no column 'merchant_id'"):
        tf.transform(ddf, history=hist)
    hist = dd.from_pandas(frame.assign(card_id=frame.card_id.astype(str)), npartitions=2)
    with pytest.raises(SchemaError, match="'card_id' is"):
        tf.transform(ddf, history=hist)
    with pytest.raises(SchemaError, match="'amount' of the input must be numeric"):
        TransactionFeatures().fit(dd.from_pandas(frame.assign(amount="1"), npartitions=1))


def test_nat_timestamp_raises_at_compute(frame):
    df = frame.copy()
    df.loc[5, "timestamp"] = pd.NaT
    tf = TransactionFeatures(other_entities={}).fit(dd.from_pandas(df, npartitions=2))
    with pytest.raises(SchemaError, match="1 missing timestamp"):
        tf.transform(dd.from_pandas(df, npartitions=2)).compute()


def test_feature_columns_already_present(frame):
    ddf = dd.from_pandas(frame, npartitions=2)
    tf = TransactionFeatures().fit(ddf)
    with pytest.raises(SchemaError, match="already has feature column"):
        tf.transform(tf.transform(ddf))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"windows": {"1 hour": ["count"]}}, "positive durations"),
        ({"windows": {"1h": ["median"]}}, "must be one of"),
        ({"windows": {"1h": "count"}}, "non-empty list"),
        ({"windows": {"1h": 3}}, "non-empty list"),
        ({"windows": {"1h": []}}, "non-empty list"),
        ({"windows": {"1h": ["count", "count"]}}, "repeats"),
        ({"counterparty": "card_id"}, "must differ"),
        ({"entity": 3}, "column name"),
        ({"npartitions": 0}, "npartitions"),
        ({"time_features": "yes"}, "time_features"),
        ({"other_entities": ["merchant_id"]}, "must be a dict"),
        ({"windows": ["1h"]}, "must be a dict"),
        ({"windows": {"-1h": ["count"]}}, "positive durations"),
        ({"counterparty": None}, "nunique"),
        ({"profile_window": "soon"}, "profile_window"),
        ({"profile_window": "all"}, "look-back is bounded"),
        ({"gap_horizon": None}, "'gap_horizon' parameter"),
        ({"gap_horizon": "forever"}, "'gap_horizon' parameter"),
        ({"other_entities": {"card_id": {"1h": ["count"]}}}, "repeats the main entity"),
        ({"other_entities": {"merchant_id": {"1h": ["nunique"]}}}, "must be one of"),
        ({"max_categories": 0}, "max_categories"),
        ({"shuffle_method": "fast"}, "shuffle_method"),
        ({"categoricals": "channel"}, "categoricals"),
    ],
)
def test_bad_parameters(frame, params, match):
    with pytest.raises(ParameterError, match=match):
        TransactionFeatures(**params).fit(dd.from_pandas(frame, npartitions=1))


def test_too_many_categories_and_not_fitted(frame):
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(ParameterError, match="max_categories"):
        TransactionFeatures(categoricals=["merchant_id"], max_categories=5).fit(ddf)
    with pytest.raises(NotFittedError, match="fit"):
        TransactionFeatures().transform(ddf)
    with pytest.raises(NotFittedError):
        TransactionFeatures().get_feature_names_out()


# -------------------------------------------------------------------------------- distributed
def test_distributed_p2p_matches_pandas(client, frame, want):
    ddf = scattered(frame, npartitions=6)
    tf = TransactionFeatures(shuffle_method="p2p").fit(ddf, client=client)
    got = by_id(tf.transform(ddf).compute())
    assert_matches_oracle(got, want, list(want.columns))


# ------------------------------------------------------------------------------ dormant cards
T0 = pd.Timestamp("2025-01-01")
CUT = T0 + pd.Timedelta(days=45)  # first instant of the first scored batch
EDGES = ("1h", "24h", "7d", "30d")  # every window of the default configuration


def make_dormant_frame(seed=0):
    """Busy cards, cards idle 40+ days before the scored period, and gaps at each window's edge.

    Edge cards: for each window ``w`` and anchor ``s`` (``CUT`` itself, and a time inside the first
    batch), a transaction at ``s`` whose previous one is ``w - 1ns``, ``w`` (on the edge: inside) or
    ``w + 1ns`` (just outside) earlier, at the same merchant, plus one 50 days earlier.
    """
    rng = np.random.default_rng(seed)
    ns = pd.Timedelta(1, unit="ns")
    rows = []  # (timestamp, card, merchant, amount)
    n = 2_500  # background: 40 cards over 60 days
    minutes = rng.integers(0, 60 * 24 * 12, n) * 5
    for m, c, mer, a in zip(
        minutes, (40 * rng.random(n) ** 2).astype(int), rng.integers(0, 25, n), np.exp(rng.normal(3, 1, n))
    ):
        rows.append((T0 + pd.Timedelta(int(m), unit="min"), c, mer, round(a, 2)))
    for c in range(100, 120):  # dormant: busy in days 0-5, silent until the scored period
        amount = (lambda: 9.99) if c < 105 else (lambda: round(float(np.exp(rng.normal(3, 1))), 2))
        favourite = 30 + c % 5
        for m in rng.integers(0, 5 * 24 * 60, 15):
            rows.append((T0 + pd.Timedelta(int(m), unit="min"), c, favourite, amount()))
        for m in rng.integers(0, 3 * 24 * 60, 4):
            mer = favourite if rng.random() < 0.5 else int(rng.integers(0, 25))
            rows.append((CUT + pd.Timedelta(int(m), unit="min"), c, mer, amount()))
    card = 200
    for s in (CUT, CUT + pd.Timedelta("5h7min") + 123 * ns):
        for w in EDGES:
            for delta in (-ns, 0 * ns, ns):
                mer = 300 + card  # the card's own merchant: merchant-side edges too
                gap = td(w) + delta
                rows.append((s - pd.Timedelta(days=50), card, mer, 20.0))
                rows.append((s - gap, card, mer, 10.0))
                rows.append((s, card, mer, 30.0))
                if delta == 0 * ns:  # a tie at s
                    rows.append((s, card, mer, 31.0))
                rows.append((s + pd.Timedelta(hours=2), card, mer, 10.0))
                card += 1
    ts, cards, mers, amounts = zip(*rows)
    amount = np.array(amounts, dtype=float)
    amount[rng.random(len(rows)) < 0.03] = np.nan
    df = pd.DataFrame(
        {
            "transaction_id": rng.permutation(len(rows)).astype(np.int64) + 1000,
            "timestamp": pd.DatetimeIndex(ts).astype("datetime64[ns]"),
            "card_id": np.array(cards, dtype=np.int64),
            "merchant_id": np.array(mers, dtype=np.int64),
            "amount": amount,
            "merchant_category": pd.array(rng.choice(["food", "fuel", "web"], len(rows)), dtype="str"),
            "channel": pd.array(rng.choice(["pos", "online"], len(rows)), dtype="str"),
            "is_fraud": (rng.random(len(rows)) < 0.05).astype(np.int64),
        }
    )
    return df.sort_values("transaction_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def dormant():
    return make_dormant_frame()


def test_dormant_cards_history_trimmed_to_required_history_equals_all_at_once(dormant):
    """Every feature, every card: transform(new, history=trimmed) == transform(all) on the new rows."""
    df = dormant
    tf = TransactionFeatures().fit(scattered(df))
    names = list(tf.get_feature_names_out())
    full = by_id(tf.transform(scattered(df)))
    prev = df.sort_values("timestamp").groupby("card_id")["timestamp"].shift()
    idle = (df["timestamp"] - prev.reindex(df.index)).reindex(df.index)
    day = pd.Timedelta(days=1)
    for start, end in ((CUT, CUT + day), (CUT + day, CUT + 4 * day)):
        in_new = (df.timestamp >= start) & (df.timestamp < end)
        new = df[in_new]
        # the history a scoring job keeps: every row in [start - required_history_, start)
        hist = df[(df.timestamp < start) & (df.timestamp >= start - tf.required_history_)]
        assert (idle[in_new] > pd.Timedelta(days=40)).sum() >= 4  # dormant cards are scored
        got = by_id(tf.transform(scattered(new, 3), history=scattered(hist, 2)))
        want = full.loc[got.index]
        assert len(got) == len(new)
        if start == CUT:  # and edge cases: a previous transaction exactly on the history's first instant
            assert (idle[in_new & (df.timestamp == start)] == tf.required_history_).any()
        differ = {}  # bit-identical, floats included
        for col in names:
            a, b = got[col].to_numpy(dtype=float), want[col].to_numpy(dtype=float)
            bad = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            if bad.any():
                i = np.flatnonzero(bad)[0]
                differ[col] = f"{bad.sum()} rows, e.g. {a[i]!r} (history) vs {b[i]!r} (all at once)"
        assert not differ, f"batch {start}: {differ}"


def test_dormant_and_edge_cards_equal_pandas(dormant):
    got = by_id(TransactionFeatures().fit(scattered(dormant)).transform(scattered(dormant, 5)))
    want = oracle(dormant)
    assert_matches_oracle(got, want, list(want.columns))
    # the gap horizon's edge: exactly 30 days is a gap, 1ns more is "none within 30 days" (NaN)
    secs = got["card_seconds_since_prev"]
    assert (secs == 30 * 86_400).sum() >= 2 and (secs == 30 * 86_400 - 1e-9).sum() >= 2
    assert secs.max() == 30 * 86_400
    first = dormant.sort_values("timestamp").groupby("card_id")["transaction_id"].first()
    assert secs.isna().sum() > len(first)  # dormant cards come back with NaN, like a first transaction
    back = dormant[(dormant.card_id >= 100) & (dormant.card_id < 120) & (dormant.timestamp >= CUT)]
    came_back = back.sort_values("timestamp").groupby("card_id")["transaction_id"].first()
    assert secs[came_back].isna().all()
    assert (got.loc[came_back, "card_new_merchant_30d"].dropna() == 1).all()


def test_numeric_ids_with_missing_values_equal_the_same_ids_as_strings(frame):
    # numbers are coded by a sort, strings by pandas' hash table: the features must not depend on it;
    # a missing card or merchant is an entity of its own for each row (no earlier rows)
    rng = np.random.default_rng(5)
    holes = frame.assign(
        card_id=frame.card_id.astype("float64").where(rng.random(len(frame)) > 0.05),
        merchant_id=frame.merchant_id.astype("float64").where(rng.random(len(frame)) > 0.05),
    )
    as_str = holes.assign(
        card_id=pd.array(holes.card_id.map(lambda v: None if np.isnan(v) else f"c{v:.0f}"), dtype="str"),
        merchant_id=pd.array(holes.merchant_id.map(lambda v: None if np.isnan(v) else f"m{v:.0f}"), dtype="str"),
    )
    tf = dict(categoricals=[], hot_key_rows=None)
    got = by_id(TransactionFeatures(**tf).fit_transform(scattered(holes, 4)))
    want = by_id(TransactionFeatures(**tf).fit_transform(scattered(as_str, 3)))
    names = TransactionFeatures(**tf).fit(scattered(holes, 2)).feature_names_out_
    pd.testing.assert_frame_equal(got[names], want[names], check_exact=True)
    lone = holes.set_index("transaction_id").card_id.isna().reindex(got.index)
    assert lone.sum() > 50 and (got.loc[lone, "card_txn_count_24h"] == 0).all()
    assert got.loc[~lone, "card_txn_count_24h"].sum() > 0
