"""The sizing pass: count rows and estimate distinct scores, then plan score ranges and passes.

Each partition returns its validation stats, its totals (rows, weighted positives/negatives and
amounts) and a *k-minimum-values* sketch of its distinct scores: the ``SKETCH_K`` distinct scores
whose 64-bit hashes are smallest. Sketches merge on the workers (union, keep the k smallest hashes),
so only about ``SKETCH_K`` values reach the client whatever the data size. From the merged sketch:

* the number of distinct scores (exact below ``SKETCH_K``, else ``(k - 1) / h_k`` with ``h_k`` the k-th
  smallest hash scaled to [0, 1]: ~0.4% relative error at k = 65,536);
* a uniform random sample of the distinct scores (hashing makes the kept values random), whose
  quantiles cut the score axis into ranges holding about the same number of *distinct* scores, which
  is what a range's histogram costs in memory (ties cost nothing).

The plan: ``R = ceil(1.5 * distinct / max_scores_per_task)`` ranges (one when the distinct scores fit
in one task), grouped into ``passes = ceil(distinct / max_scores_per_pass)`` sequential passes from the
highest scores down. Both budgets are ``dask.config`` keys (see :func:`budgets`). The plan only sizes
the work: every result is exact whatever the estimate says.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd

from ..errors import ParameterError
from ._histogram import merge_stats

__all__ = ["Plan", "budgets"]

SKETCH_K = 65_536
SAFETY = 1.5  # ranges planned for 1.5x the estimated distinct scores: no range exceeds the budget
MAX_SCORES_PER_TASK = 2_000_000  # ~64 MB per merged range histogram (3 float64 columns + the score)
PASS_MEMORY_FRACTION = 0.15  # share of the workers' memory a pass's histograms may use, all ranges together
CONFIG_TASK = "daskml_scale.evaluation.max_scores_per_task"
CONFIG_PASS = "daskml_scale.evaluation.max_scores_per_pass"
CONFIG_SKETCH = "daskml_scale.evaluation.sketch_size"


def sketch_size() -> int:
    """Distinct scores kept by the sizing sketch (config ``daskml_scale.evaluation.sketch_size``)."""
    k = dask.config.get(CONFIG_SKETCH, None) or SKETCH_K
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 16:
        raise ParameterError(f"dask config {CONFIG_SKETCH!r} must be an integer >= 16; got {k!r}.")
    return int(k)


def budgets(client=None, ncols: int = 3) -> tuple[int, int]:
    """(distinct scores per task, distinct scores per pass) for this cluster.

    ``max_scores_per_task`` (config ``daskml_scale.evaluation.max_scores_per_task``, default 2M) bounds
    every task's histogram. ``max_scores_per_pass`` (config ``...max_scores_per_pass``, default from
    memory: 15% of the workers' total ``memory_limit``, or of this machine's available memory without
    a distributed client, divided by the bytes of one histogram row) bounds what a pass holds.
    """
    per_task = dask.config.get(CONFIG_TASK, None) or MAX_SCORES_PER_TASK
    per_pass = dask.config.get(CONFIG_PASS, None)
    for name, v in ((CONFIG_TASK, per_task), (CONFIG_PASS, per_pass)):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
            raise ParameterError(f"dask config {name!r} must be a positive integer; got {v!r}.")
    if per_pass is None:
        per_pass = int(_memory(client) * PASS_MEMORY_FRACTION / (8 * (1 + ncols)))
    return int(per_task), max(int(per_pass), int(per_task))


def _memory(client) -> float:
    from ..cluster import get_client

    c = get_client(client)
    if c is not None:
        limits = [w.get("memory_limit") or 0 for w in c.scheduler_info(n_workers=-1)["workers"].values()]
        if limits and all(limits):
            return float(sum(limits))
    import psutil

    return float(psutil.virtual_memory().available)


# ------------------------------------------------------------------------------------ the sketch
def sketch_arrays(y, s, w=None, a=None, k: int = SKETCH_K):
    """Stats, totals and the k-minimum-values sketch of one partition's valid rows."""
    from ._histogram import clean_rows

    y, s, w, a, stats = clean_rows(y, s, w, a)
    tot = np.zeros(5)
    wt = np.ones(len(s)) if w is None else w
    pw = wt * y
    tot[0], tot[1], tot[2] = len(s), pw.sum(), (wt - pw).sum()
    if a is not None:
        tot[3], tot[4] = (pw * a).sum(), ((wt - pw) * a).sum()
    s = s + 0.0  # -0.0 folded into 0.0
    h = pd.util.hash_array(s)
    if len(s) > k:
        # the k smallest hashes with repeats; when they are k distinct values (continuous scores),
        # they are the k smallest distinct hashes: no hash table over the partition is needed
        keep = np.argpartition(h, k - 1)[:k]
        hk, first = np.unique(h[keep], return_index=True)
        if len(hk) == k:
            return stats, tot, hk, s[keep][first]
    u = pd.unique(s)  # ties: few distinct values, a small hash table
    h = pd.util.hash_array(u)
    if len(u) > k:
        keep = np.argpartition(h, k - 1)[:k]
        u, h = u[keep], h[keep]
    return stats, tot, h, u


