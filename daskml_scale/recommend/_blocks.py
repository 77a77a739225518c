"""Factor blocks: factors held as one block per worker task, and how a half-iteration uses them.

A half-iteration of ALS solves every block of one side given the other side's factors. No process
assembles the other side, and no task holds more than a block of it. Each block's confidences are
cut once by the other side's blocks (:func:`split_pieces`) and stay with this side's factors. A CG
step of the other side's block ``t`` then needs, from this side, only a sum over stored values
(``Ap``, or the first residual), and that sum is a sum over this side's blocks: block ``t``'s
vectors (its rows x k) travel to each worker, which adds the products of the blocks it holds
(:func:`partial_products`), and the per-worker partials travel back to block ``t``'s worker, which
takes the CG step (:func:`half_step`; Spark MLlib's ALS moves factor rows the other way). When the
fixed side is the smaller one and fits a task's memory budget, it is cheaper to bring it whole to
each solved block instead (:func:`half_step_gathered`); :func:`gather_mode` decides.

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
    "confidences",
    "gather_blocks",
    "side_gram",
    "loss",
    "conf_stats",
    "on_cluster",
    "gather_mode",
    "half_step",
    "half_step_gathered",
    "partial_products",
    "raw_seen",
    "seen_blocks",
    "split_pieces",
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


def split_pieces(C: sp.csr_matrix, other_offsets: np.ndarray, factors: int) -> list:
    """Cut a block's confidences by the other side's blocks, each piece transposed.

    ``C``: this block's rows, columns numbered over the whole other side. Piece ``j`` holds the
    stored values between this block and the other side's block ``j``, with that block's rows
    (local) as rows and this block's rows as columns
    (:class:`~daskml_scale.recommend._kernels.Piece`, 12 bytes a value, tiled for the cache): the
    rows the other side solves, against the factors that stay here. Together they hold ``C`` once.
    """
    return K.cut_pieces(C, other_offsets, factors)


def partial_products(t: int, V: np.ndarray, residual: bool, kernel: str, *held) -> np.ndarray:
    """One worker's share of the CG products of the other side's block ``t`` (rows ``V``).

    ``held``: ``pieces, F`` pairs of the blocks of this side held on this worker; each adds
    :func:`~daskml_scale.recommend._kernels.products` of its piece ``t`` against its factors ``F``.
    """
    out = np.zeros(np.shape(V), dtype=np.float32)
    for pieces, F in zip(held[::2], held[1::2]):
        K.products(pieces[t], F, V, residual, out=out, kernel=kernel)
    return out


def loss_share(t: int, V: np.ndarray, *held):
    """One worker's share of the loss over the stored values of the other side's block ``t``."""
    parts = [K.loss_nonzeros(pieces[t], F, V) for pieces, F in zip(held[::2], held[1::2])]
    return tuple(sum(p[i] for p in parts) for i in range(3)) if parts else (0.0, 0.0, 0)


def side_gram(runner, F: list):
    """The Gram matrix of one side's blocks ``F``: each block's ``F^T F`` where it lives, then a tree
    sum on the workers (a future, k x k float64)."""
    return tree_sum(runner, [runner.submit_to(f, K.gram, Ff) for f, Ff in enumerate(F)])


def add(*grams):
    return sum(grams)


def n_nonfinite(F, chunk: int = 1 << 16) -> int:
    """Rows of a factor block with a NaN or inf, by chunks of rows (a whole-block mask is a quarter
    of the block: 288 MiB for 4.7M users at 64 factors, the largest transient of a fit's iteration)."""
    return sum(int((~np.isfinite(F[lo : lo + chunk]).all(axis=1)).sum()) for lo in range(0, len(F), chunk))


def concat(*arrays):
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


# ------------------------------------------------------------------ work over blocks (the fit)
def conf_stats(C) -> tuple[float, int]:
    """Largest absolute confidence of a block and its stored values (zero confidences are dropped)."""
    return (float(np.abs(C.data).max()) if C.nnz else 0.0), int(C.nnz)


def tree_sum(runner, parts: list):
    """Sum small objects (Gram matrices, loss parts) on the workers, at most 8 per task."""
    while len(parts) > 1:
        parts = [runner.submit(add, *parts[j : j + 8]) for j in range(0, len(parts), 8)]
    return parts[0]


def by_worker(runner, n_blocks: int) -> list:
    """The blocks held on each worker: ``runner.submit_to(w, ...)`` runs where blocks ``w, w + W, ...``
    live (blocks are dealt round-robin over the workers)."""
    W = max(1, min(runner.n_workers(), n_blocks))
    return [list(range(w, n_blocks, W)) for w in range(W)]


def half_step(runner, pieces, F, T, nonempty, regularization, cg_steps, kernel):
    """New factors of every block of one side (``T``) given the other side's blocks ``F``.

    ``pieces[f][t]``: the stored values between fixed block ``f`` and solved block ``t``, held with
    ``F[f]``. Each of the ``1 + cg_steps`` CG products of block ``t`` is summed from one partial per
    worker, computed where the fixed blocks are (:func:`partial_products`); only block ``t``'s
    vectors travel, so no task ever holds more than a block of either side. Returns futures.
    """
    at, s = runner.submit_to, runner.submit
    A0 = s(K.a0, side_gram(runner, F), regularization)
    slots = by_worker(runner, len(F))

    def partials(t, V, residual):
        return [
            at(w, partial_products, t, V, residual, kernel, *[x for f in fs for x in (pieces[f], F[f])])
            for w, fs in enumerate(slots)
        ]

    state = [at(t, K.cg_start, Tt, A0, nonempty[t], *partials(t, Tt, True)) for t, Tt in enumerate(T)]
    for step in range(cg_steps):
        P = [at(t, K.cg_direction, st) for t, st in enumerate(state)]
        last = step == cg_steps - 1
        state = [at(t, K.cg_step, st, A0, *partials(t, P[t], False), last=last) for t, st in enumerate(state)]
    return [at(t, K.cg_result, st, nonempty[t]) for t, st in enumerate(state)]


def gather_mode(n_fixed: int, n_solved: int, factors: int, budget: float) -> bool:
    """Whether a half-step should bring the fixed side to the solved blocks (``True``) rather than
    send the solved blocks' vectors to the fixed side (:func:`half_step`).

    The smaller side moves: the fixed side when it has no more rows than the solved side and its
    factors (``4 * factors`` bytes a row) fit ``budget``, the memory one task may hold for it.
    """
    return n_fixed <= n_solved and 4.0 * factors * n_fixed <= budget


def solve_gathered(whole, X, nonempty, A0, cg_steps, kernel, *F):
    """New factors of a block from its stored values against the whole fixed side (``whole``: row
    chunks, see :func:`whole_piece`) and the fixed side's blocks ``F``, concatenated here.

    The same CG arithmetic as :func:`half_step`, chunk by chunk of rows (rows are independent), so
    the task holds the block, the fixed side and one chunk's CG state. The new rows overwrite
    ``X`` (one copy of the block saved): the fit submits a step only after every task that read the
    block's previous factors has finished (the other side's step, the loss, the checkpoint), and a
    lost block is lost with its old value, so Dask recomputes both from earlier keys.
    """
    Y = np.concatenate(F) if len(F) > 1 else np.ascontiguousarray(F[0])
    own = isinstance(X, np.ndarray) and X.dtype == np.float32 and X.flags.writeable and X.flags.c_contiguous
    out = X if own else np.array(X, dtype=np.float32)
    for lo, hi, C in whole:
        x, ne = out[lo:hi], nonempty[lo:hi]
        state = K.cg_start(x, A0, ne, K.products(C, Y, x, True, kernel=kernel))
        for step in range(cg_steps):
            Ap = K.products(C, Y, state["p"], False, kernel=kernel)
            state = K.cg_step(state, A0, Ap, last=step == cg_steps - 1)
        out[lo:hi] = K.cg_result(state, ne)
    return out


def half_step_gathered(runner, whole, F, T, nonempty, regularization, cg_steps, kernel):
    """Like :func:`half_step` with the fixed side ``F`` sent whole to each solved block's task
    (``whole[t]``: block ``t``'s stored values against the whole fixed side). One task per block;
    the fixed side is at most :func:`gather_mode`'s budget."""
    at, s = runner.submit_to, runner.submit
    A0 = s(K.a0, side_gram(runner, F), regularization)
    return [
        at(t, solve_gathered, whole[t], Tt, nonempty[t], A0, cg_steps, kernel, *F) for t, Tt in enumerate(T)
    ]


def loss(runner, pieces, fixed, travel, X, Y, regularization, n_users, n_items) -> float:
    """implicit's training loss of the current factors, from per-block parts (small numbers).

    ``pieces[f][t]``: the stored values between block ``f`` of one side (held with ``fixed[f]``)
    and block ``t`` of the other (``travel[t]``), as for a half-step; ``travel`` blocks go to them one
    at a time. ``X``/``Y``: the user and item blocks.
    """
    at = runner.submit_to
    G = side_gram(runner, Y)
    parts = [at(b, K.loss_quadratic, Xb, G, regularization) for b, Xb in enumerate(X)]
    slots = by_worker(runner, len(fixed))
    nz = [
        at(w, loss_share, t, Vt, *[x for f in fs for x in (pieces[f], fixed[f])])
        for t, Vt in enumerate(travel)
        for w, fs in enumerate(slots)
    ]
    quad, nz, G = runner.gather([parts, nz, G])  # small: a few numbers per block and k x k
    parts = [(q, 0.0, 0) for q in quad] + list(nz)
    return K.loss_total(parts, float(np.trace(G)), regularization, n_users, n_items)


WHOLE_CHUNK_BYTES = 8 << 20  # one row chunk's factors: its CG state is a few of these


def whole_piece(C, factors: int) -> list:
    """A block's own stored values against the whole other side, cut into chunks of rows (each a
    tiled :class:`~daskml_scale.recommend._kernels.Piece`): ``[(row_lo, row_hi, piece), ...]``."""
    C = sp.csr_matrix(C)
    rows = max(1, WHOLE_CHUNK_BYTES // (4 * int(factors)))
    n = C.shape[0]
    return [
        (lo, min(lo + rows, n), K.as_piece(C[lo : lo + rows], factors)) for lo in range(0, max(n, 1), rows)
    ]


# ---------------------------------------------------------- the training pairs, kept for top-N
def seen_blocks(runner, bm, pieces_u, pieces_i) -> list:
    """Each user block's training pairs as a boolean CSR (its users x all items), on its worker.

    Built at the end of a fit from the pieces it already holds, so that ``recommend_all`` excludes
    seen items without reading and routing the interactions again: from the user blocks' own
    pieces where they exist (no transfer), else from the item blocks' pieces for that user block
    (8 bytes a pair, worker to worker). Kept while the model lives: 5 bytes a pair plus a row pointer.
    The pieces hold no pair whose confidence is zero: the caller keeps these only when none was.
    """
    at = runner.submit_to
    nb_u, offsets = len(bm.user_offsets) - 1, bm.item_offsets
    out = []
    for b in range(nb_u):
        n_rows = int(bm.user_offsets[b + 1] - bm.user_offsets[b])
        if pieces_u is not None:
            out.append(at(b, _seen_of_own_pieces, pieces_u[b], offsets, n_rows))
        else:
            pairs = [at(j, _piece_pairs, pieces_i[j], b, int(offsets[j])) for j in range(len(pieces_i))]
            out.append(at(b, _seen_of_pairs, n_rows, int(offsets[-1]), *pairs))
    return out


def raw_seen(block) -> sp.csr_matrix:
    """A raw user block's stored pairs as a boolean CSR (its users x all items)."""
    block = sp.csr_matrix(block)
    return sp.csr_matrix(
        (np.ones(block.nnz, dtype=bool), block.indices.copy(), block.indptr.copy()), shape=block.shape
    )


def _piece_pairs(pieces, t: int, offset: int):
    """Piece ``t`` of an item block as a ``(user rows, item columns, column offset)`` part."""
    p = pieces[t]
    return p.rows, p.cols, offset


def _seen_of_pairs(n_rows: int, n_cols: int, *parts):
    from ._matrix import fill_pattern

    return fill_pattern(list(parts), n_rows, n_cols)


def _seen_of_own_pieces(pieces, item_offsets, n_rows: int):
    """A user block's pieces (rows: items of block ``j``, columns: this block's users) as its pairs."""
    parts = [(p.cols, p.rows, int(item_offsets[j])) for j, p in enumerate(pieces)]
    return _seen_of_pairs(n_rows, int(item_offsets[-1]), *parts)


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


def nonempty_of_raw(block, offset, **kwargs) -> np.ndarray:
    """Rows of a raw block with a nonzero confidence (its confidences live only in this task)."""
    return K.nonempty_rows(confidence_block(block, offset, **kwargs))


def confidences(runner, raw: list, offsets, side: str, needed: bool, kwargs: dict):
    """One side's confidence blocks (``None`` when not ``needed``) and its rows with a stored value.

    A side whose steps read nothing of its own (the other step gathers it) only counts its
    non-empty rows, each block's confidences living inside that one task. The caller drops the
    raw blocks once these are submitted: nothing here keeps a reference to them.
    """
    at = runner.submit_to
    if not needed:
        return None, [
            at(b, nonempty_of_raw, r, int(offsets[b]), orientation=side, **kwargs) for b, r in enumerate(raw)
        ]
    C = [at(b, confidence_block, r, int(offsets[b]), orientation=side, **kwargs) for b, r in enumerate(raw)]
    return C, [at(b, K.nonempty_rows, c) for b, c in enumerate(C)]


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
