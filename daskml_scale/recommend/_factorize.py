"""Interactions to a block matrix by a distributed factorize: nothing per id or per row on the client.

Users and items are cut into blocks by a hash of their id. Three all-to-all exchanges of the
interactions, each piece worker to worker:

1. every input partition is cut by user block (and its missing ids and bad weights are counted);
2. user block ``b`` gathers its pieces, sorts its distinct users (their codes are
   ``user_offsets[b] + position``) and cuts its rows by item block;
3. item block ``j`` gathers those, sorts its distinct items (codes ``item_offsets[j] + position``),
   builds its CSR (items x all users, global user codes) and cuts its rows back by user block, so
   that user block ``b`` builds its CSR (users x all items, global item codes).

Only counts reach the client: distinct ids per block (to place the blocks' codes) and the
validation counts. The input is read once. The id maps stay on the workers as one sorted array per
block; a user's block is a pure function of its id (:func:`block_of`), so a lookup is a hash and a
``searchsorted`` in one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ._kernels import id_hash
from ._matrix import WEIGHT_PROBLEMS, build_block, check_missing_ids, check_weight_problems

__all__ = ["BlockMatrix", "block_of", "factorize_blocks"]

_BLOCK_SALT = np.uint64(0x5851F42D4C957F2D)


def block_of(ids, n_blocks: int) -> np.ndarray:
    """Block of each id: a hash of the id modulo ``n_blocks`` (the same in every process)."""
    from ..data._synthetic import _mix

    return (_mix(id_hash(ids) ^ _BLOCK_SALT) % np.uint64(n_blocks)).astype(np.int64)


@dataclass
class BlockMatrix:
    """The interaction matrix as user blocks and item blocks, held on the workers (or in process).

    ``user_ids[b]`` are the sorted distinct user ids of user block ``b``; user ``user_ids[b][r]``
    has the global code ``user_offsets[b] + r``. ``users[b]`` is its raw CSR (summed weights),
    users of the block x all items by global item code; ``items[j]`` the same for item block ``j``
    (items of the block x all users). Entries are futures when a client is used.
    """

    user_ids: list
    item_ids: list
    user_offsets: np.ndarray
    item_offsets: np.ndarray
    users: list
    items: list
    nnz: int = 0
    id_digests: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.user_offsets[-1])

    @property
    def n_items(self) -> int:
        return int(self.item_offsets[-1])


def _cut(keys, n_blocks: int, *columns):
    """Rows of ``columns`` grouped by the block of ``keys``: one tuple of arrays per block."""
    if n_blocks == 1:
        return [tuple(columns)]
    block = block_of(keys, n_blocks)
    order = np.argsort(block, kind="stable")
    ends = np.cumsum(np.bincount(block, minlength=n_blocks))
    starts = ends - np.bincount(block, minlength=n_blocks)
    cols = [c[order] for c in columns]
    return [tuple(c[s:e] for c in cols) for s, e in zip(starts, ends)]


def _split_partition(df: pd.DataFrame, n_user_blocks: int):
    """Step 1: count missing ids and bad weights, cut the rows by user block."""
    users, items = df[S.USER_ID], df[S.ITEM_ID]
    stats = {S.USER_ID: int(users.isna().sum()), S.ITEM_ID: int(items.isna().sum())}
    if S.WEIGHT in df.columns:
        w = df[S.WEIGHT].to_numpy(dtype=np.float64, na_value=np.nan)
        stats.update(
            zip(
                WEIGHT_PROBLEMS,
                [
                    np.isnan(w).sum(),
                    np.isposinf(w).sum(),
                    np.isneginf(w).sum(),
                    (np.isfinite(w) & (w < 0)).sum(),
                ],
            )  # fmt: skip
        )
        w = w.astype(np.float32)
    else:
        w = np.ones(len(df), dtype=np.float32)
    keep = users.notna().to_numpy() & items.notna().to_numpy()
    u, i = users.to_numpy()[keep], items.to_numpy()[keep]
    return _cut(u, n_user_blocks, u, i, w[keep]), {k: int(v) for k, v in stats.items()}


def _pieces_of(split, b: int):
    return split[0][b]


def _stats_of(split):
    return split[1]


def _concat(pieces, width: int):
    pieces = [p for p in pieces if len(p[0])]
    if not pieces:
        return tuple(np.zeros(0) for _ in range(width))
    return tuple(np.concatenate([p[c] for p in pieces]) for c in range(width))


def _sorted_codes(values):
    """Sorted distinct values and each value's position among them (int32), by a hash table:
    no sort of the rows themselves (``np.unique`` would hold three row-sized temporaries)."""
    codes, ids = pd.factorize(values, sort=True)
    return np.asarray(ids), codes.astype(_itype(len(ids)))


def _itype(n: int):
    return np.int32 if n < 2**31 else np.int64


def _user_side(n_item_blocks: int, *pieces):
    """Step 2: distinct users of the block (sorted) and local user rows, cut by item block."""
    u, i, w = _concat(pieces, 3)
    ids, local = _sorted_codes(u)
    del u
    return ids, _cut(i, n_item_blocks, i, local, w)


def _ids_of(side):
    return side[0]


def _n_of(side) -> int:
    return len(side[0])


def _digest(ids) -> str:
    import hashlib

    return hashlib.sha256(pd.util.hash_array(np.asarray(ids), categorize=False).tobytes()).hexdigest()[:16]


def _to_item_block(side, j: int, user_offset: int, n_users: int):
    i, local, w = side[1][j]
    return i, local.astype(_itype(n_users)) + user_offset, w


def _item_side(n_users: int, *pieces):
    """Step 3a: distinct items of the block (sorted), local item rows, global user codes."""
    i, u, w = _concat(pieces, 3)
    ids, local = _sorted_codes(i)
    del i
    return ids, local, u.astype(_itype(n_users), copy=False), w.astype(np.float32, copy=False)


def _item_block(side, n_users: int):
    ids, local, u, w = side
    return build_block([(local, u, w)], len(ids), n_users)


def _back_to_users(side, item_offset: int, user_offsets):
    """Step 3b: this item block's rows cut by user block: (local user row, global item code, weight)."""
    _, local, u, w = side
    b = np.searchsorted(user_offsets, u, side="right") - 1
    order = np.argsort(b, kind="stable")
    counts = np.bincount(b, minlength=len(user_offsets) - 1)
    ends = np.cumsum(counts)
    del b
    u, local, w = u[order], local[order] + item_offset, w[order]
    return [
        (u[e - c : e] - user_offsets[k], local[e - c : e], w[e - c : e])
        for k, (c, e) in enumerate(zip(counts, ends))
    ]


