"""Per-block kernels of ALS: factor initialisation, the conjugate-gradient solve, the loss.

The solve is implicit's conjugate-gradient update (``implicit.cpu._als.least_squares_cg``: each row
solved independently given the other side's factors, ``cg_steps`` steps from its current value),
split so that no task needs the whole other side. Every CG step reads the other side only through
the Gram matrix ``A0 = Y^T Y + regularization I`` (k x k) and a sum over the row's stored values
(:func:`products`), and that sum is a sum over the other side's blocks. The distributed engine
computes each block's share where that block lives and adds the shares where the solved rows live
(:func:`cg_start`, :func:`cg_step`); :func:`solve_block` is the same arithmetic in one piece.
:func:`loss_parts` is implicit's ``calculate_loss`` split into per-block sums.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import scipy.sparse as sp

__all__ = [
    "Piece",
    "a0",
    "as_piece",
    "cg_direction",
    "cg_result",
    "cg_start",
    "cg_step",
    "gram",
    "id_hash",
    "init_factors",
    "init_rows",
    "loss_nonzeros",
    "loss_parts",
    "loss_quadratic",
    "loss_total",
    "nonempty_rows",
    "products",
    "solve_block",
]

INIT_CHUNK = 1 << 16
_CHUNK_NNZ = 1 << 18


def init_rows(start: int, stop: int, factors: int, seed: int, side: int) -> np.ndarray:
    """Initial factors of rows ``start:stop``: uniform in [0, 0.01) like implicit, float32.

    Rows come in fixed chunks of 65536, chunk ``c`` drawn from the seed sequence ``(seed, side, c)``:
    the same rows whatever the number of blocks, so both engines start from identical factors.
    """
    out = np.empty((max(stop - start, 0), factors), dtype=np.float32)
    if stop <= start:
        return out
    for c in range(start // INIT_CHUNK, (stop - 1) // INIT_CHUNK + 1):
        lo, hi = c * INIT_CHUNK, (c + 1) * INIT_CHUNK
        chunk = np.random.default_rng([seed, side, c]).random((INIT_CHUNK, factors), dtype=np.float32)
        a, b = max(lo, start), min(hi, stop)
        out[a - start : b - start] = chunk[a - lo : b - lo] * np.float32(0.01)
    return out


def id_hash(ids) -> np.ndarray:
    """A stable 64-bit hash of each id (integers or strings; the same in every process and run)."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(ids), categorize=False)


def init_factors(ids, factors: int, seed: int, side: int) -> np.ndarray:
    """Initial factors of the rows with these ids: uniform in [0, 0.01) like implicit, float32.

    Each value is a hash of ``(id, column, seed, side)``, so a row starts from the same factors
    whatever its position, block or engine: a fit does not depend on how the ids were cut into blocks.
    """
    from ..data._synthetic import _GOLD, _mix

    h = id_hash(ids)
    key = _mix(
        np.array([(seed * 0x632BE59BD9B4E019 + side * 0x8CB92BA72F3D8DD7 + 1) % (1 << 64)], dtype=np.uint64)
    )
    cols = (np.arange(1, factors + 1, dtype=np.uint64) * _GOLD)[None, :]
    out = np.empty((len(h), factors), dtype=np.float32)
    for lo in range(0, len(h), INIT_CHUNK):
        x = _mix((h[lo : lo + INIT_CHUNK, None] ^ key) + cols)
        out[lo : lo + INIT_CHUNK] = (x >> np.uint64(40)).astype(np.float32) * np.float32(0.01 / (1 << 24))
    return out


_FASTMATH = {"reassoc", "nsz", "contract", "arcp"}  # vectorised sums; NaN and inf still propagate

# a piece's stored values are visited by tiles of the fixed side's rows of this many bytes of
# factors (so the rows they read stay in a core's L2 cache), row by row within a tile
TILE_BYTES = 2 << 20


class Piece(NamedTuple):
    """Stored values of a block of rows against a block of the other side, in tile order.

    ``rows`` (the solved side, local), ``cols`` (the fixed side, local), ``data`` (confidences):
    int32, int32, float32, sorted by ``(cols // tile, rows, cols)``; ``shape``: (rows, cols).
    """

    rows: np.ndarray
    cols: np.ndarray
    data: np.ndarray
    shape: tuple

    @property
    def nnz(self) -> int:
        return len(self.data)


