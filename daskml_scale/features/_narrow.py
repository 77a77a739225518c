"""Side stages on the columns they read: the other entities' features, joined to the rows after
the main shuffle.

The default features have two shuffles: by merchant (3 counts and a mean over a day) and by card
(20 features over a month). Shuffling the whole row by both moves every byte of the table twice.
The *side* stages (every entity of ``other_entities``) read only five columns (their entity, the
main entity, the time, the amount, the transaction id), so they run on a narrow frame of those
columns and each row's position (``position`` = input partition << 32 | row):

1. the narrow frame is shuffled by each side entity and its features computed (with history: each
   stage hands the history rows on to the next, the last returns the new rows only);
2. one shuffle, by the main entity, carries the whole rows (with the same positions) and the new
   rows' side features, each routed to the partition its row has in the main stage (an explicit
   target: the main stage's own routing, hot-key buckets included; the side rows take the whole
   rows' columns, blank, and the whole rows the side features' columns, blank);
3. each task of the main stage computes its features and joins its rows' side features by
   position (the transaction ids are compared: an input that does not read the same rows twice
   raises).

No phase waits for another holding rows: every read of the input feeds a shuffle at once (the
whole rows the main shuffle, the narrow columns the first side shuffle), and each task of the main
stage gets its rows and their side features from one shuffle. Two earlier plans held rows: joining
the side features to the input partitions before the main shuffle kept each input partition, read
early, in memory until the side stages ended (5.8 GiB a worker at 1B rows, against 2.8 moving the
whole rows through both shuffles); shuffling the side features on their own and joining the two
shuffles' outputs partition by partition kept the outputs of the shuffle that ended first (the
whole rows) until the other's were ready (3.3 GiB of them on one worker at 1B rows). A frame read
from two shuffles is also two sources to dask-expr, which then aligns its own columns by index
(``out.assign(x=out.a > 0)`` became two more shuffles).

Bytes moved: the narrow frame (~50 bytes a row) and the side features (~40, plus the blank columns
of the whole row) instead of the whole row (plus the side features) once more. Cost: the input is
read twice, the first time only the side stages' columns: a parquet read reads only those (``shares_tasks`` checks that the two reads
are different tasks; where they would be the same task, as for an input built in memory,
``transform`` moves the whole rows through every shuffle instead).
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.dataframe.dask_expr import new_collection
from dask.dataframe.dask_expr._shuffle import Shuffle

from ..errors import DaskMLScaleError
from ._hot_keys import CONTEXT, apply_split_stage, route
from ._partition import stage_lookback

__all__ = ["POSITION", "attach_by_position", "join_sides", "shares_tasks", "with_position"]

POSITION = "__daskml_scale_position__"
"""Input partition << 32 | row number in it, of a new row (in the narrow frame and the whole rows)."""
_PARTITIONS = "_partitions"  # dask's name for an explicit target partition (it does not hash it)


def _with_position(pdf: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    part = 0 if partition_info is None else int(partition_info["number"])
    pos = (np.int64(part) << np.int64(32)) | np.arange(len(pdf), dtype=np.int64)
    return pdf.assign(**{POSITION: pos})


def with_position(ddf):
    """Every column of ``ddf`` and each row's :data:`POSITION` (lazy, partition by partition)."""
    meta = ddf._meta.assign(**{POSITION: np.zeros(0, dtype=np.int64)})
    return ddf.map_partitions(_with_position, meta=meta)


SIDE = "__daskml_scale_side__"
"""True on a row of the main shuffle that carries side features only (its other columns blank)."""


def _whole_rows(pdf: pd.DataFrame, stage: dict, hot: list, nparts: int, blank: pd.DataFrame) -> pd.DataFrame:
    """Whole rows routed for the main stage, with blank side-feature columns and ``SIDE`` False."""
    routed = route(pdf, stage, hot, nparts, stage_lookback(stage))
    extra = {c: _blank(blank[c].dtype, len(routed)) for c in blank.columns}
    return routed.assign(**extra, **{SIDE: np.zeros(len(routed), dtype=bool)})


