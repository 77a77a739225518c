"""History for :meth:`TransactionFeatures.transform`: the earlier rows a stage's windows read.

The history rows (padded to the new rows' columns and marked ``NEW=False``) are stacked once, under
the new rows (``NEW=True``), before the first stage's shuffle, with no filter that needs the new
rows' first time (a lazy reduction: every history partition computed before it was known would wait
in memory). Each stage's task trims its history to the stage's look-back before its own first new
row; the stages before the last hand every history row on to the next, and the last drops them
(``trim_history``, ``new_only`` and ``forward_history`` in :mod:`._partition`). Where the side
stages run on their own columns (:mod:`._narrow`), this happens twice: the history's columns of the
side stages under the narrow frame, and the whole history under the rows of the main stage; each
read of it feeds one task.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from ..errors import SchemaError
from ._partition import NEW, stage_lookback, utc_ns

__all__ = ["cut_by_start", "history_columns", "history_since", "pad_like", "stack_history", "to_ns"]


def to_ns(start, column: str = "start") -> int:
    """UTC nanoseconds since the epoch of a time (a naive time is taken as UTC, as the features do)."""
    try:
        t = pd.Timestamp(start)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"The {column!r} parameter must be a time. Got {start!r} instead.") from e
    if t is pd.NaT:
        raise SchemaError(f"The {column!r} parameter must be a time. Got {start!r} instead.")
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return int(t.as_unit("ns").value)


def history_since(pdf: pd.DataFrame, column: str, min_ns: int) -> pd.DataFrame:
    """The rows of one history partition at or after ``min_ns`` (missing times kept: the stage that
    reads them names them)."""
    s = pdf[column]
    keep = (utc_ns(s) >= min_ns) | s.isna().to_numpy()
    return pdf if keep.all() else pdf[keep]


def cut_by_start(stages: list[dict], hist, start, timestamp: str):
    """``transform(start=)``: the stages reordered, longest look-back first, each told how much
    history to hand on, and the history cut to the first stage's look-back as it is read."""
    start_ns = to_ns(start)
    stages = sorted(stages, key=stage_lookback, reverse=True)
    lookbacks = [stage_lookback(st) for st in stages]
    hist = hist.map_partitions(history_since, timestamp, start_ns - lookbacks[0], meta=hist._meta)
    stages[0]["start_ns"] = start_ns
    for i, st in enumerate(stages[:-1]):
        st["forward_from_ns"] = start_ns - max(lookbacks[i + 1 :])
    return stages, hist


def history_columns(ddf, history, needed: list[str]):
    """The ``needed`` columns of ``history`` (the columns the features read), in the dtypes of ``ddf``."""
    hist = history[needed]
    for col in needed:
        a, b = hist[col].dtype, ddf[col].dtype
        if a != b:
            if pd.api.types.is_numeric_dtype(a) != pd.api.types.is_numeric_dtype(b):
                raise SchemaError(
                    f"Column {col!r} is {a} in the history but {b} in the new data; give both the same type.",
                    column=col,
                )
            hist = hist.assign(**{col: hist[col].astype(b)})
    return hist


def stack_history(frame, hist):
    """History rows (padded to ``frame``'s columns) then ``frame``'s rows, marked :data:`NEW`."""
    meta = frame._meta.assign(**{NEW: np.zeros(0, dtype=bool)})
    padded = hist.map_partitions(pad_like, meta, meta=meta)
    return dd.concat([padded, frame.assign(**{NEW: True})[list(meta.columns)]])


def pad_like(pdf: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """History rows with the new data's columns: missing ones filled (the stage drops history rows
    once its windows have read them)."""
    n = len(pdf)
    cols = {}
    for col, dtype in meta.dtypes.items():
        if col == NEW:
            cols[col] = np.zeros(n, dtype=bool)
        elif col in pdf.columns:
            cols[col] = pdf[col].reset_index(drop=True)
        elif pd.api.types.is_integer_dtype(dtype) and isinstance(dtype, np.dtype):
            cols[col] = np.zeros(n, dtype=dtype)
        elif pd.api.types.is_bool_dtype(dtype) and isinstance(dtype, np.dtype):
            cols[col] = np.zeros(n, dtype=bool)
        else:
            cols[col] = meta[col].reindex(range(n))
    out = pd.DataFrame(cols, index=pd.RangeIndex(n))
    return out.astype(meta.dtypes.to_dict())
