"""What runs on one partition: the features of one entity, after the data is shuffled by it.

A *stage* is a plain dict (picklable, JSON-like) describing the features of one entity column:

``entity``, ``prefix``, ``timestamp``, ``amount``, ``transaction_id``
    Column names, and the prefix of the feature names (``"card"`` for ``card_id``).
``windows``
    List of ``(label, width_ns, aggregations)``; aggregations among ``count``, ``sum``, ``mean``,
    ``std``, ``nunique``.
``counterparty``, ``cp_prefix``
    The column counted by ``nunique`` and by the first-time features (``merchant_id``), or None.
``profile``
    ``(label, width_ns)`` for the amount-profile and first-time features, or None.
``since_prev``
    None, or the horizon in ns of ``<prefix>_seconds_since_prev`` (NaN when no earlier row within it).
``row_local``
    None, or ``{"time_features": bool, "frequencies": {column: [[value, freq], ...]}}``: features of
    the row alone, added in the last stage.
``bucket`` (optional)
    None, or a column of time-bucket numbers that is part of the grouping key: rows of one entity
    in different buckets are different groups (set by the hot-key split, see ``_hot_keys``).
``new_only`` (optional)
    True in every stage of a transform with history: features are computed for the rows marked
    :data:`NEW` only, their windows reading the history rows within the stage's look-back of the
    task's first new row (``trim_history``). The last stage returns the new rows only (without the
    marker).
``forward_history`` (optional)
    True in the stages before the last one of a transform with history: every history row the task
    received is returned too, marked, with zeros for the stage's features, so the next stage
    receives the history through this stage's output. Each history partition then feeds one task
    (the first stage's shuffle): were it stacked again before each stage, one read would feed two
    shuffles, and waits for the second could keep it in memory.
``forward_from_ns`` (optional)
    With ``forward_history``: only the history rows at or after this time (ns) are handed on (the
    look-back of the later stages before a known first new time, ``transform(start=)``).
``start_ns`` (optional)
    A known lower bound of the new rows' times (``transform(start=)``): a new row before it raises
    :class:`~daskml_scale.errors.SchemaError` (the history was cut by it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SchemaError
from ._kernels import Prefix, Windows, pair_counts, sort_order, window_distinct

__all__ = [
    "NEW",
    "apply_stage",
    "drop_history_duplicates",
    "stage_columns",
    "stage_lookback",
    "time_ns",
    "trim_history",
    "utc_ns",
]

NEW = "__daskml_scale_new__"
"""Marker column: True for the rows to return, False for history rows (dropped at the end)."""

_NS_PER_DAY = 86_400 * 10**9


def stage_columns(stage: dict) -> list[tuple[str, str]]:
    """The (name, dtype) of every feature a stage adds, in output order."""
    p = stage["prefix"]
    cols: list[tuple[str, str]] = []
    for label, _, aggs in stage["windows"]:
        for agg in aggs:
            if agg == "count":
                cols.append((f"{p}_txn_count_{label}", "int64"))
            elif agg == "nunique":
                cols.append((f"{p}_distinct_{stage['cp_prefix']}_{label}", "int64"))
            else:
                cols.append((f"{p}_amount_{agg}_{label}", "float64"))
    if stage["since_prev"] is not None:
        cols.append((f"{p}_seconds_since_prev", "float64"))
    if stage["profile"] is not None:
        label = stage["profile"][0]
        cols.append((f"{p}_amount_ratio_{label}", "float64"))
        cols.append((f"{p}_amount_zscore_{label}", "float64"))
        if stage["counterparty"] is not None:
            cp = stage["cp_prefix"]
            cols.append((f"{p}_{cp}_txn_count_{label}", "float64"))
            cols.append((f"{p}_new_{cp}_{label}", "float64"))
    local = stage.get("row_local")
    if local:
        if local["time_features"]:
            cols += [(c, "float64") for c in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")]
        for col in local["frequencies"]:
            cols.append((f"{col}_freq", "float64"))
    return cols


def stage_lookback(stage: dict) -> int:
    """The longest look-back of a stage's features in ns: no feature reads an older row."""
    widths = [width for _, width, _ in stage["windows"]]
    if stage["profile"] is not None:
        widths.append(stage["profile"][1])
    if stage["since_prev"] is not None:
        widths.append(stage["since_prev"])
    return max(widths, default=1)


