"""Interactions to a model matrix: id maps, index mapping, block splitting, confidence weighting.

Everything here works partition by partition:

* id maps: the distinct ids of each partition, combined and sorted (``user_id -> row``,
  ``item_id -> column``); only the distinct ids reach the client, never the rows;
* each partition is mapped to integer COO pieces ``(row, col, weight)`` and cut into the row ranges of
  the blocks it touches, so a block of rows is assembled from its pieces alone;
* a block's CSR sums duplicate (user, item) pairs, then turns the summed weights into confidences:
  ``alpha * w`` (implicit's convention: implicit multiplies the matrix by ``alpha`` and reads the
  values as confidences ``c``, weighing a stored pair by ``c`` in the right-hand side and ``c - 1``
  beyond the all-pairs Gram matrix), ``alpha * log1p(w)``, or ``alpha * bm25(w)`` (implicit's
  ``bm25_weight`` on the items x users matrix, from global statistics computed per block).
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import schema as S
from ..cluster import compute
from ..errors import ParameterError, SchemaError

__all__ = [
    "CONFIDENCES",
    "apply_confidence",
    "block_bounds",
    "build_block",
    "build_id_maps",
    "check_interactions",
    "check_missing_ids",
    "check_weight_problems",
    "index_partition",
    "split_pieces",
    "weight_problems",
]

CONFIDENCES = ("linear", "log", "bm25")
WEIGHT_PROBLEMS = ("NaN", "+inf", "-inf", "negative")


def check_interactions(ddf, owner: str):
    """Return ``ddf`` as a Dask DataFrame with the interaction columns, or raise SchemaError."""
    import dask.dataframe as dd

    if isinstance(ddf, pd.DataFrame):
        ddf = dd.from_pandas(ddf, npartitions=1, sort=False)
    if not isinstance(ddf, dd.DataFrame):
        raise SchemaError(
            f"{owner} expects a Dask or pandas DataFrame of interactions "
            f"({S.USER_ID}, {S.ITEM_ID}[, {S.WEIGHT}]); got {type(ddf).__name__}."
        )
    for col in (S.USER_ID, S.ITEM_ID):
        if col not in ddf.columns:
            raise SchemaError(
                f"{owner}: the interactions have no {col!r} column (columns: {list(ddf.columns)}). "
                "Rename your columns to the canonical names (daskml_scale.schema.INTERACTIONS), e.g. "
                "read_interactions(..., columns={'userId': 'user_id', 'movieId': 'item_id'}).",
                column=col,
            )
    if S.WEIGHT in ddf.columns and not pd.api.types.is_numeric_dtype(ddf[S.WEIGHT].dtype):
        raise SchemaError(
            f"{owner}: column {S.WEIGHT!r} must be numeric; got dtype {ddf[S.WEIGHT].dtype}. "
            "Cast it with ddf['weight'].astype('float64').",
            column=S.WEIGHT,
        )
    cols = [S.USER_ID, S.ITEM_ID] + ([S.WEIGHT] if S.WEIGHT in ddf.columns else [])
    return ddf[cols]


def weight_problems(weights: pd.Series) -> pd.DataFrame:
    """One row counting the weights that are NaN, +inf, -inf, or finite and negative (one partition)."""
    v = weights.to_numpy(dtype=np.float64, na_value=np.nan)
    counts = [np.isnan(v).sum(), np.isposinf(v).sum(), np.isneginf(v).sum(), (np.isfinite(v) & (v < 0)).sum()]
    return pd.DataFrame([counts], columns=list(WEIGHT_PROBLEMS), dtype="int64")


def check_missing_ids(counts, owner: str) -> None:
    """Raise SchemaError naming the id column, the rule and the count of rows missing it.

    ``counts``: mapping of column name to the number of rows whose id is missing.
    """
    bad = {k: int(v) for k, v in counts.items() if v}
    if bad:
        col, n = next(iter(bad.items()))
        raise SchemaError(
            f"{owner}: {n} row(s) have a missing {col!r} (missing per column: {bad}). Drop them first, "
            "e.g. ddf.dropna(subset=['user_id', 'item_id']).",
            column=col,
        )


def check_weight_problems(counts, owner: str) -> None:
    """Raise SchemaError naming the weight column, the rule and the count of each kind of bad value.

    ``counts``: mapping of :data:`WEIGHT_PROBLEMS` to row counts (:func:`weight_problems`, summed).
    Weights must be finite and >= 0 (zero is fine: the pair is dropped); every engine reads them as
    confidences, where NaN or inf would turn the factors into NaN and negative ones change the model.
    """
    counts = {k: int(counts[k]) for k in WEIGHT_PROBLEMS}
    total = sum(counts.values())
    if total:
        per_kind = ", ".join(f"{k}: {n}" for k, n in counts.items())
        raise SchemaError(
            f"{owner}: column {S.WEIGHT!r} must hold finite values >= 0; {total} row(s) break that rule "
            f"({per_kind}). Drop or fix them first, e.g. "
            "ddf = ddf[(ddf['weight'] >= 0) & (ddf['weight'] < float('inf'))].",
            column=S.WEIGHT,
        )


def build_id_maps(ddf, *, owner: str, client=None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct user and item ids of ``ddf`` (their positions are the matrix indices).

    One pass: distinct ids per partition, combined by Dask's tree reduction, plus the count of
    missing ids and of bad weights (NaN, +inf, -inf, negative), refused with the counts and the fix
    before any long work starts.
    """
    # distinct per partition, then a tree reduction (split_out=1: no shuffle)
    users = ddf[S.USER_ID].unique(split_out=1)
    items = ddf[S.ITEM_ID].unique(split_out=1)
    nulls = ddf[[S.USER_ID, S.ITEM_ID]].isna().sum()
    todo = [users, items, nulls]
    if S.WEIGHT in ddf.columns:
        meta = pd.DataFrame({k: pd.Series([], dtype="int64") for k in WEIGHT_PROBLEMS})
        todo.append(ddf[S.WEIGHT].map_partitions(weight_problems, meta=meta).sum())
    # small: one entry per distinct user / item (the size of the model), one count per column / kind
    users, items, nulls, *weights = compute(*todo, client=client)
    check_missing_ids(nulls, owner)
    if weights:
        check_weight_problems(weights[0], owner)
    if len(users) == 0:
        raise SchemaError(f"{owner}: the interactions are empty (0 rows). Pass at least one interaction.")
    return np.sort(users.dropna().to_numpy()), np.sort(items.dropna().to_numpy())


