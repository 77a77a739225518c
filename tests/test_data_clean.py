"""validate / clean: planted bad rows of every kind, conservation, first-copy rule, spec, oracles."""

from __future__ import annotations

import json

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale.data import CleaningSpec, clean, make_interactions, make_transactions, validate
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.schema import INTERACTIONS, TRANSACTIONS


def _frames(ddf):
    return [ddf.partitions[i].compute() for i in range(ddf.npartitions)]


def _from_frames(frames):
    """A dask DataFrame with exactly these partitions (empty ones allowed)."""
    frames = [f.reset_index(drop=True) for f in frames]
    return dd.from_map(lambda i: frames[i], list(range(len(frames))), meta=frames[0].iloc[:0])


@pytest.fixture
def planted():
    """Synthetic transactions in 3 partitions with one planted row per rule, and a V1 feature."""
    base = make_transactions(3000, npartitions=3, seed=4).compute().reset_index(drop=True)
    base["V1"] = np.random.default_rng(0).normal(size=len(base))
    df = base.copy()
    df["card_id"] = df["card_id"].astype("float64")  # so one can be missing
    df["timestamp"] = df["timestamp"].astype(object)
    bad = {
        10: "missing_card_id",
        11: "invalid_timestamp",  # unparseable
        12: "invalid_timestamp",  # missing
        13: "negative_amount",
        14: "nonfinite_amount",
        15: "nonfinite_amount",  # missing amount
        16: "invalid_is_fraud",
        17: "inconsistent_channel",
        18: "out_of_bounds_amount",
        19: "missing_card_id;negative_amount",  # two problems, one quarantine row
    }
    df.loc[10, "card_id"] = np.nan
    df.loc[11, "timestamp"] = "not a date"
    df.loc[12, "timestamp"] = None
    df.loc[13, "amount"] = -3.0
    df.loc[14, "amount"] = np.inf
    df.loc[15, "amount"] = np.nan
    df.loc[16, "is_fraud"] = 2
    df.loc[17, "channel"] = " Online"
    df.loc[18, "amount"] = 1e9
    df.loc[19, ["card_id", "amount"]] = [np.nan, -1.0]
    df["transaction_id"] = df["transaction_id"].astype("float64")
    # duplicates: id 100 again later (same time) and id 200 again with an EARLIER time in a later partition
    dup1 = df.loc[[100]].assign(amount=1.0)
    dup2 = df.loc[[200]].assign(timestamp=pd.Timestamp("2024-12-31"), amount=2.0)
    parts = [df.iloc[:1000], df.iloc[1000:2000], df.iloc[:0], df.iloc[2000:], pd.concat([dup1, dup2])]
    return base, _from_frames(parts), bad


KW = {"bounds": {"amount": (None, 1e6)}, "categories": "quarantine"}


def test_planted_rows_end_in_quarantine_and_nowhere_else(planted):
    base, ddf, bad = planted
    res = clean(ddf, TRANSACTIONS, **KW)
    q = res.quarantine.compute()
    c = res.clean.compute()
    r = res.report
    assert r.rows_in == len(base) + 2 == r.rows_out + r.rows_quarantined
    assert r.rows_quarantined == len(bad) + 2 == len(q)
    got = dict(zip(q["transaction_id"].astype("Int64").tolist(), q["reason"]))
    for row, reason in bad.items():
        assert got[row] == reason
        assert row not in set(c["transaction_id"])
    assert q["reason"].str.contains("duplicate_transaction_id").sum() == 2
    # every clean id unique; clean + quarantined ids == input ids (nothing lost, nothing invented)
    assert c["transaction_id"].is_unique
    assert sorted(c["transaction_id"].tolist() + [int(x) for x in q["transaction_id"]]) == sorted(
        base["transaction_id"].tolist() + [100, 200]
    )
    assert r.counts["invalid_timestamp"] == 2 and r.counts["nonfinite_amount"] == 2
    assert r.counts["missing_card_id"] == 2 and r.counts["negative_amount"] == 2
    assert r.counts["out_of_bounds_amount"] == 1 and r.counts["inconsistent_channel"] == 1
    assert r.by_rule["duplicate"] == {"transaction_id": 2}
    # canonical dtypes on the clean side
    assert c["transaction_id"].dtype == "int64" and c["card_id"].dtype == "int64"
    assert c["is_fraud"].dtype == "int64" and str(c["timestamp"].dtype) == "datetime64[ns]"


