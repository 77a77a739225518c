"""Factor blocks: factors held as one block per worker task, and how blocks reach each other's solves.

A half-iteration of ALS solves every block of one side given the other side's factors. Here no
process assembles the other side: each block's CSR is rewritten once (:func:`route`) to columns
numbered within the rows it really uses, grouped by the other side's block ("needs", Spark's in/out
blocks). Every half-iteration then ships, worker to worker, only those rows (:func:`take_rows`,
run where the factor block lives) plus the other side's Gram matrix (k x k, a tree sum of per-block
Grams). implicit's solver forms its Gram matrix from the rows it is given, so the rows a block does
not use are stood for by ``k`` extra rows whose Gram matrix is theirs (:func:`solve_routed`).

The fit's other work over blocks lives here too: confidences and BM25 statistics computed on the
workers, the loss from per-block parts, tree sums of small results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _kernels as K
from ._matrix import apply_confidence

__all__ = [
    "FactorBlocks",
    "bm25_on_workers",
    "confidence_block",
    "gather_blocks",
    "gram",
    "loss",
    "max_conf",
    "on_cluster",
    "route",
    "solve_routed",
    "take_rows",
    "tree_sum",
]


@dataclass
class FactorBlocks:
    """One side's factors as blocks: ``ids[b]`` (sorted ids) and ``factors[b]`` (float32 rows).

    Entries are Dask futures on a cluster (or numpy arrays in process); ``offsets[b]`` is the global
    row of block ``b``'s first id (``offsets[-1]`` rows in all).
    """

    ids: list
    factors: list
    offsets: np.ndarray

    @property
    def n_blocks(self) -> int:
        return len(self.factors)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])


def route(C: sp.csr_matrix, other_offsets: np.ndarray, full_share: float = 0.5):
    """Rewrite a block's CSR to local columns; returns ``(C_local, needs)``.

    ``needs[j]`` are the rows of the other side's block ``j`` that this block's stored values use
    (sorted, relative to that block), or all of that block's rows when they are at least
    ``full_share`` of them (shipping the whole block then costs at most twice the minimum, and a
    block that receives the whole other side solves against exactly the matrix implicit would use).
    ``C_local``'s column ``c`` is the ``c``-th of those rows taken in block order.
    """
    cols = np.unique(C.indices).astype(np.int64)
    where = np.searchsorted(cols, other_offsets)
    needs, kept = [], []
    for j in range(len(other_offsets) - 1):
        lo, hi = int(other_offsets[j]), int(other_offsets[j + 1])
        used = cols[where[j] : where[j + 1]]
        if hi > lo and len(used) >= full_share * (hi - lo):
            used = np.arange(lo, hi, dtype=np.int64)
        needs.append(used - lo)
        kept.append(used)
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    local = sp.csr_matrix(
        (C.data, np.searchsorted(kept, C.indices).astype(C.indices.dtype), C.indptr),
        shape=(C.shape[0], len(kept)),
    )
    return local, needs


def local_of(routed):
    return routed[0]


def needs_of(routed, j: int):
    return routed[1][j]


def take_rows(F: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of a factor block another block's solve needs (runs where ``F`` lives)."""
    if len(rows) == len(F):
        return F
    return F[rows]


def gram(F: np.ndarray) -> np.ndarray:
    """``F^T F`` in float64."""
    F = np.asarray(F, dtype=np.float64)
    return F.T @ F


def add(*grams):
    return sum(grams)


