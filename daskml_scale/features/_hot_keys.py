"""Hot keys: entities with a large share of the rows, split into overlapping time buckets.

The features of an entity are computed in one task after a shuffle by entity, so an entity with
5% of a billion rows puts 50M rows in one task. A *hot* entity (more than ``hot_key_rows`` rows,
found in ``fit``) is instead routed to sub-keys ``(entity, bucket)``, bucket ``k`` holding its rows
with a time in ``[k * b, (k + 1) * b)`` (``b``: the entity's bucket width, at least the stage's
look-back ``L``, buckets aligned on the epoch). Each bucket also receives, as *context* rows, the
entity's rows in ``[k * b - L, k * b)`` (the end of the previous bucket: a second copy of at most
``L / b`` of the hot entity's rows): they are read by the windows but not returned. Every returned
row therefore sees every row of its window, and the same running-sum blocks (blocks are aligned
on the epoch and no wider than ``L``), so every feature is bit-identical to the unsplit result.

Bucket ``k`` of a hot entity goes to partition ``(hash(entity) + k) mod P``: consecutive buckets on
consecutive partitions, so each partition holds ``ceil(n_buckets / P)`` of them, not a hash's
random pile. Cold entities go to ``hash(entity) mod P`` as one key, unchanged.

Detection is one distributed ``groupby(entity)`` count (with the first and last time) per entity
column, computed in ``fit`` together with the frequency tables (one pass over the data): the
per-entity counts stay partitioned on the workers and only the rows of entities over
``hot_key_rows / HEADROOM`` come back to the client (at most ``HEADROOM * rows / hot_key_rows`` of
them). Buckets are sized by the entity's *rate* in the fit data (``hot_key_rows`` of its rows per
bucket), not by its count there: ``transform`` usually reads more time than ``fit`` (fit on a week,
score a month with a month of history), and an entity just under the limit in the fit week would
put four times the limit in one task of a month-long transform. With the headroom, every entity that
reaches ``hot_key_rows`` rows within ``HEADROOM`` times its span in the fit data is split.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from dask.dataframe.dask_expr import new_collection
from dask.dataframe.dask_expr._shuffle import Shuffle

from ._partition import apply_stage, stage_lookback, time_ns

__all__ = [
    "BUCKET",
    "CONTEXT",
    "HEADROOM",
    "apply_split_stage",
    "bucket_widths",
    "entity_times",
    "hot_key_queries",
    "hot_keys_from",
    "split_partitions",
    "split_shuffle",
]

BUCKET = "__daskml_scale_bucket__"
"""Time bucket of a hot entity's row (0 for cold entities): part of the grouping key."""
CONTEXT = "__daskml_scale_context__"
"""True for a copy of a row sent to the next bucket as look-back only (dropped after the stage)."""
_PARTITIONS = "_partitions"  # dask's name for an explicit target partition (it does not hash it)
HEADROOM = 16
"""Entities with more than ``hot_key_rows / HEADROOM`` rows in the fit data are listed, with buckets
of ``hot_key_rows`` rows at their fit rate: a transform spanning up to ``HEADROOM`` times the fit
data's time splits every entity it would otherwise give more than about ``hot_key_rows`` rows in one
task (the hot-key list holds at most ``HEADROOM * rows / hot_key_rows`` entities). Cost: the
shuffle copies the last look-back ``L`` of each bucket of a listed entity as context, at most
``L / b`` of its rows, whether or not the transform is long enough to need it."""


def entity_times(pdf: pd.DataFrame, column: str, timestamp: str) -> pd.DataFrame:
    """The entity and its UTC time in ns of every row with both (the input of the hot-key count)."""
    keep = pdf[column].notna().to_numpy() & pdf[timestamp].notna().to_numpy()
    sub = pdf.loc[keep, [column, timestamp]].reset_index(drop=True)
    return pd.DataFrame({column: sub[column], "t": time_ns(sub[timestamp], timestamp)})


def hot_counts(ddf, column: str, timestamp: str):
    """Lazy per-entity ``count``, ``min``, ``max`` of the time, kept partitioned (``split_out``)."""
    meta = entity_times(ddf._meta, column, timestamp)
    times = ddf[[column, timestamp]].map_partitions(entity_times, column, timestamp, meta=meta)
    return times.groupby(column)["t"].agg(["count", "min", "max"], split_out=True)


def hot_key_queries(ddf, stages: list[dict], hot_key_rows, timestamp: str, npartitions: int):
    """Lazy (entities over the limit for each stage, the limit): the detection pass of ``fit``.

    ``hot_key_rows``: an int, ``"auto"`` (the rows of an average partition after the shuffle:
    ``rows / npartitions``, a lazy scalar) or None (no query).
    """
    if hot_key_rows is None:
        return [], None
    if isinstance(hot_key_rows, str):
        limit = ddf.map_partitions(len).sum() / npartitions
    else:
        limit = int(hot_key_rows)
    found = []
    for stage in stages:
        agg = hot_counts(ddf, stage["entity"], timestamp)
        found.append(agg[agg["count"] > limit / HEADROOM])  # only these rows leave the workers
    return found, limit


def hot_keys_from(stages: list[dict], found: list[pd.DataFrame], limit: float, plain) -> dict:
    """``hot_keys_`` from the computed queries: entity column -> ``[[value, bucket_ns], ...]``."""
    out = {}
    limit = max(1, math.ceil(limit))
    for stage, counts in zip(stages, found):
        counts = counts.set_axis([plain(v) for v in counts.index]).sort_index()
        split = bucket_widths(counts, limit, stage_lookback(stage))
        if split:
            out[stage["entity"]] = split
    return out