def test_first_copy_is_earliest_then_read_order(planted):
    base, ddf, _ = planted
    res = clean(ddf, TRANSACTIONS)
    c = res.clean.compute().set_index("transaction_id")
    q = res.quarantine.compute()
    # id 100: same timestamp -> the copy read first (original partition 0) stays
    assert c.loc[100, "amount"] == base.loc[100, "amount"]
    # id 200: the later partition's copy has the earlier timestamp -> it stays
    assert c.loc[200, "amount"] == 2.0
    d = q[q["reason"] == "duplicate_transaction_id"].set_index("transaction_id")
    assert d.loc[200, "amount"] == base.loc[200, "amount"] and d.loc[200, "source_partition"] == 0
    assert d.loc[100, "source_partition"] == 4


def test_validate_counts_match_clean(planted):
    _, ddf, _ = planted
    v = validate(ddf, TRANSACTIONS, **KW)
    r = clean(ddf, TRANSACTIONS, **KW).report
    assert v.counts == r.counts
    assert (v.rows_in, v.rows_out, v.rows_quarantined) == (r.rows_in, r.rows_out, r.rows_quarantined)
    assert not v.passed
    html = v._repr_html_()
    assert "negative" in html and "conserved" in html
    json.dumps(v.to_dict())


def test_categories_normalized_by_default(planted):
    _, ddf, _ = planted
    res = clean(ddf, TRANSACTIONS)
    assert res.report.repaired["inconsistent_channel"] == 1
    c = res.clean.compute()
    assert set(c["channel"]) == {"online", "pos"}
    assert 17 in set(c["transaction_id"])


def test_allowed_categories(planted):
    _, ddf, _ = planted
    r = validate(ddf, TRANSACTIONS, allowed={"channel": ["pos"]})
    assert r.counts["unknown_channel"] > 0


def test_oracle_against_pandas(planted):
    """The clean rows equal a plain pandas implementation of the same rules on the same data."""
    _, ddf, _ = planted
    pdf = ddf.compute().reset_index(drop=True)
    ts = pd.to_datetime(pdf["timestamp"], errors="coerce", format="mixed")
    amt = pdf["amount"].astype(float)
    ok = (
        pdf["transaction_id"].notna()
        & pdf["card_id"].notna()
        & ts.notna()
        & np.isfinite(amt)
        & (amt >= 0)
        & pdf["is_fraud"].isin([0, 1])
    )
    good = pdf[ok].assign(timestamp=ts[ok], _order=np.arange(ok.sum()))
    expected = good.sort_values(["transaction_id", "timestamp", "_order"]).drop_duplicates("transaction_id")
    got = clean(ddf, TRANSACTIONS).clean.compute()
    m = expected.merge(got, on="transaction_id", suffixes=("_e", "_g"))
    assert len(m) == len(expected) == len(got)
    np.testing.assert_allclose(m["amount_e"], m["amount_g"])


def test_impute_and_clip_spec_roundtrip(planted):
    base, _, _ = planted
    frames = [base.iloc[:1500].copy(), base.iloc[:0], base.iloc[1500:].copy()]
    frames[0].loc[frames[0].index[:5], "V1"] = np.nan
    frames[2].loc[frames[2].index[0], "V1"] = np.inf
    frames[2].loc[frames[2].index[1], "V1"] = 50.0
    ddf = _from_frames(frames)
    res = clean(ddf, TRANSACTIONS, impute="median", clip=(0.01, 0.99))
    spec = res.spec
    assert set(spec.impute) == {"V1"} and set(spec.clip) == {"V1"}
    pdf = ddf.compute()
    v = pdf["V1"].astype(float)
    # oracle: pandas' quantiles of the finite values (every row is valid here)
    vv = v[np.isfinite(v)]
    assert abs(spec.impute["V1"] - vv.median()) < 0.02
    lo, hi = spec.clip["V1"]
    assert abs(lo - vv.quantile(0.01)) < 0.05 and abs(hi - vv.quantile(0.99)) < 0.05
    c = res.clean.compute()
    assert c["V1"].notna().all() and c["V1"].max() <= hi and c["V1"].min() >= lo
    # scoring path: the same spec, JSON round trip, applied to new data gives the same values
    spec2 = CleaningSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    again = clean(ddf, TRANSACTIONS, spec=spec2).clean.compute()
    pd.testing.assert_series_equal(
        again.sort_values("transaction_id")["V1"].reset_index(drop=True),
        c.sort_values("transaction_id")["V1"].reset_index(drop=True),
    )
    applied = spec2.apply(dd.from_pandas(pd.DataFrame({"V1": [np.nan, 1e9, 0.0]}), npartitions=1)).compute()
    assert applied["V1"].tolist() == [spec.impute["V1"], hi, 0.0]