def as_piece(C, factors: int = 64) -> Piece:
    """A sparse matrix as a :class:`Piece` whose tiles of columns hold ``TILE_BYTES`` of factors.

    Measured with 64 factors (one thread, ns per stored value and product): 27k rows against
    138k columns, 47.6 in row order, 12.3 by tiles; 200k x 50k at 10 values a row, 38.4 and 29.5.
    """
    C = sp.csr_matrix(C)
    C.sort_indices()
    coo = C.tocoo()  # row by row, columns sorted within a row
    tile = max(1, TILE_BYTES // (4 * int(factors)))
    tiles = coo.col // tile
    key = tiles.astype(np.uint16) if C.shape[1] // tile < (1 << 16) else tiles
    order = np.argsort(key, kind="stable")  # a radix sort for 16-bit keys: linear
    del tiles, key
    # one gathered copy each (astype copies only when the type differs)
    return Piece(
        coo.row[order].astype(np.int32, copy=False),
        coo.col[order].astype(np.int32, copy=False),
        coo.data[order].astype(np.float32, copy=False),
        (int(C.shape[0]), int(C.shape[1])),
    )


def cut_pieces(C, offsets, factors: int = 64) -> list:
    """The :class:`Piece` of a CSR block against each column range ``offsets[j]:offsets[j + 1]``,
    transposed (the columns' rows as rows), each equal to ``as_piece(C[:, lo:hi].T)``.

    Read straight from the CSR, a tile of the block's rows at a time: a counting sort of the tile's
    stored values by column is the tile order, so nothing but the pieces themselves is allocated
    (no CSC copy, COO copy or argsort: about 40 bytes a stored value less at the peak of a fit).
    """
    C = sp.csr_matrix(C)
    n_rows = C.shape[0]
    tile = max(1, TILE_BYTES // (4 * int(factors)))
    indices = C.indices.astype(np.int32, copy=False)
    data = C.data.astype(np.float32, copy=False)
    pieces = []
    for j in range(len(offsets) - 1):
        lo, hi = int(offsets[j]), int(offsets[j + 1])
        n = _count_in_range(indices, lo, hi)
        rows, cols, vals = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float32)
        _cut_tiles(C.indptr, indices, data, lo, hi, tile, rows, cols, vals)
        pieces.append(Piece(rows, cols, vals, (hi - lo, int(n_rows))))
    return pieces


@numba.njit(cache=True, nogil=True)
def _count_in_range(indices, lo, hi):  # pragma: no cover - compiled
    n = 0
    for c in indices:
        if lo <= c < hi:
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _cut_tiles(indptr, indices, data, lo, hi, tile, rows, cols, vals):  # pragma: no cover - compiled
    """Fill one transposed piece: per tile of rows, the values of columns ``lo:hi`` by column, then
    by row (a stable counting sort; the CSR visits rows in order)."""
    n_rows = len(indptr) - 1
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    at = 0
    for t0 in range(0, n_rows, tile):
        t1 = min(t0 + tile, n_rows)
        counts[:] = 0
        for r in range(t0, t1):
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                if lo <= c < hi:
                    counts[c - lo + 1] += 1
        for q in range(1, hi - lo + 1):
            counts[q] += counts[q - 1]
        for r in range(t0, t1):
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                if lo <= c < hi:
                    dst = at + counts[c - lo]
                    counts[c - lo] += 1
                    rows[dst] = c - lo
                    cols[dst] = r
                    vals[dst] = data[p]
        at += counts[hi - lo - 1] if hi > lo else 0


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _products_numba(rows, cols, data, F, V, residual, out):  # pragma: no cover - compiled
    k = out.shape[1]
    for idx in range(len(data)):
        s = rows[idx]
        f = cols[idx]
        c = data[idx]
        d = np.float32(0.0)
        for q in range(k):
            d += F[f, q] * V[s, q]
        conf = abs(c)
        if residual:
            w = (c if c > 0 else np.float32(0.0)) - (conf - np.float32(1.0)) * d
        else:
            w = (conf - np.float32(1.0)) * d
        for q in range(k):
            out[s, q] += w * F[f, q]


def _chunks(n: int):
    """Ranges of at most ``_CHUNK_NNZ`` stored values (bounds the numpy paths' temporaries)."""
    size = _CHUNK_NNZ
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


def products(C, F: np.ndarray, V: np.ndarray, residual: bool, out=None, kernel="numba"):
    """The stored values' part of implicit's CG products, added into ``out`` (float32, rows of ``C``).

    ``C``: confidences (a :class:`Piece`, or a sparse matrix), rows the solved side, columns rows of
    ``F`` (the fixed side's factors); ``V``: one vector per row of ``C`` (the current factors ``x``,
    or a CG direction ``p``). Per stored value ``c`` at ``(s, f)``, with ``d = F[f] . V[s]``, adds
    ``(c+ - (|c| - 1) d) F[f]`` to row ``s`` when ``residual`` (the sum in
    ``r = Y^T C_u p_u - Y^T (C_u - I) Y x``), else ``(|c| - 1) d F[f]`` (the sum in ``Ap``). Linear in
    the stored values: the product for a whole row is the sum of the products of its pieces by the
    fixed side's blocks, which is how the distributed engine solves a block without ever holding the
    whole other side. ``kernel``: ``"numba"`` (compiled, float32 like implicit's) or ``"numpy"``
    (vectorised, by chunks of stored values).
    """
    F = np.ascontiguousarray(F, dtype=np.float32)
    V = np.ascontiguousarray(V, dtype=np.float32)
    P = C if isinstance(C, Piece) else as_piece(C, F.shape[1])
    if out is None:
        out = np.zeros((P.shape[0], F.shape[1]), dtype=np.float32)
    if P.nnz == 0:
        return out
    if kernel == "numba":
        _products_numba(P.rows, P.cols, P.data, F, V, bool(residual), out)
        return out
    for lo, hi in _chunks(P.nnz):
        rows, cols, c = P.rows[lo:hi], P.cols[lo:hi], P.data[lo:hi]
        dots = np.einsum("nk,nk->n", F[cols], V[rows])
        w = (np.where(c > 0, c, 0) - (np.abs(c) - 1) * dots) if residual else (np.abs(c) - 1) * dots
        out += sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=P.shape) @ F
    return out


