"""Quantized factor matrices: float16, int8 and 4-bit codes with per-row scales, scored on their codes.

A row ``x`` (``k`` floats) is stored as codes ``q`` and one float32 scale ``s`` with ``x ~ s * q``:

``int8``
    symmetric, ``s = max|x| / 127``, ``q = round(x / s)`` in [-127, 127]: ``|x - s q| <= s / 2``.
``int4``
    symmetric, ``s = max|x| / 7``, ``q`` in [-7, 7], stored as ``q + 8`` in one nibble, two columns per
    byte (column ``2j`` in the low nibble): ``|x - s q| <= s / 2``.
``fp16``
    ``q = float16(x)`` and no scale: relative error <= 2**-11 in float16's normal range.

Scores are computed on the codes, one tile of items at a time: the tile's codes are cast to float32
and multiplied in place by their row scales, the users' codes (cast to float32 once per call, i.e.
per block of users) are multiplied with it by float32 GEMM inside implicit's top-k kernel (float32
rounding, as the float model; one kernel call per tile, the worker's threads as for float32), and
each user's scale, positive, is applied to its ``n`` winners only. An item matrix that fits in one
tile (<= 16 MiB as float32: ~65k items of 64 factors) keeps that tile between calls (not pickled),
so a worker builds it once for all its user blocks; a larger one is rebuilt tile by tile per call
and never formed whole: memory per call is bounded by the tile (``tile_rows`` item rows as float32)
and the output. The top-k kernel then does the same work as for float32 factors (27k x 64 items,
one thread: within +-10% of float32 users/s run to run, int8 and int4 alike; unpacking int4 codes ~1 ms
per 27k items). (A first version divided every score by the item scale inside the top-k kernel, and
merged candidates with a lexsort even for one tile: 0.82-0.91x of float32 users/s.) The integer
code products stay exact in float32 while ``|sum| < 2**24`` (``k * 127**2 < 2**24``: ``k <= 1040``
for int8), the bound ``quantize`` checks.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ParameterError, check_in

__all__ = ["METHODS", "QuantizedFactors", "quantize"]

METHODS = ("fp16", "int8", "int4")
_QMAX = {"int8": 127, "int4": 7}
_EXACT_K = {"int8": (1 << 24) // (127 * 127), "int4": (1 << 24) // 49}
_TILE_BYTES = 16 << 20  # float32 bytes of one item tile
_BATCH_ROWS = 1024  # query rows per GEMM


def _pack4(q: np.ndarray) -> np.ndarray:
    """Int codes in [-7, 7] of shape (n, k) -> uint8 (n, ceil(k / 2)), two nibbles per byte."""
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    if u.shape[1] % 2:
        u = np.concatenate([u, np.full((u.shape[0], 1), 8, dtype=np.uint8)], axis=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def _unpack4(packed: np.ndarray, k: int, dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`_pack4`: codes as ``dtype`` (exact small integers).

    Two strided nibble writes and one subtraction: 1.2 ms for a (27k, 64) matrix (a lookup table,
    ``table[packed]``, measured 20x slower). Not the cost of int4 scoring.
    """
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=dtype)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    out -= 8
    return out[:, :k]


