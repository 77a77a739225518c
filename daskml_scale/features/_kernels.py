"""Vectorised per-entity window kernels on one partition.

Every kernel works on arrays sorted by (entity code ``g``, time ``t``), with all rows of an entity
in the same partition (the caller shuffles by entity first). A window of width ``w`` for row ``i``
holds the rows ``j`` of the same entity with ``t[i] - w <= t[j] < t[i]``: the current row and any
row at exactly ``t[i]`` are excluded (pandas' ``rolling(w, closed="left")`` on a time index does the
same).

The bounds ``[lo[i], hi[i])`` of every window are found in one linear two-pointer pass per
partition (numba; sorted times make each window's start move forward only), so a window never
crosses into another entity. Sums come from per-entity running sums restarted at fixed,
epoch-aligned block boundaries (so a window's value depends only on the rows within one block
width before it: the same bits whatever older history a partition holds), counts of non-missing
values from integer prefix counts, distinct counts from one sliding pass.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "Prefix",
    "Windows",
    "pair_counts",
    "sort_order",
    "window_distinct",
]


@numba.njit(cache=True, nogil=True)
def _sort_order(g, t, tid, n_groups):  # pragma: no cover - compiled
    n = len(g)
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(n):
        starts[g[i] + 1] += 1
    for k in range(n_groups):
        starts[k + 1] += starts[k]
    pos = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):  # counting sort by group, stable
        order[pos[g[i]]] = i
        pos[g[i]] += 1
    for k in range(n_groups):
        a = starts[k]
        b = starts[k + 1]
        if b - a < 2:
            continue
        idx = order[a:b]
        idx = idx[np.argsort(t[idx], kind="mergesort")]
        # runs of equal times: order by transaction id
        r = 0
        m = b - a
        while r < m:
            e = r + 1
            while e < m and t[idx[e]] == t[idx[r]]:
                e += 1
            if e - r > 16:
                run = idx[r:e]
                idx[r:e] = run[np.argsort(tid[run], kind="mergesort")]
            elif e - r > 1:  # insertion sort: short runs, no allocation
                for u in range(r + 1, e):
                    v = idx[u]
                    w = u - 1
                    while w >= r and tid[idx[w]] > tid[v]:
                        idx[w + 1] = idx[w]
                        w -= 1
                    idx[w + 1] = v
            r = e
        order[a:b] = idx
    return order


def sort_order(g: np.ndarray, t: np.ndarray, tid: np.ndarray, n_groups: int) -> np.ndarray:
    """Row order sorting by (group, time, transaction id): a counting sort by the dense group
    codes ``0..n_groups-1``, then a sort by time within each group (faster than ``np.lexsort``:
    groups are small, and the group pass is linear)."""
    tid = np.ascontiguousarray(tid)
    if tid.dtype.kind in "iub":
        tid = tid.astype(np.int64, copy=False)
    else:
        tid = tid.astype(np.float64, copy=False)
    return _sort_order(
        np.ascontiguousarray(g, dtype=np.int64), np.ascontiguousarray(t, dtype=np.int64), tid, int(n_groups)
    )


@numba.njit(cache=True, nogil=True)
def _bounds(g, t, widths):  # pragma: no cover - compiled
    """Two-pointer pass: window starts for each width (-1: unbounded), tie-group starts, group starts."""
    n = len(t)
    k = len(widths)
    lo = np.empty((k, n), dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    start = np.empty(n, dtype=np.int64)
    ptr = np.zeros(k, dtype=np.int64)
    s = 0
    h = 0
    for i in range(n):
        if i == 0 or g[i] != g[i - 1]:
            s = i
            h = i
            for j in range(k):
                ptr[j] = i
        elif t[i] != t[i - 1]:
            h = i
        hi[i] = h
        start[i] = s
        for j in range(k):
            if widths[j] < 0:
                lo[j, i] = s
            else:
                limit = t[i] - widths[j]
                q = ptr[j]
                while t[q] < limit:
                    q += 1
                ptr[j] = q
                lo[j, i] = q
    return lo, hi, start


class Windows:
    """Window bounds for rows sorted by (group, time), in one linear pass.

    Parameters
    ----------
    g : int64 array
        Group (entity) code of each row, rows of a group contiguous.
    t : int64 array
        Time in ns, non-decreasing within each group.
    widths : list of (int or None)
        Window widths in ns (None: all earlier rows of the group).

    Attributes
    ----------
    hi : int64 array
        First row of each row's tie group: the group's rows strictly earlier in time are
        ``[start, hi)``.
    start : int64 array
        First row of each row's group.
    """

    def __init__(self, g: np.ndarray, t: np.ndarray, widths):
        self.g = np.ascontiguousarray(g, dtype=np.int64)
        self.t = np.ascontiguousarray(t, dtype=np.int64)
        self.widths = list(widths)
        w = np.array([-1 if x is None else int(x) for x in self.widths], dtype=np.int64)
        self._lo, self.hi, self.start = _bounds(self.g, self.t, w)

    def lo(self, width_ns: int | None) -> np.ndarray:
        """First row of each window ``[t - width, t)`` (the group's first row when width is None)."""
        return self._lo[self.widths.index(width_ns)]

    def seconds_since_prev(self, horizon_ns: int) -> np.ndarray:
        """Seconds since the latest strictly earlier row of the same group within ``[t - horizon, t)``.

        NaN when the group has no row in that window (none ever, or none within the horizon): the
        value looks back ``horizon_ns`` at most, so it is the same whatever earlier rows exist.
        ``horizon_ns`` must be one of the widths given. The difference is taken in int64
        nanoseconds, then converted: exact to the nanosecond.
        """
        out = np.full(len(self.t), np.nan)
        has = self.hi > self.lo(horizon_ns)
        out[has] = (self.t[has] - self.t[self.hi[has] - 1]) / 1e9
        return out


def pair_counts(pair: np.ndarray, t: np.ndarray, width_ns: int | None) -> np.ndarray:
    """Earlier rows in ``[t - width, t)`` with the same ``pair`` code, for every row.

    Rows must be sorted by time within each pair (true when sorted by group then time and the pair
    is a sub-key of the group); they need not be grouped by pair.
    """
    n = len(pair)
    # dense pair codes, then one unstable sort of (code, position): the stable order by pair, and
    # faster than a stable sort of the codes (numpy's default sort is the vectorised one)
    _, dense = np.unique(np.asarray(pair), return_inverse=True)
    order = np.argsort(dense.astype(np.int64, copy=False).ravel() * np.int64(n) + np.arange(n, dtype=np.int64))
    w = Windows(pair[order], t[order], [width_ns])
    out = np.empty(len(pair), dtype=np.int64)
    out[order] = w.hi - w.lo(width_ns)
    return out


@numba.njit(cache=True, nogil=True)
def _block_sums(g, blk, x):  # pragma: no cover - compiled
    """Running sums restarted at each segment (rows of one group in one block), both ways.

    Forward sums run from the segment's first row to each row, backward sums from each row to the
    segment's last row, NaN taken as 0. Each way has its own shift ``ref``: the segment's first
    non-NaN value forwards, its last one backwards (a variance from shifted sums stays accurate when
    values are large compared with their spread, and is exactly 0 for constant values).
    """
    n = len(x)
    seg = np.empty(n, dtype=np.int64)
    f1 = np.empty(n)
    fd = np.empty(n)
    f2 = np.empty(n)
    fref = np.empty(n)
    b1 = np.empty(n)
    bd = np.empty(n)
    b2 = np.empty(n)
    bref = np.empty(n)
    a = 0
    while a < n:
        e = a + 1
        while e < n and g[e] == g[a] and blk[e] == blk[a]:
            e += 1
        first = np.nan
        for j in range(a, e):
            if not np.isnan(x[j]):
                first = x[j]
                break
        last = np.nan
        for j in range(e - 1, a - 1, -1):
            if not np.isnan(x[j]):
                last = x[j]
                break
        acc1 = 0.0
        accd = 0.0
        acc2 = 0.0
        for j in range(a, e):
            v = x[j]
            if not np.isnan(v):
                d = v - first
                acc1 += v
                accd += d
                acc2 += d * d
            seg[j] = a
            f1[j] = acc1
            fd[j] = accd
            f2[j] = acc2
            fref[j] = first
        acc1 = 0.0
        accd = 0.0
        acc2 = 0.0
        for j in range(e - 1, a - 1, -1):
            v = x[j]
            if not np.isnan(v):
                d = v - last
                acc1 += v
                accd += d
                acc2 += d * d
            b1[j] = acc1
            bd[j] = accd
            b2[j] = acc2
            bref[j] = last
        a = e
    return seg, f1, fd, f2, fref, b1, bd, b2, bref


class Prefix:
    """Running sums of one value column (rows sorted by group, then time), restarted every block.

    Time is cut into fixed blocks of ``block_ns`` aligned on the epoch (block ``k`` holds the times
    ``[k * block_ns, (k + 1) * block_ns)``). The sums restart at the first row of each group in each
    block, forwards and backwards, so a window no wider than a block (it spans at most the end of the
    previous block and the start of the current one) is summed from the rows in ``[t - block_ns, t)``
    only: the result is bit-identical whatever earlier rows exist, which is what makes
    ``transform(new, history=...)`` with trimmed history equal the all-at-once values. Rounding is
    bounded by the sums over two blocks of one entity, not over its whole history.

    Parameters
    ----------
    g : int array
        Group code of each row, rows of a group contiguous.
    t : int64 array
        Time in ns, non-decreasing within each group.
    x : float array
        Values (NaN: missing, skipped by every sum).
    block_ns : int
        Block width in ns: at least the widest window passed to :meth:`stats`.

    Attributes
    ----------
    seg : int64 array
        First row of each row's segment (its group's rows in its block).
    valid : int array, length n + 1
        Exclusive global prefix count of non-NaN values (exact).
    """

    def __init__(self, g: np.ndarray, t: np.ndarray, x: np.ndarray, block_ns: int):
        if int(block_ns) < 1:
            raise ValueError(f"block_ns must be a positive number of nanoseconds; got {block_ns!r}.")
        x = np.ascontiguousarray(x, dtype=np.float64)
        g = np.ascontiguousarray(g, dtype=np.int64)
        blk = np.floor_divide(np.ascontiguousarray(t, dtype=np.int64), np.int64(block_ns))
        (self.seg, *self._sums) = _block_sums(g, blk, x)
        self.valid = np.zeros(len(x) + 1, dtype=np.int64)
        np.cumsum(~np.isnan(x), out=self.valid[1:])

    def stats(self, lo, hi, want_std: bool = True):
        """(n non-NaN, sum, mean, std with ddof=1) of each window ``[lo, hi)`` of rows.

        ``[lo[i], hi[i])`` must be rows of row ``i``'s group strictly earlier than it, no further back
        than one block (true for a time window no wider than ``block_ns``). Sum 0 and mean NaN when
        the window has no non-NaN value; std NaN with fewer than 2 (and not computed, an empty
        array, when ``want_std`` is False).
        """
        lo = np.ascontiguousarray(lo, dtype=np.int64)
        hi = np.ascontiguousarray(hi, dtype=np.int64)
        span = lo < self.seg
        if span.any() and not (self.seg[self.seg[span] - 1] <= lo[span]).all():
            raise ValueError("A window reaches back more than one block: use a block_ns >= every window.")
        return _window_stats(*self._sums, self.seg, self.valid, lo, hi, want_std)


@numba.njit(cache=True, nogil=True)
def _window_stats(f1, fd, f2, fref, b1, bd, b2, bref, seg, valid, lo, hi, want_std):  # pragma: no cover
    n = len(lo)
    count = np.empty(n, dtype=np.int64)
    total = np.empty(n)
    mean = np.empty(n)
    std = np.empty(n if want_std else 0)
    for i in range(n):
        L = lo[i]
        H = hi[i]
        c = valid[H] - valid[L]
        count[i] = c
        if c == 0:
            total[i] = 0.0
            mean[i] = np.nan
            if want_std:
                std[i] = np.nan
            continue
        s = seg[i]
        m2 = 0.0
        if L >= s:  # the window lies in the current block: forward sums
            if L > s:
                t = f1[H - 1] - f1[L - 1]
                d = fd[H - 1] - fd[L - 1]
                q = f2[H - 1] - f2[L - 1]
            else:
                t = f1[H - 1]
                d = fd[H - 1]
                q = f2[H - 1]
            if want_std and c > 1:
                m2 = q - d * d / c
        else:  # [L, s): the end of the previous block (backward sums); [s, H): this block's start
            ca = valid[s] - valid[L]
            cb = valid[H] - valid[s]
            da = 0.0
            t = b1[L] + (f1[H - 1] if H > s else 0.0)
            if want_std and c > 1:
                if ca > 0:
                    da = bd[L]
                    m2 = max(b2[L] - da * da / ca, 0.0)
                if cb > 0:
                    db = fd[H - 1]
                    m2b = max(f2[H - 1] - db * db / cb, 0.0)
                    if ca > 0:
                        delta = (fref[H - 1] + db / cb) - (bref[L] + da / ca)
                        m2 = m2 + m2b + delta * delta * (ca * cb / c)
                    else:
                        m2 = m2b
        total[i] = t
        mean[i] = t / c
        if want_std:
            if c > 1:
                var = m2 / (c - 1)
                std[i] = np.sqrt(var) if var > 0.0 else 0.0
            else:
                std[i] = np.nan
    return count, total, mean, std


@numba.njit(cache=True, nogil=True)
def _window_distinct(codes, lo, hi, n_codes):  # pragma: no cover - compiled
    n = len(codes)
    counts = np.zeros(max(n_codes, 1), dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    distinct = 0
    cur_lo = 0
    cur_hi = 0
    for i in range(n):
        L = lo[i]
        H = hi[i]
        while cur_lo < L:
            if cur_lo < cur_hi:
                c = codes[cur_lo]
                if c >= 0:
                    counts[c] -= 1
                    if counts[c] == 0:
                        distinct -= 1
            cur_lo += 1
        if cur_hi < cur_lo:
            cur_hi = cur_lo
        while cur_hi < H:
            c = codes[cur_hi]
            if c >= 0:
                if counts[c] == 0:
                    distinct += 1
                counts[c] += 1
            cur_hi += 1
        out[i] = distinct
    return out


def window_distinct(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of distinct non-negative ``codes`` among rows ``[lo[i], hi[i])`` for every row ``i``.

    ``lo`` and ``hi`` must be non-decreasing (true for windows of rows sorted by group then time);
    one sliding pass, O(n). Negative codes (missing values) are not counted.
    """
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    n_codes = int(codes.max()) + 1 if len(codes) else 0
    return _window_distinct(
        codes, np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(hi, np.int64), n_codes
    )