def _rowdot(a, b):
    return np.einsum("uk,uk->u", a, b)


def cg_start(X: np.ndarray, A0: np.ndarray, nonempty: np.ndarray, *stored) -> dict:
    """implicit's CG start for a block of rows: ``r = -A0 x + sum(stored)``, ``p = r``.

    ``stored``: the :func:`products` (``residual=True``) of the block's pieces, summed here. Rows with
    no stored values, or a residual below 1e-20, are inactive from the start (as in implicit).
    """
    x = np.array(X, dtype=np.float32, copy=True)
    r = _sum(stored, x.shape)
    r -= x @ A0
    rsold = _rowdot(r, r)
    return {"x": x, "r": r, "p": r.copy(), "rsold": rsold, "active": (rsold >= 1e-20) & nonempty}


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _cg_step_rows(x, r, p, Ap, rsold, active, last):  # pragma: no cover - compiled
    n, k = x.shape
    for u in range(n):
        if not active[u]:
            continue
        denom = np.float32(0.0)
        for q in range(k):
            denom += p[u, q] * Ap[u, q]
        alpha = rsold[u] / denom
        for q in range(k):
            x[u, q] += alpha * p[u, q]
            r[u, q] -= alpha * Ap[u, q]
        if last:
            continue
        rsnew = np.float32(0.0)
        for q in range(k):
            rsnew += r[u, q] * r[u, q]
        if rsnew < 1e-20:
            active[u] = False
            continue
        beta = rsnew / rsold[u]
        for q in range(k):
            p[u, q] = r[u, q] + beta * p[u, q]
        rsold[u] = rsnew


def cg_step(state: dict, A0: np.ndarray, *stored, last: bool = False) -> dict:
    """One CG step of every active row, with ``Ap = A0 p + sum(stored)`` (``residual=False`` products).

    A row whose squared residual falls below 1e-20 stops, as in implicit. The state's arrays are
    updated in place and returned (three copies of a block saved per step). That is safe in the
    engine: a step runs where its state lives, so a lost state is lost with its step's result and
    Dask recomputes both from earlier keys; its direction's copies on other workers are not touched.
    """
    Ap = _sum(stored, state["p"].shape)
    Ap += state["p"] @ A0
    _cg_step_rows(state["x"], state["r"], state["p"], Ap, state["rsold"], state["active"], bool(last))
    return state


def cg_direction(state: dict) -> np.ndarray:
    return state["p"]


def cg_result(state: dict, nonempty: np.ndarray) -> np.ndarray:
    """The solved rows; rows without stored values are zero (as in implicit)."""
    x = state["x"]
    x[~nonempty] = 0
    return x


def _sum(parts, shape):
    if not parts:
        return np.zeros(shape, dtype=np.float32)
    out = np.array(parts[0], dtype=np.float32, copy=True)
    for part in parts[1:]:
        out += part
    return out


GRAM_CHUNK_ROWS = 1 << 16


