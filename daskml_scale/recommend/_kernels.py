"""Per-block kernels of ALS: factor initialisation, the conjugate-gradient solve, the loss.

The solve is implicit's: ``implicit.cpu._als.least_squares_cg`` (each row solved independently
given the other side's factors, so a block of rows gives exactly the rows of a whole-matrix solve);
:func:`cg_numpy` is the same conjugate-gradient update in numpy, used where that private module is
missing. :func:`loss_parts` is implicit's ``calculate_loss`` split into per-block sums.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "cg_numpy",
    "has_implicit_cg",
    "id_hash",
    "init_factors",
    "init_rows",
    "loss_parts",
    "loss_total",
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


def has_implicit_cg() -> bool:
    """Whether implicit's compiled CG solver (a private module) is importable."""
    try:
        from implicit.cpu import _als  # noqa: F401
    except ImportError:
        return False
    return hasattr(_als, "least_squares_cg")


def _row_chunks(indptr: np.ndarray, max_nnz: int = _CHUNK_NNZ):
    """Row ranges holding at most ``max_nnz`` stored values each (a single row may exceed it)."""
    n = len(indptr) - 1
    start = 0
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + max_nnz, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def cg_numpy(C: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, A0: np.ndarray, cg_steps: int = 3) -> None:
    """implicit's conjugate-gradient update of the rows of ``X`` in place, vectorised over rows.

    ``A0`` is ``Y.T @ Y + regularization * I``. Per row ``u``: residual
    ``r = Y^T C_u p_u - (A0 + Y^T (C_u - I) Y) x_u``, then ``cg_steps`` standard CG steps, stopping a row
    when its squared residual falls below 1e-20; rows without stored values are set to zero.
    Negative values mean "disliked" with confidence ``|c|``, as in implicit.
    """
    A0 = A0.astype(X.dtype, copy=False)
    for lo, hi in _row_chunks(C.indptr):
        sub = C[lo:hi]
        x = X[lo:hi]
        counts = np.diff(sub.indptr)
        empty = counts == 0
        rows = np.repeat(np.arange(hi - lo), counts)
        cols = sub.indices
        c = sub.data.astype(X.dtype)
        conf = np.abs(c)
        wgt = conf - 1
        pos = np.where(c > 0, c, 0).astype(X.dtype)
        Yi = Y[cols]

        def spmm(values, _indices=sub.indices, _indptr=sub.indptr, _shape=sub.shape):
            return sp.csr_matrix((values, _indices, _indptr), shape=_shape) @ Y

        dots = np.einsum("nk,nk->n", Yi, x[rows])
        r = -(x @ A0) + spmm(pos - wgt * dots)
        p = r.copy()
        rsold = np.einsum("uk,uk->u", r, r)
        active = (rsold >= 1e-20) & ~empty
        for _ in range(cg_steps):
            if not active.any():
                break
            Ap = p @ A0 + spmm(wgt * np.einsum("nk,nk->n", Yi, p[rows]))
            denom = np.einsum("uk,uk->u", p, Ap)
            alpha = np.where(active, rsold / np.where(active, denom, 1), 0).astype(X.dtype)
            x += alpha[:, None] * p
            r -= alpha[:, None] * Ap
            rsnew = np.einsum("uk,uk->u", r, r)
            active &= rsnew >= 1e-20
            beta = np.where(active, rsnew / np.where(rsold > 0, rsold, 1), 0).astype(X.dtype)
            p = r + beta[:, None] * p
            rsold = np.where(active, rsnew, rsold)
        x[empty] = 0
        X[lo:hi] = x


def solve_block(C, X, Y, regularization, cg_steps, kernel, num_threads=1, gram=None):
    """New factors of a block of rows given the other side's factors ``Y`` (input left untouched)."""
    X = np.array(X, dtype=np.float32, copy=True)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    if kernel == "implicit":
        from implicit.cpu import _als

        _als.least_squares_cg(C, X, Y, regularization, num_threads=num_threads, cg_steps=cg_steps)
    else:
        gram = Y.T @ Y if gram is None else gram
        A0 = (gram + regularization * np.eye(Y.shape[1])).astype(np.float32)
        cg_numpy(C, X, Y, A0, cg_steps)
    return X


def loss_parts(C: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, gram: np.ndarray, regularization: float):
    """This block's share of implicit's loss: ``(numerator, total confidence, stored values)``.

    Numerator: ``sum_u [x_u^T Y^T Y x_u + sum_i ((|c|-1) (y_i.x_u)^2 - 2 c+ (y_i.x_u) + |c|)]
    + regularization * |X_block|^2`` (in float64), so that
    ``loss = (sum of numerators + regularization * |Y|^2) / (total confidence + n_users n_items - nnz)``.
    """
    X64 = X.astype(np.float64)
    num = float(np.einsum("uk,uk->", X64 @ gram.astype(np.float64), X64))
    total_conf = 0.0
    for lo, hi in _row_chunks(C.indptr):
        sub = C[lo:hi]
        rows = np.repeat(np.arange(lo, hi), np.diff(sub.indptr))
        c = sub.data.astype(np.float64)
        conf = np.abs(c)
        dots = np.einsum("nk,nk->n", Y[sub.indices].astype(np.float64), X64[rows])
        num += float(np.sum((conf - 1) * dots * dots - 2 * np.where(c > 0, c, 0) * dots + conf))
        total_conf += float(conf.sum())
    num += regularization * float(np.einsum("uk,uk->", X64, X64))
    return num, total_conf, int(C.nnz)


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
