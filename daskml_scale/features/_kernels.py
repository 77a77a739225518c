"""Vectorised per-entity window kernels on one partition.

Every kernel works on arrays sorted by (entity code ``g``, time ``t``), with all rows of an entity
in the same partition (the caller shuffles by entity first). A window of width ``w`` for row ``i``
holds the rows ``j`` of the same entity with ``t[i] - w <= t[j] < t[i]``: the current row and any
row at exactly ``t[i]`` are excluded (pandas' ``rolling(w, closed="left")`` on a time index does the
same).

The bounds ``[lo[i], hi[i])`` of every window are found in one linear two-pointer pass per
partition (numba; sorted times make each window's start move forward only), so a window never
crosses into another entity. Sums come from per-entity running sums, counts of non-missing values
from integer prefix counts, distinct counts from one sliding pass.
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

    def seconds_since_prev(self) -> np.ndarray:
        """Seconds since the latest strictly earlier row of the same group (NaN when none).

        The difference is taken in int64 nanoseconds, then converted: exact to the nanosecond.
        """
        out = np.full(len(self.t), np.nan)
        has = self.hi > self.start
        out[has] = (self.t[has] - self.t[self.hi[has] - 1]) / 1e9
        return out


def pair_counts(pair: np.ndarray, t: np.ndarray, width_ns: int | None) -> np.ndarray:
    """Earlier rows in ``[t - width, t)`` with the same ``pair`` code, for every row.

    Rows must be sorted by time within each pair (true when sorted by group then time and the pair
    is a sub-key of the group); they need not be grouped by pair.
    """
    order = np.argsort(pair, kind="stable")
    w = Windows(pair[order], t[order], [width_ns])
    out = np.empty(len(pair), dtype=np.int64)
    out[order] = w.hi - w.lo(width_ns)
    return out


@numba.njit(cache=True, nogil=True)
def _group_cumsum(g, x):  # pragma: no cover - compiled
    """Inclusive running sums restarted at each group, NaN taken as 0.

    Returns the running sums of ``x``, of ``x - ref`` and of ``(x - ref) ** 2``, and ``ref``: each
    row's group's first non-NaN value. Shifting by ``ref`` keeps a variance computed from sums
    accurate when values are large compared with their spread.
    """
    n = len(x)
    s1 = np.empty(n)
    sd = np.empty(n)
    s2 = np.empty(n)
    refs = np.empty(n)
    acc1 = 0.0
    accd = 0.0
    acc2 = 0.0
    ref = np.nan
    for i in range(n):
        if i == 0 or g[i] != g[i - 1]:
            acc1 = 0.0
            accd = 0.0
            acc2 = 0.0
            ref = np.nan
            for j in range(i, n):
                if g[j] != g[i]:
                    break
                if not np.isnan(x[j]):
                    ref = x[j]
                    break
        v = x[i]
        if not np.isnan(v):
            acc1 += v
            d = v - ref
            accd += d
            acc2 += d * d
        s1[i] = acc1
        sd[i] = accd
        s2[i] = acc2
        refs[i] = ref
    return s1, sd, s2, refs


class Prefix:
    """Per-group running sums of one value column (rows sorted by group, then time).

    Attributes
    ----------
    s1, sd, s2 : float arrays
        Inclusive running sums of ``x``, ``x - ref`` and ``(x - ref) ** 2`` (NaN as 0), restarted at
        each group, so their rounding depends on that entity's own rows only.
    valid : int array, length n + 1
        Exclusive global prefix count of non-NaN values (exact).
    """

    def __init__(self, g: np.ndarray, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float64)
        g = np.ascontiguousarray(g, dtype=np.int64)
        self.s1, self.sd, self.s2, self.ref = _group_cumsum(g, x)
        self.valid = np.zeros(len(x) + 1, dtype=np.int64)
        np.cumsum(~np.isnan(x), out=self.valid[1:])

    def stats(self, start, lo, hi, want_std: bool = True):
        """(n non-NaN, sum, mean, std with ddof=1) of each window ``[lo, hi)``.

        Sum 0 and mean NaN when the window has no non-NaN value; std NaN with fewer than 2
        (and not computed, an empty array, when ``want_std`` is False).
        """
        return _window_stats(self.s1, self.sd, self.s2, self.valid, start, lo, hi, want_std)


@numba.njit(cache=True, nogil=True)
def _window_stats(s1, sd, s2, valid, start, lo, hi, want_std):  # pragma: no cover - compiled
    n = len(lo)
    count = np.empty(n, dtype=np.int64)
    total = np.empty(n)
    mean = np.empty(n)
    std = np.empty(n if want_std else 0)
    for i in range(n):
        L = lo[i]
        H = hi[i]
        c = valid[H] - valid[L]
        t = 0.0
        if H > L:
            t = s1[H - 1] - (s1[L - 1] if L > start[i] else 0.0)
        count[i] = c
        total[i] = t
        mean[i] = t / c if c > 0 else np.nan
        if want_std:
            if c > 1:
                d = sd[H - 1] - (sd[L - 1] if L > start[i] else 0.0)
                q = s2[H - 1] - (s2[L - 1] if L > start[i] else 0.0)
                var = (q - d * d / c) / (c - 1)
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