def sketch_frame(df, label, score, weight=None, amount=None, k: int = SKETCH_K):
    """:func:`sketch_arrays` on the named columns of one pandas partition."""
    return sketch_arrays(
        df[label],
        df[score],
        None if weight is None else df[weight],
        None if amount is None else df[amount],
        k,
    )


def merge_sketches(*parts, k: int = SKETCH_K):
    """Merge partition sketches: stats merged, totals added, the k smallest distinct hashes kept."""
    stats = merge_stats(*[p[0] for p in parts])
    tot = np.sum([p[1] for p in parts], axis=0)
    h = np.concatenate([p[2] for p in parts])
    u = np.concatenate([p[3] for p in parts])
    h, first = np.unique(h, return_index=True)  # sorted distinct hashes
    return stats, tot, h[:k], u[first[:k]]


def estimate_distinct(h: np.ndarray, k: int = SKETCH_K) -> float:
    """Distinct values behind a merged sketch: exact below k, else the KMV estimate."""
    if len(h) < k:
        return float(len(h))
    return (k - 1) / ((float(h[k - 1]) + 1.0) / 2.0**64)


@dataclass(frozen=True)
class Plan:
    """How an evaluation runs: score-range boundaries, passes, and what the sizing pass found.

    Attributes
    ----------
    boundaries : ndarray
        Interior score-range boundaries, ascending (range ``i`` is ``[b[i-1], b[i])``); empty: one range.
    passes : int
        Sequential passes over the data to bin the ranges (highest scores first).
    distinct_estimate : float or None
        Estimated distinct valid scores (None when no sizing pass ran).
    max_scores_per_task, max_scores_per_pass : int
        The budgets the plan was made for.
    stats, totals : ndarray or None
        From the sizing pass: validation stats, and (rows, positives, negatives, positive and negative
        amounts) of the valid rows.
    sizing_pass : bool
        Whether a sizing pass over the data was made.
    """

    boundaries: np.ndarray
    passes: int
    distinct_estimate: float | None
    max_scores_per_task: int
    max_scores_per_pass: int
    stats: np.ndarray | None = None
    totals: np.ndarray | None = None
    sizing_pass: bool = False

    @property
    def n_ranges(self) -> int:
        return len(self.boundaries) + 1


def plan_from_sketch(sketch, n_ranges, passes, per_task: int, per_pass: int, k: int = SKETCH_K) -> Plan:
    """Boundaries at quantiles of the sampled distinct scores; passes from the pass budget."""
    stats, tot, h, u = sketch
    distinct = estimate_distinct(h, k)
    if n_ranges == "auto":
        n_ranges = 1 if distinct <= per_task else int(np.ceil(SAFETY * distinct / per_task))
    b = np.empty(0)
    if n_ranges > 1 and len(u) > 1:
        v = np.sort(u)
        idx = (np.arange(1, n_ranges) * len(v)) // n_ranges
        b = np.unique(v[idx])
        b = b[b > v[0]]  # nothing below the lowest score: no empty first range
    if passes is None:
        passes = int(np.clip(np.ceil(distinct / per_pass), 1, len(b) + 1))
    return Plan(b, int(min(passes, len(b) + 1)), distinct, per_task, per_pass, stats, tot, True)