def test_interactions_rules_and_duplicates():
    df = (
        make_interactions(2000, n_users=50, n_items=40, npartitions=2, seed=1)
        .compute()
        .reset_index(drop=True)
    )
    df["user_id"] = df["user_id"].astype("float64")
    df.loc[0, "user_id"] = np.nan
    df.loc[1, "weight"] = -1.0
    df.loc[2, "weight"] = np.nan
    dup = df.loc[[5, 6]]
    ddf = _from_frames([df.iloc[:1000], df.iloc[1000:], dup])
    res = clean(ddf, INTERACTIONS)
    r = res.report
    assert r.counts["missing_user_id"] == 1 and r.counts["negative_weight"] == 1
    assert r.counts["nonfinite_weight"] == 1 and r.counts["duplicate_interaction"] >= 2
    assert r.rows_in == r.rows_out + r.rows_quarantined == len(df) + 2
    c = res.clean.compute()
    assert not c.duplicated(["user_id", "item_id", "timestamp"]).any()
    assert c["user_id"].dtype == "int64"


def test_duplicates_off_keeps_partitioning(planted):
    _, ddf, _ = planted
    res = clean(ddf, TRANSACTIONS, duplicates=False)
    assert res.clean.npartitions == ddf.npartitions
    assert "duplicate_transaction_id" not in res.report.counts


def test_one_partition_and_all_bad():
    df = pd.DataFrame(
        {
            "transaction_id": [1, 2],
            "timestamp": ["x", None],
            "card_id": [1, 2],
            "merchant_id": [1, 1],
            "amount": [-1.0, 2.0],
        }
    )
    res = clean(dd.from_pandas(df, npartitions=1), "transactions")
    assert res.report.rows_out == 0 and res.report.rows_quarantined == 2
    assert len(res.clean.compute()) == 0
    assert res.quarantine.compute()["reason"].tolist() == [
        "invalid_timestamp;negative_amount",
        "invalid_timestamp",
    ]


def test_string_ids_and_tz_aware_timestamps():
    df = pd.DataFrame(
        {
            "transaction_id": [1, 2, 3],
            "timestamp": pd.to_datetime(
                ["2025-01-01 10:00", "2025-01-01 11:00", "2025-01-02 00:00"]
            ).tz_localize("Europe/Paris"),
            "card_id": ["a", "b", None],
            "merchant_id": ["m1", "m2", "m3"],
            "amount": ["1.5", "2", "oops"],
        }
    )
    res = clean(dd.from_pandas(df, npartitions=2), "transactions")
    c = res.clean.compute().sort_values("transaction_id")
    assert c["card_id"].tolist() == ["a", "b"] and c["amount"].tolist() == [1.5, 2.0]
    assert c["timestamp"].iloc[0] == pd.Timestamp("2025-01-01 09:00")  # converted to UTC, naive
    assert res.quarantine.compute()["reason"].tolist() == ["missing_card_id;nonfinite_amount"]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.drop(columns=["card_id"]), "card_id.*missing"),
        (lambda d: d.assign(amount=pd.Timestamp("2025-01-01")), "amount.*number"),
        (lambda d: d.assign(timestamp=1.0), "timestamp.*time_unit"),
        (lambda d: d.assign(card_id=True), "card_id"),
        (lambda d: d.assign(_dms_mask=1), "reserved"),
    ],
)
def test_unusable_schema_fails_before_work(change, match, tmp_path):
    df = change(make_transactions(100, seed=0).compute())
    with pytest.raises(SchemaError, match=match):
        clean(
            dd.from_pandas(df, npartitions=1), TRANSACTIONS, out=tmp_path / "o", quarantine_out=tmp_path / "q"
        )
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_parameters(planted):
    _, ddf, _ = planted
    with pytest.raises(ParameterError, match="categories"):
        validate(ddf, TRANSACTIONS, categories="fix")
    with pytest.raises(ParameterError, match="schema"):
        validate(ddf, "orders")
    with pytest.raises(ParameterError, match="clip"):
        clean(ddf, TRANSACTIONS, clip=(0.9, 0.1))
    with pytest.raises(ParameterError, match="not both"):
        clean(ddf, TRANSACTIONS, impute="median", spec=CleaningSpec())
    with pytest.raises(ParameterError, match="both out"):
        clean(ddf, TRANSACTIONS, out="x")
    with pytest.raises(ParameterError, match="bounds"):
        validate(ddf, TRANSACTIONS, bounds={"nope": (0, 1)})
    with pytest.raises(ParameterError, match="dask DataFrame"):
        validate(ddf.compute(), TRANSACTIONS)


