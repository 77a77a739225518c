"""Property tests: any input either fails with the library's own error or is cleaned with every row kept."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from daskml_scale.data import clean
from daskml_scale.errors import DaskMLScaleError

# no shrink phase: a failure is reported as drawn, so a regression cannot spend minutes shrinking
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_numbers = st.one_of(_floats, st.integers(-5, 10**6), st.none())
_junk = st.sampled_from(["", "abc", "1.5", " 2 ", "NaN", "-3", "2025-01-02", "inf"])
_mixed = st.one_of(_numbers, _junk, st.booleans())
_times = st.one_of(
    st.datetimes(
        min_value=pd.Timestamp("1990-01-01").to_pydatetime(),
        max_value=pd.Timestamp("2040-01-01").to_pydatetime(),
    ),
    st.none(),
    _junk,
    st.integers(0, 10**12),
)
_cats = st.one_of(st.sampled_from(["pos", " POS", "Online", "online ", None, ""]), st.integers(0, 3))

TX_COLUMNS = {
    "transaction_id": st.one_of(st.integers(0, 20), st.none(), _junk, _floats),
    "timestamp": _times,
    "card_id": st.one_of(st.integers(0, 5), st.none(), st.sampled_from(["a", "b"]), _floats),
    "merchant_id": st.one_of(st.integers(0, 5), st.none()),
    "amount": _mixed,
    "is_fraud": st.one_of(st.sampled_from([0, 1, 2, -1]), st.none(), _floats, _junk),
    "channel": _cats,
}
IX_COLUMNS = {
    "user_id": st.one_of(st.integers(0, 5), st.none(), st.sampled_from(["u1", "u2"])),
    "item_id": st.one_of(st.integers(0, 5), st.none(), _floats),
    "timestamp": _times,
    "weight": _mixed,
}


@st.composite
def partitions(draw, columns):
    """1-4 partitions, some possibly empty, of columns drawn from mixed-type values."""
    names = list(columns)
    # sometimes drop an optional or required column, to hit schema errors too
    if draw(st.integers(0, 9)) == 0:
        names.remove(draw(st.sampled_from(names)))
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 6))
        frames.append(
            pd.DataFrame({c: pd.Series([draw(columns[c]) for _ in range(n)], dtype=object) for c in names})
        )
    # one column with a consistent, maybe wrong, dtype in every partition
    if draw(st.booleans()):
        col = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["float64", "int64", "datetime", "bool", "str"]))
        for f in frames:
            vals = {
                "float64": np.linspace(-1, 1, len(f)),
                "int64": np.arange(len(f)),
                "datetime": pd.date_range("2025-01-01", periods=len(f), freq="h"),
                "bool": np.arange(len(f)) % 2 == 0,
                "str": [f"x{i}" for i in range(len(f))],
            }[kind]
            f[col] = vals if kind != "str" else pd.array(vals, dtype="str")
    return frames


def _ddf(frames):
    meta = frames[0].iloc[:0]
    return dd.from_map(lambda i: frames[i], list(range(len(frames))), meta=meta, enforce_metadata=False)


def _check(frames, table):
    n = sum(len(f) for f in frames)
    try:
        res = clean(_ddf(frames), table)
        q, c = dask.compute(res.quarantine, res.clean)
    except DaskMLScaleError:
        return
    r = res.report
    assert r.rows_in == n == r.rows_out + r.rows_quarantined
    assert len(c) == r.rows_out and len(q) == r.rows_quarantined
    assert q["reason"].str.len().gt(0).all()
    key = ["transaction_id"] if table == "transactions" else ["user_id", "item_id", "timestamp"]
    key = [k for k in key if k in c.columns]
    assert not c.duplicated(key).any()


@SETTINGS
@given(partitions(TX_COLUMNS))
def test_transactions_never_crash_and_conserve(frames):
    _check(frames, "transactions")


@SETTINGS
@given(partitions(IX_COLUMNS))
def test_interactions_never_crash_and_conserve(frames):
    _check(frames, "interactions")
