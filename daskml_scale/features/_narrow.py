"""Side stages on the columns they read: the other entities' features, joined to the rows after
the main shuffle.

The default features have two shuffles: by merchant (3 counts and a mean over a day) and by card
(20 features over a month). Shuffling the whole row by both moves every byte of the table twice.
The *side* stages (every entity of ``other_entities``) read only five columns (their entity, the
main entity, the time, the amount, the transaction id), so they run on a narrow frame of those
columns and each row's position (``position`` = input partition << 32 | row):

1. the narrow frame is shuffled by each side entity and its features computed (with history: each
   stage hands the history rows on to the next, the last returns the new rows only);
2. the new rows' positions and side features are shuffled to the partition their row will have in
   the main stage (an explicit target: the main stage's own routing, hot-key buckets included);
3. meanwhile the whole rows, with the same positions, are shuffled once, by the main entity, and
   each task of the main stage computes its features and joins its rows' side features by
   position (the transaction ids are compared: an input that does not read the same rows twice
   raises).

No phase waits for another holding rows read from the input: every read of it feeds a shuffle at
once (the whole rows the main shuffle, the narrow columns the first side shuffle). An earlier
plan joined the side features to the input partitions before the main shuffle: each input
partition, read early, waited in memory for the side stages to finish (5.8 GiB a worker at 1B
rows, against 2.8 moving the whole rows through both shuffles).

Bytes moved: the narrow frame (~50 bytes a row) and the side features (~40) instead of the whole
row (plus the side features) once more. Cost: the input is read twice, the first time only the
side stages' columns: a parquet read reads only those (``shares_tasks`` checks that the two reads
are different tasks; where they would be the same task, as for an input built in memory,
``transform`` moves the whole rows through every shuffle instead).
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask._task_spec import Alias
from dask.dataframe.dask_expr import new_collection
from dask.dataframe.dask_expr._expr import Expr
from dask.dataframe.dask_expr._shuffle import Shuffle

from ..errors import DaskMLScaleError
from ._hot_keys import CONTEXT, apply_split_stage, route, split_partitions
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


def _side_targets(pdf: pd.DataFrame, stage: dict, hot: list, nparts: int, keep: list[str]) -> pd.DataFrame:
    """The side features of new rows with the partition their row has in the main stage."""
    routed = route(pdf, stage, hot, nparts, stage_lookback(stage))
    own = ~routed[CONTEXT].to_numpy(dtype=bool)  # context copies are the main stage's business
    routed = routed if own.all() else routed[own]
    return routed[[*keep, _PARTITIONS]]


def join_sides(frame, side, stage: dict, hot: list, names: list[str], nparts: int, method):
    """The main ``stage`` computed on ``frame`` (whole rows with :data:`POSITION`, and history),
    each new row given the side features ``names`` of ``side`` (new rows with ``POSITION``)."""
    tid = stage["transaction_id"]
    keep = [POSITION, tid, *names]
    targets = side.map_partitions(
        _side_targets, stage, hot, nparts, keep, meta=_side_targets(side._meta, stage, hot, nparts, keep)
    )
    routed = new_collection(Shuffle(targets.expr, _PARTITIONS, nparts, False, method, None))
    shuffled = split_partitions(frame, stage, hot, nparts, method)
    meta = main_with_sides(shuffled._meta, routed._meta, stage, names)
    joined = dd.map_partitions(main_with_sides, shuffled, routed, stage, names, meta=meta, align_dataframes=False)
    return new_collection(OneLineage(joined.expr))


class OneLineage(Expr):
    """The partitions of ``frame``, as they are (each task an alias of one partition).

    Dask-expr treats two columns of one frame as aligned only when their lineage, walked through
    partition-wise steps, reaches one source: the joined frame above reaches two shuffles (the whole
    rows and the side features), so ``out.assign(x=out["a"] > 0)`` on it shuffled both sides by
    their index to align them: two hidden shuffles, rows moved to other partitions, and, the index
    being each partition's own ``0..n-1``, the values of rows of equal labels mixed up (score wrote
    its alerts that way, and its lazy result failed on the duplicate labels). This step is where
    that walk stops: the joined frame is one source.
    """

    _parameters = ["frame"]

    @property
    def _meta(self):
        return self.frame._meta

    def _divisions(self):
        return self.frame.divisions

    def _task(self, name, index: int):
        return Alias(name, (self.frame._name, index))


def main_with_sides(pdf: pd.DataFrame, side: pd.DataFrame, stage: dict, names: list[str]) -> pd.DataFrame:
    """One task of the main stage: its features, then its rows' side features (``side``: the rows
    routed to this partition, in any order)."""
    out = apply_split_stage(pdf, stage)
    return attach_by_position(out, side.drop(columns=[_PARTITIONS], errors="ignore"), names, stage["transaction_id"])


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
