"""The compiled per-partition kernels against plain numpy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daskml_scale.features._kernels import Prefix, Windows, pair_counts, sort_order, window_distinct
from daskml_scale.features._partition import factorize


@pytest.mark.parametrize("n_groups", [1, 3, 200])
def test_sort_order_is_lexsort(n_groups):
    rng = np.random.default_rng(n_groups)
    n = 5_000
    g = rng.integers(0, n_groups, n)
    t = rng.integers(0, 300, n)  # many ties, some runs longer than 16
    tid = rng.permutation(n)
    np.testing.assert_array_equal(sort_order(g, t, tid, n_groups), np.lexsort((tid, t, g)))
    ftid = tid.astype(float) / 7
    np.testing.assert_array_equal(sort_order(g, t, ftid, n_groups), np.lexsort((ftid, t, g)))
    assert len(sort_order(g[:0], t[:0], tid[:0], 0)) == 0


def _sorted_sample(seed=0, n=2_000):
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, 30, n))
    t = np.concatenate([np.sort(rng.integers(0, 500, (g == k).sum())) for k in np.unique(g)])
    return g, t


def test_window_bounds_match_a_direct_search():
    g, t = _sorted_sample()
    w = Windows(g, t, [50, None])
    gap = w.seconds_since_prev(50)
    for i in range(0, len(g), 37):
        same = np.flatnonzero(g == g[i])
        earlier = same[t[same] < t[i]]
        assert w.hi[i] == (earlier[-1] + 1 if len(earlier) else same[0])
        inside = earlier[t[earlier] >= t[i] - 50]
        assert w.hi[i] - w.lo(50)[i] == len(inside)
        assert w.lo(None)[i] == same[0] == w.start[i]
        # the gap looks back the horizon only: NaN when no earlier row within it
        if len(inside):
            assert gap[i] == (t[i] - t[inside[-1]]) / 1e9
        else:
            assert np.isnan(gap[i])


@pytest.mark.parametrize("block", [80, 97, 10_000])
def test_stats_distinct_and_pairs_match_brute_force(block):
    g, t = _sorted_sample(1)
    rng = np.random.default_rng(2)
    x = rng.normal(100, 5, len(g))
    x[rng.random(len(g)) < 0.1] = np.nan
    codes = rng.integers(-1, 12, len(g))  # -1: missing
    w = Windows(g, t, [80])
    lo, hi = w.lo(80), w.hi
    n, total, mean, std = Prefix(g, t, x, block).stats(lo, hi)
    distinct = window_distinct(codes, lo, hi)
    pair = g * 100 + codes + 1
    pairs = pair_counts(pair, t, 80)
    for i in range(len(g)):
        vals = x[lo[i] : hi[i]]
        vals = vals[~np.isnan(vals)]
        assert n[i] == len(vals)
        assert total[i] == pytest.approx(vals.sum(), rel=1e-12, abs=1e-9)
        if len(vals):
            assert mean[i] == pytest.approx(vals.mean(), rel=1e-12)
        if len(vals) > 1:
            assert std[i] == pytest.approx(vals.std(ddof=1), rel=1e-8)
        else:
            assert np.isnan(std[i])
        cs = codes[lo[i] : hi[i]]
        assert distinct[i] == len(set(cs[cs >= 0]))
        mask = (pair == pair[i]) & (t < t[i]) & (t >= t[i] - 80)
        assert pairs[i] == mask.sum()


def test_stats_depend_only_on_the_last_block():
    """Dropping every row older than one block before a row leaves its stats bit-identical."""
    g, t = _sorted_sample(3, n=3_000)
    rng = np.random.default_rng(4)
    x = np.round(np.exp(rng.normal(3, 1, len(g))), 2)
    x[rng.random(len(g)) < 0.1] = np.nan
    x[g == 5] = 9.99  # constant values: std exactly 0
    block, width = 60, 60
    w = Windows(g, t, [width, 25])
    full = [Prefix(g, t, x, block).stats(w.lo(k), w.hi) for k in (width, 25)]
    assert (full[0][3][(g == 5) & (full[0][0] > 1)] == 0).all()
    for cut in (100, 173, 250):
        keep = t >= cut - block
        w2 = Windows(g[keep], t[keep], [width, 25])
        part = [Prefix(g[keep], t[keep], x[keep], block).stats(w2.lo(k), w2.hi) for k in (width, 25)]
        scored = t[keep] >= cut
        for a, b in zip(full, part):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u[keep][scored], v[scored])


def test_stats_refuse_a_window_wider_than_a_block():
    g, t = _sorted_sample(5)
    w = Windows(g, t, [80])
    with pytest.raises(ValueError, match="block_ns >= every window"):
        Prefix(g, t, np.ones(len(g)), 40).stats(w.lo(80), w.hi)


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(np.array([5, -3, 5, 2**62, 7, -3], dtype=np.int64)),
        pd.Series(np.array([3, 1, 3, 9], dtype=np.uint32)),
        pd.Series([2.5, np.nan, -0.0, 2.5, 0.0, np.nan, 1e300]),
        pd.Series([1.0, 2.0, 1.0]),
        pd.Series(["b", None, "a", "b"], dtype="str"),
        pd.Series(np.zeros(0, dtype=np.int64)),
    ],
)
def test_factorize_codes_like_pandas(values):
    codes, n = factorize(values)
    ref, uniques = pd.factorize(values, use_na_sentinel=True)
    assert codes.dtype == np.int64 and n == len(uniques)
    assert ((codes < 0) == (ref < 0)).all()
    # the same partition of the rows into values (the labels may differ)
    pairs = set(zip(codes.tolist(), ref.tolist()))
    assert len(pairs) == len(set(codes.tolist())) == len(set(ref.tolist()))
    assert set(codes[codes >= 0].tolist()) == set(range(n))