def gram(F: np.ndarray) -> np.ndarray:
    """``F^T F`` in float64, by chunks of rows (a float64 copy of a whole block would double it)."""
    F = np.asarray(F)
    k = F.shape[1] if F.ndim == 2 else 0
    G = np.zeros((k, k), dtype=np.float64)
    for lo in range(0, len(F), GRAM_CHUNK_ROWS):
        c = np.asarray(F[lo : lo + GRAM_CHUNK_ROWS], dtype=np.float64)
        G += c.T @ c
    return G


def a0(G: np.ndarray, regularization: float) -> np.ndarray:
    """``G + regularization * I`` in float32 (``G``: the fixed side's Gram matrix)."""
    return (np.asarray(G, dtype=np.float64) + regularization * np.eye(len(G))).astype(np.float32)


def nonempty_rows(C: sp.csr_matrix) -> np.ndarray:
    return np.diff(C.indptr) > 0


def solve_block(C, X, Y, regularization, cg_steps, kernel="numba"):
    """implicit's conjugate-gradient update of the rows of ``X`` given ``Y`` (a new array).

    The same arithmetic as the distributed engine's, with the other side in one piece:
    :func:`cg_start`, then ``cg_steps`` :func:`cg_step`, each from :func:`products`.
    """
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    A0 = a0(gram(Y), regularization)
    nonempty = nonempty_rows(sp.csr_matrix(C))
    C = as_piece(C, Y.shape[1])
    state = cg_start(X, A0, nonempty, products(C, Y, X, True, kernel=kernel))
    for step in range(cg_steps):
        state = cg_step(
            state, A0, products(C, Y, state["p"], False, kernel=kernel), last=step == cg_steps - 1
        )
    return cg_result(state, nonempty)


def loss_nonzeros(C, F: np.ndarray, V: np.ndarray):
    """The stored values' part of implicit's loss for rows ``V`` against columns ``F``:
    ``(sum ((|c|-1) d^2 - 2 c+ d + |c|), sum |c|, nnz)`` in float64, ``d = F[f] . V[s]``.
    ``C``: a :class:`Piece` or a sparse matrix."""
    P = C if isinstance(C, Piece) else as_piece(C, np.shape(F)[1])
    num, total_conf = 0.0, 0.0
    for lo, hi in _chunks(P.nnz):
        c = P.data[lo:hi].astype(np.float64)
        conf = np.abs(c)
        Fi = np.asarray(F[P.cols[lo:hi]], dtype=np.float64)
        dots = np.einsum("nk,nk->n", Fi, np.asarray(V[P.rows[lo:hi]], dtype=np.float64))
        num += float(np.sum((conf - 1) * dots * dots - 2 * np.where(c > 0, c, 0) * dots + conf))
        total_conf += float(conf.sum())
    return num, total_conf, P.nnz


def loss_parts(C: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, gram: np.ndarray, regularization: float):
    """This block's share of implicit's loss: ``(numerator, total confidence, stored values)``.

    Numerator: ``sum_u [x_u^T Y^T Y x_u + sum_i ((|c|-1) (y_i.x_u)^2 - 2 c+ (y_i.x_u) + |c|)]
    + regularization * |X_block|^2`` (in float64), so that
    ``loss = (sum of numerators + regularization * |Y|^2) / (total confidence + n_users n_items - nnz)``.
    """
    num, total_conf, nnz = loss_nonzeros(C, Y, X)
    return num + loss_quadratic(X, gram, regularization), total_conf, nnz


def loss_quadratic(X: np.ndarray, gram: np.ndarray, regularization: float) -> float:
    """``sum_u x_u^T G x_u + regularization |X|^2`` of a block (float64, by chunks of rows)."""
    G = np.asarray(gram, dtype=np.float64)
    total = 0.0
    for lo in range(0, len(X), INIT_CHUNK):
        X64 = np.asarray(X[lo : lo + INIT_CHUNK], dtype=np.float64)
        total += float(np.einsum("uk,uk->", X64 @ G, X64)) + regularization * float(
            np.einsum("uk,uk->", X64, X64)
        )
    return total


def loss_total(parts, Y, regularization: float, n_users: int, n_items: int) -> float:
    """Combine :func:`loss_parts` of every user block into implicit's normalised loss.

    ``Y``: the item factors, or their squared norm ``|Y|^2`` (the trace of their Gram matrix).
    """
    num = sum(p[0] for p in parts)
    conf = sum(p[1] for p in parts)
    nnz = sum(p[2] for p in parts)
    if np.ndim(Y) == 0:
        y_sq = float(Y)
    else:
        Y64 = np.asarray(Y, dtype=np.float64)
        y_sq = float(np.einsum("ik,ik->", Y64, Y64))
    num += regularization * y_sq
    return num / (conf + float(n_users) * float(n_items) - nnz)