def test_clean_writes_outputs_in_one_pass(planted, tmp_path):
    _, ddf, bad = planted
    res = clean(ddf, TRANSACTIONS, out=tmp_path / "clean", quarantine_out=tmp_path / "q", **KW)
    assert len(res.clean) == res.report.rows_out
    assert len(res.quarantine) == res.report.rows_quarantined == len(bad) + 2
    # a rerun replaces, never appends
    res2 = clean(ddf, TRANSACTIONS, out=tmp_path / "clean", quarantine_out=tmp_path / "q", **KW)
    assert len(res2.clean) == res.report.rows_out


def test_distributed_clean_matches_sync(planted, client, spread, tmp_path):
    _, ddf, _ = planted
    with spread() as ts:
        res = clean(ddf, TRANSACTIONS, out=tmp_path / "o", quarantine_out=tmp_path / "q", client=client, **KW)
    ts.assert_spread()
    with_sync = clean(ddf, TRANSACTIONS, **KW).report
    assert res.report.counts == with_sync.counts and res.report.rows_out == with_sync.rows_out


def _counted(frames):
    """A dask DataFrame of these partitions, and a dict counting how often each partition is built."""
    calls: dict = {}

    def load(i):
        calls[i] = calls.get(i, 0) + 1
        return frames[i]

    return dd.from_map(load, list(range(len(frames))), meta=frames[0].iloc[:0]), calls


@pytest.mark.parametrize("write", [False, True])
def test_clean_reads_the_input_twice_with_impute_and_clip(planted, write, tmp_path):
    """Two passes, whatever is asked: the counts, the quantile summary and the later copies' positions
    (a shuffle of keys, times and positions only), then the writes. The spec is learned in the first
    pass, not in a pass of its own (three reads before)."""
    base, _, _ = planted
    frames = [base.iloc[:1000].copy(), base.iloc[1000:2000].copy(), base.iloc[2000:].copy()]
    frames[0].loc[frames[0].index[:3], "V1"] = np.nan
    frames[2] = pd.concat([frames[2], frames[0].iloc[:5]])  # cross-partition duplicates
    ddf, calls = _counted([f.reset_index(drop=True) for f in frames])
    kw = {"out": tmp_path / "o", "quarantine_out": tmp_path / "q"} if write else {}
    res = clean(ddf, TRANSACTIONS, impute="median", clip=(0.01, 0.99), **kw)
    if write:
        assert calls == {0: 2, 1: 2, 2: 2}
    else:  # the first pass now; the clean and quarantine frames are lazy (pass 2 when computed)
        assert calls == {0: 1, 1: 1, 2: 1}
    assert set(res.spec.impute) == {"V1"} and set(res.spec.clip) == {"V1"}
    # the spec applied is the one learned: same values as learning first, then applying it
    again = clean(_from_frames(frames), TRANSACTIONS, spec=res.spec).clean.compute()
    got = res.clean.compute()
    lo, hi = res.spec.clip["V1"]
    assert got["V1"].notna().all() and got["V1"].between(lo, hi).all()
    pd.testing.assert_series_equal(
        got.sort_values("transaction_id")["V1"].reset_index(drop=True),
        again.sort_values("transaction_id")["V1"].reset_index(drop=True),
    )
    assert res.report.counts["duplicate_transaction_id"] == 5


@pytest.mark.parametrize("key", [["transaction_id"], ["user_id", "item_id", "timestamp"]])
def test_first_copy_order_matches_a_full_sort(key):
    """The numpy ordering (argsort of ids, then only the runs of equal ids) equals pandas' full sort."""
    from daskml_scale.data._validate import ORDER, build_rules, first_copy_order

    rng = np.random.default_rng(5)
    n = 5000
    if key == ["transaction_id"]:
        df = make_transactions(n, seed=2).compute().reset_index(drop=True)
        df["transaction_id"] = rng.integers(0, 800, n)  # many copies of each id
        df["timestamp"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 50, n), unit="s")
        schema = TRANSACTIONS
    else:
        df = make_interactions(n, n_users=20, n_items=20, seed=2).compute().reset_index(drop=True)
        df["timestamp"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 5, n), unit="s")
        schema = INTERACTIONS
    rules = build_rules(dd.from_pandas(df, npartitions=1), schema)
    time_col = [] if "timestamp" in key else ["timestamp"]
    df[ORDER] = rng.permutation(n).astype(np.int64)  # arrival order in a shuffled partition is arbitrary
    shuffled = df.sample(frac=1, random_state=1)
    perm, dup = first_copy_order(shuffled, rules)
    expected = df.sort_values(key + time_col + [ORDER], kind="stable")
    np.testing.assert_array_equal(shuffled[ORDER].to_numpy()[perm], expected[ORDER].to_numpy())
    np.testing.assert_array_equal(dup, expected.duplicated(key).to_numpy())