def index_partition(df: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray):
    """Map one partition to integer COO arrays ``(row, col, weight)``; unknown ids are dropped.

    Indices are int32 while the ids fit (12 bytes per interaction), int64 beyond.
    """
    rows = pd.Index(user_ids).get_indexer(df[S.USER_ID].to_numpy())
    cols = pd.Index(item_ids).get_indexer(df[S.ITEM_ID].to_numpy())
    if S.WEIGHT in df.columns:
        w = df[S.WEIGHT].to_numpy(dtype=np.float32)
    else:
        w = np.ones(len(df), dtype=np.float32)
    keep = (rows >= 0) & (cols >= 0)
    if not keep.all():
        rows, cols, w = rows[keep], cols[keep], w[keep]
    itype = np.int32 if max(len(user_ids), len(item_ids)) < 2**31 else np.int64
    return rows.astype(itype), cols.astype(itype), w


def block_bounds(n: int, n_blocks: int) -> np.ndarray:
    """Row boundaries of ``n_blocks`` contiguous, near-equal blocks of ``n`` rows."""
    n_blocks = max(1, min(int(n_blocks), max(int(n), 1)))
    return np.linspace(0, n, n_blocks + 1).round().astype(np.int64)


def split_pieces(coo, bounds: np.ndarray, *, by: str) -> tuple:
    """Cut COO arrays into one piece per block of ``bounds`` over rows (``by="row"``) or columns.

    Pieces are returned in the block's orientation: ``(local_row, other_index, weight)``.
    """
    rows, cols, w = coo
    key, other = (rows, cols) if by == "row" else (cols, rows)
    block = np.searchsorted(bounds, key, side="right") - 1
    order = np.argsort(block, kind="stable")
    counts = np.bincount(block, minlength=len(bounds) - 1)
    ends = np.cumsum(counts)
    key, other, w, block = key[order], other[order], w[order], block[order]
    out = []
    for b in range(len(bounds) - 1):
        s = slice(ends[b] - counts[b], ends[b])
        out.append(((key[s] - bounds[b]).astype(key.dtype), other[s], w[s]))
    return tuple(out)