def _group_codes(pdf: pd.DataFrame, stage: dict) -> tuple[np.ndarray, int]:
    """Dense codes of the grouping key: the entity, with the time bucket when there is one."""
    codes, n = _codes(pdf[stage["entity"]])
    bucket = stage.get("bucket")
    if bucket is None:
        return codes, n
    b_codes, b_uniques = pd.factorize(pdf[bucket].to_numpy(), use_na_sentinel=False)
    if len(b_uniques) < 2:
        return codes, n
    pair, uniques = pd.factorize(codes * np.int64(len(b_uniques)) + b_codes.astype(np.int64))
    return pair.astype(np.int64), len(uniques)


def time_ns(s: pd.Series, column: str) -> np.ndarray:
    """UTC nanoseconds since the epoch as int64; raises SchemaError on missing timestamps."""
    n_bad = int(s.isna().sum())
    if n_bad:
        raise SchemaError(
            f"Column {column!r} has {n_bad} missing timestamp(s) (NaT) in one partition; every "
            "transaction needs a time. Drop or fill those rows before computing features.",
            column=column,
        )
    return utc_ns(s)


def utc_ns(s: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch as int64, unchecked (NaT becomes the int64 minimum)."""
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.dt.as_unit("ns").to_numpy().view(np.int64)


def _local_ns(s: pd.Series) -> np.ndarray:
    """Wall-clock nanoseconds (local time for tz-aware timestamps) for hour and weekday features."""
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_localize(None)
    return s.dt.as_unit("ns").to_numpy().view(np.int64)


def factorize(s: pd.Series) -> tuple[np.ndarray, int]:
    """Codes ``0..k-1`` of a column's ``k`` distinct values as int64, -1 for missing values.

    Numbers (numpy dtypes) are coded by a sort (``np.unique``: several times faster than a hash
    table on the millions of distinct card ids of a partition), other values by
    :func:`pandas.factorize`. Only the identity of the codes is used, not their order.
    """
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        uniques, codes = np.unique(s.to_numpy(), return_inverse=True)
        return codes.astype(np.int64, copy=False).ravel(), len(uniques)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        values = s.to_numpy()
        missing = np.isnan(values)
        if not missing.any():
            uniques, codes = np.unique(values, return_inverse=True)
            return codes.astype(np.int64, copy=False).ravel(), len(uniques)
        codes = np.full(len(values), -1, dtype=np.int64)
        uniques, codes[~missing] = np.unique(values[~missing], return_inverse=True)
        return codes, len(uniques)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes.astype(np.int64), len(uniques)


def _codes(s: pd.Series) -> tuple[np.ndarray, int]:
    """Dense int64 codes of a column; missing values get a code of their own each."""
    codes, n = factorize(s)
    missing = codes < 0
    if missing.any():
        k = int(missing.sum())
        codes[missing] = np.arange(n, n + k)
        n += k
    return codes, n


def _tiebreak(s: pd.Series) -> np.ndarray:
    """A sortable array ordered like the transaction ids (ties in time are sorted by it)."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not s.isna().any():
        values = s.to_numpy()
        if values.dtype != object:
            return values
    return pd.factorize(s, sort=True)[0]


def trim_history(pdf: pd.DataFrame, stage: dict) -> pd.DataFrame:
    """Drop the history rows older than the stage's look-back before this task's first new row.

    No window of a new row here reaches further back, so the values are the same bits (the running
    sums restart at epoch-aligned blocks, see :mod:`._kernels`); the task's own first new row is
    the bound, so no global reduction over the new rows is needed before the history can stream
    through the shuffle. A task with no new row returns none.
    """
    if NEW not in pdf.columns or len(pdf) == 0:
        return pdf
    is_new = pdf[NEW].to_numpy(dtype=bool)
    if is_new.all():
        return pdf
    if not is_new.any():
        return pdf.iloc[:0]
    t = time_ns(pdf[stage["timestamp"]], stage["timestamp"])
    keep = is_new | (t >= t[is_new].min() - stage_lookback(stage))
    return pdf if keep.all() else pdf[keep]


def _check_start(pdf: pd.DataFrame, stage: dict) -> None:
    """Raise when a new row is earlier than the ``start`` the history was cut by."""
    is_new = pdf[NEW].to_numpy(dtype=bool)
    if not is_new.any():
        return
    ts = stage["timestamp"]
    early = int((time_ns(pdf[ts][is_new], ts) < stage["start_ns"]).sum())
    if early:
        start = pd.Timestamp(stage["start_ns"], unit="ns")
        raise SchemaError(
            f"Column {ts!r}: {early} new row(s) in one partition are earlier than start={start} "
            "(transform(start=) must be at or before the first new row: the history was cut by "
            "it). Pass an earlier start, or none.",
            column=ts,
        )


def drop_history_duplicates(pdf: pd.DataFrame, transaction_id: str) -> pd.DataFrame:
    """Drop history rows whose transaction id is also a new row (the new row wins)."""
    if NEW not in pdf.columns or len(pdf) == 0:
        return pdf
    is_new = pdf[NEW].to_numpy(dtype=bool)
    if is_new.all() or not is_new.any():
        return pdf
    ids = pdf[transaction_id]
    dup = ~is_new & ids.isin(ids[is_new]).to_numpy()
    return pdf[~dup] if dup.any() else pdf


def _entity_features(pdf: pd.DataFrame, stage: dict, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every feature of the stage for the rows of ``pdf`` (all read by the windows), returned for
    the rows where the boolean ``rows`` is True (all when None), in their order in ``pdf``."""
    n = len(pdf)
    ts = stage["timestamp"]
    g_codes, n_groups = _group_codes(pdf, stage)
    t = time_ns(pdf[ts], ts)
    order = sort_order(g_codes, t, _tiebreak(pdf[stage["transaction_id"]]), n_groups)
    g = g_codes[order]
    widths = [width for _, width, _ in stage["windows"]]
    if stage["profile"] is not None:
        widths.append(stage["profile"][1])
    # running sums restart every block: no window reaches back further than one block
    block_ns = max(widths, default=1)
    if stage["since_prev"] is not None:
        widths.append(stage["since_prev"])
    w = Windows(g, t[order], list(dict.fromkeys(widths)))
    x = pdf[stage["amount"]].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    prefix = None  # built on first use: stages with counts only never need it
    p = stage["prefix"]
    cp = stage["counterparty"]
    cp_codes = None
    if cp is not None:
        cp_codes = factorize(pdf[cp])[0][order]

    sorted_out: dict[str, np.ndarray] = {}
    for label, width, aggs in stage["windows"]:
        lo = w.lo(width)
        stats = None
        want_std = "std" in aggs
        for agg in aggs:
            if agg == "count":
                sorted_out[f"{p}_txn_count_{label}"] = (w.hi - lo).astype(np.int64)
            elif agg == "nunique":
                sorted_out[f"{p}_distinct_{stage['cp_prefix']}_{label}"] = window_distinct(cp_codes, lo, w.hi)
            else:
                if stats is None:
                    if prefix is None:
                        prefix = Prefix(g, w.t, x, block_ns)
                    stats = prefix.stats(lo, w.hi, want_std)
                _, total, mean, std = stats
                sorted_out[f"{p}_amount_{agg}_{label}"] = {"sum": total, "mean": mean, "std": std}[agg]
    if stage["since_prev"] is not None:
        sorted_out[f"{p}_seconds_since_prev"] = w.seconds_since_prev(stage["since_prev"])
    if stage["profile"] is not None:
        label, width = stage["profile"]
        if prefix is None:
            prefix = Prefix(g, w.t, x, block_ns)
        _, _, mean, std = prefix.stats(w.lo(width), w.hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(mean != 0, x / mean, np.nan)
            z = np.where(std > 0, (x - mean) / std, np.nan)
        sorted_out[f"{p}_amount_ratio_{label}"] = ratio
        sorted_out[f"{p}_amount_zscore_{label}"] = z
        if cp is not None:
            cpp = stage["cp_prefix"]
            missing = cp_codes < 0
            pair = g * np.int64(max(int(cp_codes.max(initial=0)) + 2, 2)) + cp_codes
            count = pair_counts(pair, w.t, width).astype(np.float64)
            count[missing] = np.nan
            sorted_out[f"{p}_{cpp}_txn_count_{label}"] = count
            sorted_out[f"{p}_new_{cpp}_{label}"] = np.where(missing, np.nan, (count == 0).astype(float))

    out = {}
    if rows is None:
        for name, values in sorted_out.items():
            full = np.empty(n, dtype=values.dtype)
            full[order] = values
            out[name] = full
        return out
    # only the rows asked for: their sorted positions, and where each goes among them
    picked = rows[order]
    dest = (np.cumsum(rows) - 1)[order[picked]]
    n_out = int(rows.sum())
    for name, values in sorted_out.items():
        full = np.empty(n_out, dtype=values.dtype)
        full[dest] = values[picked]
        out[name] = full
    return out


def _row_local(pdf: pd.DataFrame, stage: dict) -> dict[str, np.ndarray]:
    local = stage["row_local"]
    out = {}
    if local["time_features"]:
        ns = _local_ns(pdf[stage["timestamp"]])
        day_frac = np.mod(ns, _NS_PER_DAY) / _NS_PER_DAY
        # 1970-01-01 was a Thursday: weekday 0 = Monday
        dow = np.mod(np.floor_divide(ns, _NS_PER_DAY) + 3, 7) / 7.0
        out["hour_sin"] = np.sin(2 * np.pi * day_frac)
        out["hour_cos"] = np.cos(2 * np.pi * day_frac)
        out["dow_sin"] = np.sin(2 * np.pi * dow)
        out["dow_cos"] = np.cos(2 * np.pi * dow)
    for col, pairs in local["frequencies"].items():
        lookup = {v: f for v, f in pairs if v is not None}
        missing_freq = sum(f for v, f in pairs if v is None)
        # factorize (fast on Arrow strings), then look up each distinct value once
        codes, uniques = pd.factorize(pdf[col], use_na_sentinel=True)
        per_value = np.array([lookup.get(u, 0.0) for u in uniques], dtype=np.float64)  # 0: unseen
        mapped = np.full(len(codes), missing_freq, dtype=np.float64)
        seen = codes >= 0
        mapped[seen] = per_value[codes[seen]]
        out[f"{col}_freq"] = mapped
    return out


def apply_stage(pdf: pd.DataFrame, stage: dict) -> pd.DataFrame:
    """Add one stage's features to a partition holding every row of each of its entities (with
    ``stage["new_only"]``, return only the new rows, see the module's docstring)."""
    pdf = drop_history_duplicates(pdf, stage["transaction_id"])
    columns = stage_columns(stage)
    rows = None
    forward = None
    if stage.get("new_only") and NEW in pdf.columns:
        if stage.get("start_ns") is not None:
            _check_start(pdf, stage)
        if stage.get("forward_history"):
            forward = pdf[~pdf[NEW].to_numpy(dtype=bool)]
            if stage.get("forward_from_ns") is not None and len(forward):
                t = time_ns(forward[stage["timestamp"]], stage["timestamp"])
                forward = forward[t >= stage["forward_from_ns"]]
        pdf = trim_history(pdf, stage)
        rows = pdf[NEW].to_numpy(dtype=bool)
        kept = pdf[rows].drop(columns=[NEW])
    else:
        kept = pdf
    if len(kept) == 0:
        extra = {name: np.zeros(0, dtype=dtype) for name, dtype in columns}
    else:
        extra = _entity_features(pdf, stage, rows)
        if stage.get("row_local"):
            extra.update(_row_local(kept, stage))
    out = kept.copy(deep=False)
    for name, dtype in columns:
        out[name] = np.asarray(extra[name], dtype=dtype)
    if forward is None:
        return out
    # the history rows go on to the next stage, after the new rows, with zeros as this stage's features
    forward = forward.assign(**{name: np.zeros(len(forward), dtype=dtype) for name, dtype in columns})
    out[NEW] = np.ones(len(out), dtype=bool)
    if len(forward) == 0:
        return out
    return pd.concat([out, forward[list(out.columns)]], ignore_index=True)