@pytest.mark.parametrize("write", [False, True])
def test_clean_keeps_the_input_partitioning_and_order(planted, write, tmp_path):
    """Only keys, times and positions are shuffled to find the later copies; every clean row stays in
    the partition it was read from, in its order (a time-partitioned input stays time-partitioned)."""
    base, ddf, _ = planted
    kw = {"out": tmp_path / "o", "quarantine_out": tmp_path / "q"} if write else {}
    res = clean(ddf, TRANSACTIONS, **KW, **kw)
    clean_parts = _frames(res.clean)
    assert len(clean_parts) == ddf.npartitions
    q = res.quarantine.compute()
    for i, (inp, out) in enumerate(zip(_frames(ddf), clean_parts)):
        dropped = set(q.loc[q.source_partition == i, "transaction_id"].dropna().astype("int64"))
        ids = pd.to_numeric(inp["transaction_id"], errors="coerce")
        expected = [int(t) for t in ids if pd.notna(t) and int(t) not in dropped]
        # (an id dropped here as a later copy can have its first copy in another partition)
        assert out["transaction_id"].tolist() == expected, i


@pytest.mark.parametrize("duplicate", [False, True])
def test_clean_with_out_reads_the_input_once_and_again_only_where_later_copies_are(planted, duplicate, tmp_path):
    """Nothing to learn: the parts are written in the pass that finds the later copies; only the
    partition holding one is read again (every partition was read twice before), and the outputs
    equal the lazy two-pass result's."""
    base, _, _ = planted
    frames = [base.iloc[:1000].copy(), base.iloc[1000:2000].copy(), base.iloc[2000:].copy()]
    if duplicate:  # a copy of two rows of partition 0, read later in partition 2
        frames[2] = pd.concat([frames[2], frames[0].iloc[[7, 8]]])
    frames = [f.reset_index(drop=True) for f in frames]
    ddf, calls = _counted(frames)
    res = clean(ddf, TRANSACTIONS, out=tmp_path / "o", quarantine_out=tmp_path / "q")
    assert calls == ({0: 1, 1: 1, 2: 2} if duplicate else {0: 1, 1: 1, 2: 1})
    lazy = clean(_from_frames(frames), TRANSACTIONS)
    assert res.report.counts == lazy.report.counts
    assert res.report.counts["duplicate_transaction_id"] == (2 if duplicate else 0)
    for got, want in ((res.clean, lazy.clean), (res.quarantine, lazy.quarantine)):
        g, w = got.compute(), want.compute()
        assert list(g.columns) == list(w.columns)
        pd.testing.assert_frame_equal(
            g.sort_values("transaction_id").reset_index(drop=True),
            w.sort_values("transaction_id").reset_index(drop=True),
            check_dtype=False,
        )
    # each partition's clean part in its place: the later copies are gone from partition 2's part
    parts = sorted((tmp_path / "o").glob("part.*.parquet"))
    assert [len(pd.read_parquet(p)) for p in parts] == [1000, 1000, 1000]


def test_clean_read_once_false_finds_the_later_copies_before_writing(planted, tmp_path):
    """read_once=False: two reads of every partition (the key shuffle, then the writes), the same
    outputs as the one-read order."""
    base, _, _ = planted
    frames = [base.iloc[:1000].copy(), base.iloc[1000:2000].copy(), base.iloc[2000:].copy()]
    frames[2] = pd.concat([frames[2], frames[0].iloc[[7, 8]]])
    frames = [f.reset_index(drop=True) for f in frames]
    ddf, calls = _counted(frames)
    two = clean(ddf, TRANSACTIONS, out=tmp_path / "two", quarantine_out=tmp_path / "q2", read_once=False)
    assert calls == {0: 2, 1: 2, 2: 2}
    one = clean(_from_frames(frames), TRANSACTIONS, out=tmp_path / "one", quarantine_out=tmp_path / "q1")
    assert two.report.counts == one.report.counts
    assert two.report.counts["duplicate_transaction_id"] == 2
    for got, want in ((two.clean, one.clean), (two.quarantine, one.quarantine)):
        pd.testing.assert_frame_equal(got.compute(), want.compute())