def build_block(pieces, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Assemble a CSR block from its pieces, summing duplicate pairs (weights, not yet confidences)."""
    pieces = [p for p in pieces if len(p[0])]
    if pieces:
        r = np.concatenate([p[0] for p in pieces])
        c = np.concatenate([p[1] for p in pieces])
        w = np.concatenate([p[2] for p in pieces]).astype(np.float32)
    else:
        r = c = np.zeros(0, dtype=np.int64)
        w = np.zeros(0, dtype=np.float32)
    m = sp.coo_matrix((w, (r, c)), shape=(n_rows, n_cols)).tocsr()  # sums duplicates
    m.sum_duplicates()
    m.sort_indices()
    m.data = m.data.astype(np.float32, copy=False)
    return m


@numba.njit(cache=True, nogil=True)
def _fill_rows(rows, cols, offset, pos, out):  # pragma: no cover - compiled
    for j in range(len(rows)):
        r = rows[j]
        out[pos[r]] = cols[j] + offset
        pos[r] += 1


def pattern_csr(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """The pattern of ``(rows, cols)`` as a boolean CSR, by one counting pass (linear).

    Columns keep their input order within a row and duplicates are kept: for sets of pairs (seen
    items) that are only looked up, not multiplied. ``build_block`` sorts and sums (~18x slower at
    10M pairs: 1.1 s against 0.06 s). 5 bytes a pair (int32 column, bool) plus the row pointers.
    """
    return fill_pattern([(np.asarray(rows), np.asarray(cols), 0)], n_rows, n_cols)


def fill_pattern(parts: list, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """:func:`pattern_csr` of several ``(rows, cols, col_offset)`` parts, filled part by part (no
    concatenated copies; ``col_offset`` is added to that part's columns)."""
    counts = np.zeros(n_rows, dtype=np.int64)
    for rows, _, _ in parts:
        counts += np.bincount(rows, minlength=n_rows)
    nnz = int(counts.sum())
    # int32 pointers while they fit: scipy casts the columns to the pointers' type
    indptr = np.zeros(n_rows + 1, dtype=np.int32 if nnz < np.iinfo(np.int32).max else np.int64)
    np.cumsum(counts, out=indptr[1:])
    out = np.empty(nnz, dtype=np.int32)
    pos = indptr[:-1].copy()
    for rows, cols, offset in parts:
        _fill_rows(rows, cols.astype(np.int32, copy=False), np.int32(offset), pos, out)
    return sp.csr_matrix((np.ones(nnz, dtype=bool), out, indptr), shape=(n_rows, n_cols))


def bm25_stats_rows(block: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-row statistics of a raw block: (number of stored pairs, sum of weights)."""
    return np.diff(block.indptr).astype(np.int64), np.asarray(block.sum(axis=1)).ravel()


def bm25_factors(user_nnz: np.ndarray, item_sums: np.ndarray, k1: float, b: float):
    """implicit's ``bm25_weight`` on the items x users matrix: item length norms and user idf."""
    n_items = float(len(item_sums))
    idf = np.log(n_items) - np.log1p(user_nnz.astype(np.float64))
    mean = item_sums.mean() if len(item_sums) else 1.0
    length_norm = (1.0 - b) + b * item_sums / (mean if mean > 0 else 1.0)
    return length_norm, idf


def apply_confidence(
    block: sp.csr_matrix,
    *,
    confidence: str,
    alpha: float,
    orientation: str = "user",
    offset: int = 0,
    bm25=None,
    k1: float = 100.0,
) -> sp.csr_matrix:
    """Confidences of a raw block: ``alpha * f(w)`` with ``f`` linear, log1p or BM25.

    ``orientation`` says what the rows are (``"user"`` or ``"item"``), ``offset`` the first row's
    global index; ``bm25`` is ``(item_length_norm, user_idf)`` from :func:`bm25_factors`.
    """
    out = block.copy()
    w = out.data.astype(np.float64)
    if confidence == "linear":
        c = w
    elif confidence == "log":
        c = np.log1p(np.maximum(w, 0.0)) * np.sign(w)
    else:
        length_norm, idf = bm25
        local = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr)) + offset
        if orientation == "user":
            ln, f = length_norm[out.indices], idf[local]
        else:
            ln, f = length_norm[local], idf[out.indices]
        c = w * (k1 + 1.0) / (k1 * ln + w) * f
    out.data = (alpha * c).astype(np.float32)
    out.eliminate_zeros()
    return out


def check_confidence_params(confidence, alpha, owner):
    if confidence not in CONFIDENCES:
        raise ParameterError(
            f"The 'confidence' parameter of {owner} must be one of {set(CONFIDENCES)}. "
            f"Got {confidence!r} instead."
        )
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ParameterError(f"The 'alpha' parameter of {owner} must be a float > 0. Got {alpha!r} instead.")