class QuantizedFactors:
    """A factor matrix stored as low-precision codes and per-row scales.

    Build one with :func:`quantize`. Slicing rows (``q[lo:hi]``) gives another
    ``QuantizedFactors`` sharing the codes; :meth:`dequantize` inflates rows to float32 explicitly
    (for oracles and inspection: the scoring methods never call it on the whole matrix).

    Parameters
    ----------
    codes : ndarray
        ``int8`` (n, k) for int8, ``uint8`` (n, ceil(k / 2)) for int4, ``float16`` (n, k) for fp16.
    scales : ndarray of float32 (n,) or None
        Per-row scales (None for fp16).
    method : {'fp16', 'int8', 'int4'}
    n_cols : int
        ``k``, the number of factors (needed to unpack int4 codes of odd ``k``).

    Attributes
    ----------
    shape : tuple
        ``(n, k)`` of the matrix the codes stand for.
    nbytes : int
        Bytes of codes plus scales.
    """

    def __init__(self, codes: np.ndarray, scales: np.ndarray | None, method: str, n_cols: int):
        check_in("method", method, METHODS, "QuantizedFactors")
        self.codes = codes
        self.scales = scales
        self.method = method
        self.n_cols = int(n_cols)

    # ------------------------------------------------------------------------------- array-like
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), self.n_cols)

    @property
    def dtype(self):
        return self.codes.dtype

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + (0 if self.scales is None else self.scales.nbytes))

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            scales = None if self.scales is None else self.scales[rows]
            return QuantizedFactors(self.codes[rows], scales, self.method, self.n_cols)
        rows = np.asarray(rows)
        scales = None if self.scales is None else self.scales[rows]
        return QuantizedFactors(self.codes[rows], scales, self.method, self.n_cols)

    def __repr__(self) -> str:
        return f"QuantizedFactors(method={self.method!r}, shape={self.shape}, nbytes={self.nbytes})"

    def __array__(self, dtype=None, copy=None):
        """Explicit conversion (``np.asarray(q)``): the dequantized float32 matrix."""
        out = self.dequantize()
        return out if dtype is None else out.astype(dtype)

    # ------------------------------------------------------------------------------- codes
    def code_tile(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Codes of rows ``lo:hi`` as float32 (exact integers for int8/int4; fp16 values)."""
        c = self.codes[lo:hi]
        if self.method == "int4":
            return _unpack4(c, self.n_cols)
        return c.astype(np.float32)

    def row_scales(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        if self.scales is None:
            return np.ones(len(self.codes[lo:hi]), dtype=np.float32)
        return self.scales[lo:hi]

    def scaled_tile(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo:hi`` as float32 ``scale * code``, built in place in the float32 code tile.

        The scorer's item side, one tile (<= 16 MiB) at a time: the same memory as the codes cast
        to float32, and the GEMM then needs no per-score division by the item scales.
        """
        tile = np.ascontiguousarray(self.code_tile(lo, hi), dtype=np.float32)
        if self.scales is not None:
            tile *= self.scales[lo:hi, None]
        return tile

    def _cached_tile(self) -> np.ndarray:
        """:meth:`scaled_tile` of the whole matrix, kept on this object between calls.

        Only for a matrix that fits in one tile (<= 16 MiB of float32: ~65k items of 64 factors):
        a worker scores every user block against the same item tile without rebuilding it (10-25 ms
        per block at 27k x 64). Not pickled; slices start without it.
        """
        tile = self.__dict__.get("_tile")
        if tile is None:
            tile = self._tile = self.scaled_tile()
        return tile

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_tile", None)
        return state

    def dequantize(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo:hi`` as float32 ``scale * code`` (the values the codes stand for)."""
        return self.code_tile(lo, hi) * self.row_scales(lo, hi)[:, None]

    def gram(self) -> np.ndarray:
        """``X.T @ X`` in float64, accumulated tile by tile (``sum_t C_t^T diag(s_t^2) C_t``)."""
        k = self.n_cols
        out = np.zeros((k, k))
        for lo, hi in self._tiles():
            c = self.code_tile(lo, hi).astype(np.float64)
            out += c.T @ (c * (self.row_scales(lo, hi).astype(np.float64) ** 2)[:, None])
        return out

    def code_norms(self) -> np.ndarray:
        """Euclidean norm of each row's codes (float64; exact sum of squares for integer codes)."""
        out = np.empty(len(self))
        for lo, hi in self._tiles():
            c = self.code_tile(lo, hi).astype(np.float64)
            out[lo:hi] = np.sqrt(np.einsum("ik,ik->i", c, c))
        return out

    def _tiles(self, tile_rows: int | None = None):
        n = len(self)
        step = tile_rows or max(1024, _TILE_BYTES // (4 * max(self.n_cols, 1)))
        return [(lo, min(lo + step, n)) for lo in range(0, n, step)] or [(0, 0)]

    # ------------------------------------------------------------------------------- scoring
    def block_top_n(self, queries, n: int, seen: sp.csr_matrix | None = None, tile_rows=None):
        """Top ``n`` rows of this (item) matrix for each query row, scored on the codes.

        ``queries`` is a :class:`QuantizedFactors` (its codes are used, its scales applied to the
        scores) or a float array (fold-in vectors). Seen pairs (``seen``: queries x items CSR) are
        excluded. Returns ``(rows, cols, score, rank)`` like ``recommend._topn.top_n``: per row by
        score descending, ties by column ascending; scores are the dequantized dot products.
        """
        quantized = isinstance(queries, QuantizedFactors)
        m = len(queries)
        k = min(int(n), len(self))
        z = np.zeros(0, dtype=np.int64)
        if k == 0 or m == 0:
            return z, z, np.zeros(0), z
        q_scales = queries.row_scales().astype(np.float64) if quantized else None
        # the query side as float32 once per call (a user block's codes: as big as its float factors)
        qv_all = np.ascontiguousarray(queries.code_tile() if quantized else queries, dtype=np.float32)
        tiles = self._tiles(tile_rows)
        topk = _implicit_topk()
        threads = _threads()
        # implicit's kernel bounds its own memory (100 queries at a time): one call per tile; the
        # numpy fallback forms the scores, so it goes _BATCH_ROWS queries at a time
        batch = max(m, 1) if topk is not None else _BATCH_ROWS
        one, parts = len(tiles) == 1, []
        if not one:
            cand_ids = np.empty((m, k * len(tiles)), dtype=np.int64)
            cand_sc = np.empty((m, k * len(tiles)), dtype=np.float64)
        # outer loop on item tiles: each tile is scaled to float32 once per call (one task's users),
        # whatever the query count; the query side stays as codes, its scales applied to the k winners
        for t, (lo, hi) in enumerate(tiles):
            items = self._cached_tile() if len(tiles) == 1 else self.scaled_tile(lo, hi)
            kt = min(k, hi - lo)
            whole = lo == 0 and hi == len(self)
            seen_t = None if seen is None else (seen if whole else seen[:, lo:hi].tocsr())
            for a in range(0, m, batch):
                b = min(a + batch, m)
                sv = None if seen_t is None else seen_t[a:b]
                ids, sc = _tile_top(topk, items, qv_all[a:b], kt, sv, threads)
                if quantized:
                    sc *= q_scales[a:b, None]  # > 0: the order within a row is unchanged
                if one:  # already the per-row top k, best first: no merge
                    parts.append((a, ids, sc))
                    continue
                cand_ids[a:b, t * k : t * k + kt] = ids + lo
                cand_sc[a:b, t * k : t * k + kt] = sc
                if kt < k:
                    cand_ids[a:b, t * k + kt : (t + 1) * k] = 0
                    cand_sc[a:b, t * k + kt : (t + 1) * k] = -np.inf
        if one:
            return _flatten(parts, k)
        return _merge(cand_ids, cand_sc, k)


def _implicit_topk():
    try:
        from implicit.cpu.topk import topk
    except ImportError:
        return None
    return topk


def _threads() -> int:
    """Threads for implicit's top-k: the worker's (0, all cores, outside a worker), as for float32."""
    from ..recommend._runner import worker_threads

    return worker_threads()


def _tile_top(topk, items, queries, k, seen, threads=1):
    """Top ``k`` of one float32 item tile for float32 queries: ``(ids, scores)`` sorted best first
    (ties by id), -inf where filtered."""
    if topk is not None:
        ids, sc = topk(items, queries, k, filter_query_items=seen, num_threads=threads)
        sc = sc.astype(np.float64)
        sc[sc <= np.finfo(np.float32).min] = -np.inf  # implicit marks filtered slots with -FLT_MAX
        return ids.astype(np.int64), sc
    scores = queries @ items.T
    if seen is not None and seen.nnz:
        scores[np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr)), seen.indices] = -np.inf
    n_cols = scores.shape[1]
    if k < n_cols:
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        idx = np.tile(np.arange(n_cols), (len(scores), 1))
    top = np.take_along_axis(scores, idx, axis=1)
    order = np.lexsort((idx, -top), axis=1)
    idx, top = np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)
    return idx.astype(np.int64), top.astype(np.float64)