def bucket_widths(counts: pd.DataFrame, max_rows: int, lookback_ns: int) -> list[list]:
    """``[value, bucket_ns]`` of every entity of ``counts`` (those over ``max_rows / HEADROOM``).

    The bucket width is the time the entity takes to reach ``max_rows`` rows at its rate in the fit
    data: for an entity over the limit, its span over ``ceil(count / max_rows)`` (its buckets divide
    the fit data evenly), for one under it, its span times ``max_rows / count`` (wider than the fit
    data: one bucket there, several in a transform over a longer time); at least the look-back.
    Every one is listed, even one that no split divides within the fit data's span: a transform
    over a longer time is why it is there.
    """
    out = []
    for value, row in counts.iterrows():
        count, lo, hi = int(row["count"]), int(row["min"]), int(row["max"])
        span = hi - lo + 1
        if count > max_rows:
            width = math.ceil(span / math.ceil(count / max_rows))
        else:
            width = math.ceil(span * max_rows / max(count, 1))
        out.append([value, max(int(lookback_ns), width)])
    return out


def _hash(s: pd.Series) -> np.ndarray:
    """A hash of each value, equal for equal values whatever the partition (numbers as float64)."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype("float64")
    return pd.util.hash_pandas_object(s, index=False).to_numpy()


def route(pdf: pd.DataFrame, stage: dict, hot: list, nparts: int, lookback_ns: int) -> pd.DataFrame:
    """Rows with their target partition, bucket and context flag; hot rows near a bucket's end twice."""
    col = pdf[stage["entity"]]
    n = len(pdf)
    base = (_hash(col) % np.uint64(nparts)).astype(np.int64)
    values = pd.Index([v for v, _ in hot])
    widths = np.array([b for _, b in hot] + [1], dtype=np.int64)
    idx = values.get_indexer(col) if n else np.zeros(0, dtype=np.int64)
    is_hot = idx >= 0
    bucket = np.zeros(n, dtype=np.int64)
    part = base
    nxt = np.zeros(0, dtype=np.int64)
    if is_hot.any():
        t = time_ns(pdf[stage["timestamp"]][is_hot], stage["timestamp"])
        w = widths[idx[is_hot]]
        k = np.floor_divide(t, w)
        bucket[is_hot] = k
        part = base.copy()
        part[is_hot] = np.mod(base[is_hot] + np.mod(k, nparts), nparts)
        # the last look-back of bucket k is the context of bucket k + 1
        nxt = np.flatnonzero(is_hot)[t >= (k + 1) * w - lookback_ns]
    own = pdf.assign(**{BUCKET: bucket, CONTEXT: np.zeros(n, dtype=bool), _PARTITIONS: part})
    if len(nxt) == 0:
        return own
    ctx = own.iloc[nxt]
    ctx = ctx.assign(
        **{
            BUCKET: ctx[BUCKET].to_numpy() + 1,
            CONTEXT: np.ones(len(nxt), dtype=bool),
            _PARTITIONS: np.mod(ctx[_PARTITIONS].to_numpy() + 1, nparts),
        }
    )
    return pd.concat([own, ctx])


def apply_split_stage(pdf: pd.DataFrame, stage: dict) -> pd.DataFrame:
    """:func:`apply_stage` grouping by (entity, bucket), then the context rows and helpers dropped."""
    out = apply_stage(pdf, {**stage, "bucket": BUCKET})
    keep = ~out[CONTEXT].to_numpy(dtype=bool)
    out = out[keep] if not keep.all() else out
    # the p2p shuffle drops "_partitions" itself, the others keep it
    return out.drop(columns=[BUCKET, CONTEXT]).drop(columns=[_PARTITIONS], errors="ignore")


def split_partitions(frame, stage: dict, hot: list, nparts: int, method):
    """``frame`` shuffled for ``stage`` with the ``hot`` entities (``[[value, bucket_ns], ...]``)
    split: the partitions the stage's tasks receive, context rows and helper columns included."""
    if _PARTITIONS in frame.columns:
        raise ValueError(f"Column {_PARTITIONS!r} is reserved by Dask's shuffle; rename it.")
    lookback_ns = stage_lookback(stage)
    narrow = [v for v, width in hot if width < lookback_ns]
    if narrow:
        raise ValueError(
            f"Hot keys {narrow[:5]} of {stage['entity']!r} have buckets narrower than the stage's "
            f"look-back ({lookback_ns} ns): the split would lose rows of their windows. Fit again."
        )
    meta = route(frame._meta, stage, hot, nparts, lookback_ns)
    routed = frame.map_partitions(route, stage, hot, nparts, lookback_ns, meta=meta)
    # an explicit target partition: dask's shuffle uses a column named "_partitions" as is
    return new_collection(Shuffle(routed.expr, _PARTITIONS, nparts, False, method, None))


def split_shuffle(frame, stage: dict, hot: list, nparts: int, method):
    """Shuffle ``frame`` for ``stage`` with the ``hot`` entities split, and compute the stage."""
    shuffled = split_partitions(frame, stage, hot, nparts, method)
    return shuffled.map_partitions(apply_split_stage, stage, meta=apply_split_stage(shuffled._meta, stage))