def _side_rows(
    pdf: pd.DataFrame, stage: dict, hot: list, nparts: int, names: list[str], like: pd.DataFrame
) -> pd.DataFrame:
    """New rows' side features with the partition their row has in the main stage, in the columns
    of :func:`_whole_rows` (``like``): position, transaction id and features filled, the rest blank."""
    routed = route(pdf, stage, hot, nparts, stage_lookback(stage))
    own = ~routed[CONTEXT].to_numpy(dtype=bool)  # context copies are the main stage's business
    routed = routed if own.all() else routed[own]
    n = len(routed)
    filled = {POSITION, stage["transaction_id"], *names, _PARTITIONS}
    cols = {c: (routed[c].to_numpy() if c in filled else _blank(like[c].dtype, n)) for c in like.columns if c != SIDE}
    out = pd.DataFrame(cols, index=pd.RangeIndex(n))
    out[SIDE] = np.ones(n, dtype=bool)
    return out.astype(like.dtypes.to_dict())


def _blank(dtype, n: int):
    """``n`` placeholder values of ``dtype`` that need no wider type (zeros for numpy numbers, else
    missing)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return np.zeros(n, dtype=dtype)
    return pd.array([None] * n, dtype=dtype)


def join_sides(frame, side, stage: dict, hot: list, names: list[str], nparts: int, method):
    """The main ``stage`` computed on ``frame`` (whole rows with :data:`POSITION`, and history),
    each new row given the side features ``names`` of ``side`` (new rows with ``POSITION``).

    One shuffle carries both: the whole rows, routed as they are read, and the side features, routed
    to the partition of their row (the main stage's routing) as the side stages produce them; each
    task of the main stage receives its rows and their side features together. (Two shuffles joined
    partition by partition held the outputs of the one that ended first in memory until the
    other's were ready: 3.3 GiB of them on one worker at 1B rows.)
    """
    blank = side._meta[names]
    wmeta = _whole_rows(frame._meta, stage, hot, nparts, blank)
    whole = frame.map_partitions(_whole_rows, stage, hot, nparts, blank, meta=wmeta)
    sides = side.map_partitions(_side_rows, stage, hot, nparts, names, wmeta, meta=wmeta)
    both = dd.concat([whole, sides])
    shuffled = new_collection(Shuffle(both.expr, _PARTITIONS, nparts, False, method, None))
    meta = main_with_sides(shuffled._meta, stage, names)
    return shuffled.map_partitions(main_with_sides, stage, names, meta=meta)


def main_with_sides(pdf: pd.DataFrame, stage: dict, names: list[str]) -> pd.DataFrame:
    """One task of the main stage: its features, then its rows' side features (the ``SIDE`` rows
    routed to this partition, in any order)."""
    is_side = pdf[SIDE].to_numpy(dtype=bool)
    rows = pdf[~is_side].drop(columns=[SIDE, *names])
    side = pdf.loc[is_side, [POSITION, stage["transaction_id"], *names]]
    out = apply_split_stage(rows, stage)
    return attach_by_position(out, side, names, stage["transaction_id"])


def attach_by_position(pdf: pd.DataFrame, side: pd.DataFrame, names: list[str], transaction_id: str) -> pd.DataFrame:
    """``pdf`` (rows with :data:`POSITION`) with the ``names`` columns of the ``side`` row of the same
    position, then without ``POSITION``. Both hold the same rows, in any order; the transaction ids
    must agree (else the input gave other rows on its two reads)."""
    pos = pdf[POSITION].to_numpy(dtype=np.int64)
    spos = side[POSITION].to_numpy(dtype=np.int64)
    order = np.argsort(spos, kind="stable")
    spos = spos[order]
    at = np.minimum(np.searchsorted(spos, pos), max(len(spos) - 1, 0))
    same = len(spos) == len(pos) and (len(pos) == 0 or np.array_equal(spos[at], pos))
    if same and len(pos):
        ids = side[transaction_id].iloc[order[at]].reset_index(drop=True)
        same = ids.equals(pdf[transaction_id].reset_index(drop=True))
    if not same:
        raise DaskMLScaleError(
            f"TransactionFeatures: a partition of the main stage holds {len(pos)} rows and received "
            f"side features for {len(spos)}, or for other rows (transaction ids, positions): the "
            "input must give the same rows, in the same order, each time it is computed (write it "
            "to parquet first)."
        )
    out = pdf.drop(columns=[POSITION])
    take = order[at]
    for name in names:
        out[name] = side[name].to_numpy()[take] if len(pos) else side[name].to_numpy()[:0]
    return out


def shares_tasks(a, b) -> bool:
    """Whether the graphs of two collections share a task (a shared read would be held in memory
    from the first phase to the second)."""
    ka = set(a.optimize().__dask_graph__().keys())
    kb = set(b.optimize().__dask_graph__().keys())
    return bool(ka & kb)
