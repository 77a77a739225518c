"""Side stages on the columns they read: the other entities' features, routed back to the rows.

The default features have two shuffles: by merchant (3 counts and a mean over a day) and by card
(20 features over a month). Shuffling the whole row by both moves every byte of the table twice.
The *side* stages (every entity of ``other_entities``) read only four columns (their entity, the
time, the amount, the transaction id), so they run on a narrow frame of those columns and the rows'
positions:

1. the narrow frame (``position`` = input partition << 32 | row) is shuffled by each side entity
   and its features computed (with history: each stage hands the history rows on to the next, the
   last returns the new rows only);
2. the new rows' positions and features are routed back by input partition (a shuffle to an
   explicit target partition: partition ``i`` receives the rows read from input partition ``i``);
3. each input partition is read again and its rows given their side features by position (the
   transaction ids are compared: an input that does not read the same rows twice raises), and only
   then are the whole rows shuffled, once, by the main entity.

Bytes moved: the narrow frame (~40 bytes a row) twice instead of the whole row (plus the side
features) once. Cost: the input is read twice, the first time only the side stages' columns: a
parquet read only reads those columns (``fits_narrow`` checks that the two reads are different
tasks; where they would be the same task, as for an input built in memory, its result would wait
in memory between the two phases, so ``transform`` moves the whole rows instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from dask.dataframe.dask_expr import new_collection
from dask.dataframe.dask_expr._shuffle import Shuffle

from ..errors import DaskMLScaleError

__all__ = ["POSITION", "attach_side_features", "narrow_frame", "route_back", "shares_tasks"]

POSITION = "__daskml_scale_position__"
"""Input partition << 32 | row number in it, of a new row in the narrow frame."""
_PARTITIONS = "_partitions"  # dask's name for an explicit target partition (it does not hash it)


def _with_position(pdf: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    part = 0 if partition_info is None else int(partition_info["number"])
    pos = (np.int64(part) << np.int64(32)) | np.arange(len(pdf), dtype=np.int64)
    return pdf.assign(**{POSITION: pos})


def narrow_frame(ddf, columns: list[str]):
    """The ``columns`` of ``ddf`` and each row's :data:`POSITION` (lazy, partition by partition)."""
    narrow = ddf[columns]
    meta = narrow._meta.assign(**{POSITION: np.zeros(0, dtype=np.int64)})
    return narrow.map_partitions(_with_position, meta=meta)


def _target(pdf: pd.DataFrame) -> pd.DataFrame:
    return pdf.assign(**{_PARTITIONS: pdf[POSITION].to_numpy(dtype=np.int64) >> np.int64(32)})


def route_back(side, npartitions: int, method):
    """``side`` (new rows with :data:`POSITION`) shuffled so that partition ``i`` holds the rows read
    from input partition ``i``."""
    meta = _target(side._meta)
    routed = side.map_partitions(_target, meta=meta)
    return new_collection(Shuffle(routed.expr, _PARTITIONS, npartitions, False, method, None))


def attach_side_features(pdf: pd.DataFrame, side: pd.DataFrame, names: list[str], transaction_id: str):
    """One input partition with the side features of its rows (``side``: this partition's rows of
    the routed-back frame, in any order)."""
    if len(side) != len(pdf):
        raise DaskMLScaleError(
            f"TransactionFeatures: an input partition gave {len(pdf)} rows on its second read and "
            f"{len(side)} on its first: the input must read the same rows each time it is computed "
            "(write it to parquet first)."
        )
    out = pdf.copy(deep=False)
    if len(pdf) == 0:
        for name in names:
            out[name] = side[name].to_numpy()
        return out
    rows = side[POSITION].to_numpy(dtype=np.int64) & np.int64(0xFFFFFFFF)
    order = np.argsort(rows, kind="stable")
    ids = side[transaction_id].iloc[order].reset_index(drop=True)
    if not (
        np.array_equal(rows[order], np.arange(len(pdf)))
        and ids.equals(pdf[transaction_id].reset_index(drop=True))
    ):
        raise DaskMLScaleError(
            "TransactionFeatures: an input partition did not give the same rows (transaction ids, "
            "in order) on its second read as on its first: the input must read the same rows each "
            "time it is computed (write it to parquet first)."
        )
    for name in names:
        out[name] = side[name].to_numpy()[order]
    return out


def shares_tasks(a, b) -> bool:
    """Whether the graphs of two collections share a task (a shared read would be held in memory
    from the first phase to the second)."""
    ka = set(a.optimize().__dask_graph__().keys())
    kb = set(b.optimize().__dask_graph__().keys())
    return bool(ka & kb)