def _user_block(n_rows: int, n_items: int, *pieces):
    return build_block(list(pieces), n_rows, n_items)


def _nnz(block) -> int:
    return int(block.nnz)


def _offsets(counts) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def factorize_blocks(runner, ddf, n_user_blocks: int, n_item_blocks: int, *, owner: str) -> BlockMatrix:
    """Cut the interactions ``ddf`` into a :class:`BlockMatrix`; raise SchemaError on bad input.

    One read of the input and three exchanges of its rows (see the module docstring). Missing ids and
    weights that are NaN, infinite or negative are counted in the first step and refused, with the
    counts, before the blocks are built.
    """
    from ..errors import SchemaError

    s = runner.submit
    if runner.distributed:
        import dask

        parts = ddf.to_delayed()
        splits = runner.client.compute([dask.delayed(_split_partition)(p, n_user_blocks) for p in parts])
    else:
        splits = [_split_partition(compute(p)[0], n_user_blocks) for p in ddf.to_delayed()]
    # small: a few counts per partition
    stats = runner.gather([s(_stats_of, sp) for sp in splits])
    totals = {k: sum(st.get(k, 0) for st in stats) for k in (S.USER_ID, S.ITEM_ID, *WEIGHT_PROBLEMS)}
    check_missing_ids({k: totals[k] for k in (S.USER_ID, S.ITEM_ID)}, owner)
    if S.WEIGHT in ddf.columns:
        check_weight_problems(totals, owner)
    at = runner.submit_to  # block b lives on worker b mod W: the blocks spread over the cluster
    user_sides = [
        at(b, _user_side, n_item_blocks, *[s(_pieces_of, sp, b) for sp in splits])
        for b in range(n_user_blocks)
    ]
    del splits
    user_counts = runner.gather([s(_n_of, us) for us in user_sides])  # small: one count per block
    if sum(user_counts) == 0:
        raise SchemaError(f"{owner}: the interactions are empty (0 rows). Pass at least one interaction.")
    uoff = _offsets(user_counts)
    n_users = int(uoff[-1])
    item_sides = [
        at(
            j,
            _item_side,
            n_users,
            *[s(_to_item_block, us, j, int(uoff[b]), n_users) for b, us in enumerate(user_sides)],
        )
        for j in range(n_item_blocks)
    ]
    user_ids = [s(_ids_of, us) for us in user_sides]
    del user_sides
    ioff = _offsets(runner.gather([s(_n_of, it) for it in item_sides]))  # small
    n_items = int(ioff[-1])
    items = [at(j, _item_block, it, n_users) for j, it in enumerate(item_sides)]
    item_ids = [s(_ids_of, it) for it in item_sides]
    backs = [s(_back_to_users, it, int(ioff[j]), uoff) for j, it in enumerate(item_sides)]
    del item_sides
    users = [
        at(b, _user_block, int(uoff[b + 1] - uoff[b]), n_items, *[s(_pieces_of_list, bk, b) for bk in backs])
        for b in range(n_user_blocks)
    ]
    del backs
    nnz = sum(runner.gather([s(_nnz, u) for u in users]))  # small
    digests = {
        "users": runner.gather([s(_digest, x) for x in user_ids]),
        "items": runner.gather([s(_digest, x) for x in item_ids]),
    }
    return BlockMatrix(user_ids, item_ids, uoff, ioff, users, items, int(nnz), digests)


def _pieces_of_list(pieces, b: int):
    return pieces[b]