def _flatten(parts, k):
    """``(rows, cols, score, rank)`` of per-batch sorted top-k blocks, filtered slots dropped."""
    ids = np.concatenate([p[1] for p in parts])
    sc = np.concatenate([p[2] for p in parts])
    m = len(ids)
    rows = np.repeat(np.arange(m), k)
    ranks = np.tile(np.arange(1, k + 1), m)
    keep = np.isfinite(sc.ravel())
    return rows[keep], ids.ravel()[keep], sc.ravel()[keep], ranks[keep]


def _merge(cand_ids, cand_sc, k):
    """Best ``k`` candidates per row (score descending, id ascending), seen/filtered ones dropped."""
    m = len(cand_ids)
    order = np.lexsort((cand_ids, -cand_sc), axis=1)[:, :k]
    ids = np.take_along_axis(cand_ids, order, axis=1)
    sc = np.take_along_axis(cand_sc, order, axis=1)
    rows = np.repeat(np.arange(m), k)
    ranks = np.tile(np.arange(1, k + 1), m)
    keep = np.isfinite(sc.ravel())
    return rows[keep], ids.ravel()[keep], sc.ravel()[keep], ranks[keep]


def quantize(X, method: str = "int8") -> QuantizedFactors:
    """Quantize the rows of a float matrix.

    Parameters
    ----------
    X : array-like (n, k)
    method : {'fp16', 'int8', 'int4'}
        See the module docstring for the schemes and their error bounds.

    Returns
    -------
    QuantizedFactors

    Examples
    --------
    >>> import numpy as np
    >>> from daskml_scale.compression import quantize
    >>> X = np.random.default_rng(0).normal(size=(100, 16)).astype("float32")
    >>> q = quantize(X, "int8")
    >>> q.nbytes, X.nbytes
    (2000, 6400)
    >>> bool(np.all(np.abs(q.dequantize() - X) <= q.scales[:, None] / 2 + 1e-6))
    True
    """
    check_in("method", method, METHODS, "quantize")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ParameterError(f"quantize takes a 2-d factor matrix; got {X.ndim} dimension(s).")
    n, k = X.shape
    if method == "fp16":
        return QuantizedFactors(X.astype(np.float16), None, method, k)
    if k > _EXACT_K[method]:
        raise ParameterError(
            f"quantize(method={method!r}) scores exactly in float32 up to {_EXACT_K[method]} factors; "
            f"got {k}. Use method='fp16' or fewer factors."
        )
    qmax = _QMAX[method]
    amax = np.abs(X).max(axis=1) if k else np.zeros(n, dtype=np.float32)
    scales = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(X / scales[:, None]), -qmax, qmax)
    codes = q.astype(np.int8) if method == "int8" else _pack4(q)
    return QuantizedFactors(codes, scales, method, k)