def _complement_rows(G: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``k`` rows ``R`` with ``R^T R = G - Y^T Y`` (the Gram matrix of the rows left out), float32."""
    M = G - gram(Y)
    M = (M + M.T) / 2
    w, V = np.linalg.eigh(M)
    return (np.sqrt(np.clip(w, 0.0, None))[:, None] * V.T).astype(np.float32)


def solve_routed(C_local, X, G, n_other: int, regularization, cg_steps, kernel, num_threads, *pieces):
    """New factors of a block given the rows of the other side it uses (``pieces``) and its Gram ``G``.

    Equal to a solve against the whole other side: the CG update of a row reads the other side only
    through its stored values' rows and the full Gram matrix.
    """
    Y = np.ascontiguousarray(np.concatenate(pieces) if len(pieces) > 1 else pieces[0], dtype=np.float32)
    if kernel == "implicit":
        if len(Y) < n_other:  # stand-in rows carrying the Gram matrix of the rows not shipped
            Y = np.concatenate([Y, _complement_rows(G, Y)])
        return K.solve_block(C_local, X, Y, regularization, cg_steps, kernel, num_threads=num_threads)
    return K.solve_block(C_local, X, Y, regularization, cg_steps, kernel, num_threads=num_threads, gram=G)


def loss_routed(C_local, X, G, regularization, *pieces):
    """:func:`~daskml_scale.recommend._kernels.loss_parts` of a routed block."""
    Y = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return K.loss_parts(C_local, X, Y, G, regularization)


def n_nonfinite(F) -> int:
    return int((~np.isfinite(F).all(axis=1)).sum())


def concat(*arrays):
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


# ------------------------------------------------------------------ work over blocks (the fit)
def max_conf(C) -> float:
    """Largest absolute confidence of a block."""
    return float(np.abs(C.data).max()) if C.nnz else 0.0


def tree_sum(runner, parts: list):
    """Sum small objects (Gram matrices, loss parts) on the workers, at most 8 per task."""
    while len(parts) > 1:
        parts = [runner.submit(add, *parts[j : j + 8]) for j in range(0, len(parts), 8)]
    return parts[0]


def loss(runner, Cu, X, Y, needs, regularization, n_users, n_items) -> float:
    """implicit's training loss of the current factors, from per-block parts (small numbers)."""
    s = runner.submit
    G = tree_sum(runner, [s(gram, F) for F in Y])
    parts = [
        s(
            loss_routed,
            Cu[b],
            X[b],
            G,
            regularization,
            *[s(take_rows, Y[j], needs[b][j]) for j in range(len(Y))],
        )
        for b in range(len(Cu))
    ]
    parts, G = runner.gather([parts, G])  # small: three numbers per block and k x k
    return K.loss_total(parts, float(np.trace(G)), regularization, n_users, n_items)


def bm25_on_workers(runner, bm, conf):
    """implicit's BM25 statistics as arrays on the workers: item length norms and user idf."""
    s = runner.submit
    item_sums = [s(_row_sums, C) for C in bm.items]
    totals = runner.gather([s(np.sum, x) for x in item_sums])  # small: one number per block
    mean = float(sum(totals)) / max(bm.n_items, 1)
    norms = [s(_length_norm, x, mean, conf["b"]) for x in item_sums]
    idf = [s(_idf, C, bm.n_items) for C in bm.users]
    return (s(concat, *norms), s(concat, *idf))


def _row_sums(C):
    return np.asarray(C.sum(axis=1)).ravel()


def _length_norm(sums, mean, b):
    return (1.0 - b) + b * sums / (mean if mean > 0 else 1.0)


def _idf(C, n_items):
    return np.log(float(n_items)) - np.log1p(np.diff(C.indptr).astype(np.float64))


def confidence_block(block, offset, **kwargs):
    """Confidences of a raw block whose first row is ``offset``."""
    return apply_confidence(block, offset=int(offset), **kwargs)


# --------------------------------------------------------------- blocks held as futures or arrays
def on_cluster(parts) -> bool:
    """Whether these blocks are futures on a cluster (else arrays in this process)."""
    from distributed import Future

    return any(isinstance(p, Future) for p in parts)


def gather_blocks(parts) -> list:
    """The blocks as arrays in this process (futures gathered from their client)."""
    from distributed import Future

    futures = [p for p in parts if isinstance(p, Future)]
    return futures[0].client.gather(list(parts)) if futures else list(parts)
