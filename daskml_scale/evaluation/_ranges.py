"""Evaluation by score range: every answer is reduced per range on the workers, small parts to the client.

A run is: one sizing pass (:mod:`._sketch`: counts, validation, distinct-score sketch, which plans
the ranges and passes), then one or more binning passes. In a binning pass each partition splits its
exact per-distinct-score histogram by range; each range is merged in its own tree of tasks (so no
task holds more than that range's distinct scores), then reduced **on its worker** by
:func:`range_summary`, given the totals of every higher-scored range (the cumulative counts carried
in) and the grand totals. A summary is a few dozen numbers plus at most a few thousand curve points
for the whole data; the client adds them up (:func:`combine`). Passes go from the highest scores
down, each reading the data again but keeping only its group of ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from dask import delayed

from ..cluster import tree_reduce
from ..errors import ParameterError
from ._histogram import (
    CNT,
    NEG,
    POS,
    POS_AMT,
    PS_NAMES,
    ST_MAX,
    ST_MIN,
    check_stats,
    finalize_metrics,
    merge_hists,
    merge_stats,
    partial_sums,
    range_totals,
)
from ._sketch import (
    Plan,
    budgets,
    merge_sketches,
    plan_from_sketch,
    sketch_arrays,
    sketch_frame,
    sketch_size,
)

SPLIT_EVERY = 8


@dataclass(frozen=True)
class Spec:
    """What to compute per range besides the scalar metrics (None: not asked)."""

    threshold: float = 0.5
    max_points: int | None = None  # thinned ROC / PR / gain points
    calibration_bins: int | None = None  # uniform bins on [0, 1]
    distribution_bins: int | None = None  # equal-width bins between the min and max score
    cost: tuple | None = None  # (cost_fn, cost_fp, use_amount)
    budget: float | None = None  # alerts (>= 1) or share of rows (< 1)
    target_fpr: float | None = None  # lowest threshold with FPR <= target, and the recall there
    k: int | None = None  # precision among the k highest-scored rows

    @property
    def needs_totals(self) -> bool:
        return any(
            v is not None
            for v in (
                self.max_points,
                self.cost,
                self.budget,
                self.target_fpr,
                self.k,
                self.distribution_bins,
            )
        )


def tree(items: list, func, split_every: int = SPLIT_EVERY):
    """Tree reduction of delayed ``items`` with the n-ary ``func`` (see :func:`cluster.tree_reduce`)."""
    return tree_reduce(items, func, split_every)


def add(above, *totals):
    out = np.array(above, dtype=float)
    for t in totals:
        out = out + t
    return out


# --------------------------------------------------------------------------------- one range
def range_summary(h, above, grand, stats, spec: Spec, n_ranges: int = 1) -> dict:
    """Reduce one score range's merged histogram to what ``spec`` asks, given ``above`` (the totals of
    all higher ranges: rows, positives, negatives, amounts) and ``grand`` (the totals of all rows).

    Runs on the range's worker; the result is small (O(1) numbers, plus this range's share of at
    most ``spec.max_points`` curve points, plus the range's last point).
    """
    u, vals = h
    out = {"ps": partial_sums(h, above, spec.threshold, stats), "n_distinct": len(u)}
    if len(u) == 0:
        return out
    s = u[::-1]
    v = vals[::-1]
    amt = v.shape[1] > 3
    c_cnt = above[CNT] + np.cumsum(v[:, CNT])
    c_tp = above[POS] + np.cumsum(v[:, POS])
    c_fp = above[NEG] + np.cumsum(v[:, NEG])
    n, P, N = grand[CNT], grand[POS], grand[NEG]
    if spec.max_points is not None:
        keep = np.zeros(len(s), dtype=bool)
        keep[-1] = True
        if len(s) <= spec.max_points // max(n_ranges, 1):
            keep[:] = True
        else:
            grid = max(spec.max_points // 3, 2)
            for c, tot, start in ((c_fp, N, above[NEG]), (c_tp, P, above[POS]), (c_cnt, n, above[CNT])):
                if tot > 0:
                    b = np.floor(np.concatenate([[start], c]) / tot * grid)
                    keep |= b[1:] != b[:-1]
        out["points"] = np.column_stack([s[keep], c_cnt[keep], c_tp[keep], c_fp[keep]])
    if spec.calibration_bins is not None:
        bins = np.linspace(0.0, 1.0, spec.calibration_bins + 1)
        ids = np.searchsorted(bins[1:-1], u)
        w = vals[:, POS] + vals[:, NEG]
        m = len(bins)
        out["calibration"] = np.vstack(
            [
                np.bincount(ids, weights=w, minlength=m),
                np.bincount(ids, weights=vals[:, POS], minlength=m),
                np.bincount(ids, weights=w * u, minlength=m),
                np.bincount(ids, weights=vals[:, CNT], minlength=m),
            ]
        )
    if spec.distribution_bins is not None:
        nb = spec.distribution_bins
        edges = _distribution_edges(stats, nb)
        ids = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, nb - 1)
        out["distribution"] = np.vstack(
            [
                np.bincount(ids, weights=vals[:, POS], minlength=nb),
                np.bincount(ids, weights=vals[:, NEG], minlength=nb),
            ]
        )
    if spec.cost is not None:
        cost_fn, cost_fp, use_amount = spec.cost
        col = POS_AMT if use_amount and amt else POS
        caught = above[col] + np.cumsum(v[:, col])
        cost = cost_fn * (grand[col] - caught) + cost_fp * c_fp
        j = int(np.argmin(cost))
        out["cost"] = (float(cost[j]), float(s[j]))
    if spec.budget is not None:
        limit = spec.budget * n if spec.budget < 1 else spec.budget
        ok = np.flatnonzero(c_cnt <= limit + 1e-9)
        out["budget"] = float(s[ok[-1]]) if len(ok) else None
    if spec.target_fpr is not None:
        fpr = c_fp / N if N > 0 else np.zeros_like(c_fp)
        ok = np.flatnonzero(fpr <= spec.target_fpr + 1e-12)
        out["fpr"] = (float(s[ok[-1]]), float(c_tp[ok[-1]])) if len(ok) else None
    if spec.k is not None:
        k = min(spec.k, n)
        if above[CNT] < k <= c_cnt[-1]:
            i = int(np.searchsorted(c_cnt, k, side="left"))
            before = (
                (c_cnt[i - 1], c_tp[i - 1], c_fp[i - 1]) if i > 0 else (above[CNT], above[POS], above[NEG])
            )
            frac = (k - before[0]) / (c_cnt[i] - before[0])
            tp = before[1] + frac * (c_tp[i] - before[1])
            fp = before[2] + frac * (c_fp[i] - before[2])
            out["precision_at_k"] = float(tp / (tp + fp)) if tp + fp > 0 else 0.0
    return out


def _distribution_edges(stats, n_bins: int) -> np.ndarray:
    lo, hi = (stats[ST_MIN], stats[ST_MAX]) if np.isfinite(stats[ST_MIN]) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, n_bins + 1)


# -------------------------------------------------------------------------------- the client side
def combine(
    stats, summaries: list, grand, spec: Spec, *, has_weight: bool, has_amount: bool, plan=None
) -> dict:
    """Add up the per-range summaries (highest range first) into the final answers; all small."""
    check_stats(stats, has_weight=has_weight, has_amount=has_amount)
    res = {
        "metrics": finalize_metrics(
            stats,
            *[s["ps"] for s in summaries],
            threshold=spec.threshold,
            has_weight=has_weight,
            has_amount=has_amount,
        ),
        "distinct_scores": int(sum(s["n_distinct"] for s in summaries)),
        "max_range_scores": int(max((s["n_distinct"] for s in summaries), default=0)),
        "n_ranges": len(summaries),
        "passes": 1 if plan is None else plan.passes,
        "sizing_pass": bool(plan is not None and plan.sizing_pass),
        "totals": np.asarray(grand, dtype=float),
        "sums": dict(zip(PS_NAMES, np.sum([s["ps"] for s in summaries], axis=0))),
    }
    got = [s for s in summaries if "ps" in s and s["n_distinct"]]
    if spec.max_points is not None:
        pts = [s["points"] for s in got]
        res["points"] = np.vstack(pts) if pts else np.empty((0, 4))
    if spec.calibration_bins is not None:
        res["calibration"] = sum((s["calibration"] for s in got), np.zeros((4, spec.calibration_bins + 1)))
    if spec.distribution_bins is not None:
        nb = spec.distribution_bins
        res["distribution"] = sum((s["distribution"] for s in got), np.zeros((2, nb)))
        res["distribution_edges"] = _distribution_edges(stats, nb)
    if spec.cost is not None:
        cost_fn, _cost_fp, use_amount = spec.cost
        col = POS_AMT if use_amount and has_amount else POS
        best = (cost_fn * grand[col], float("inf"))  # raise no alert
        for s in got:  # high to low: strict < keeps the highest threshold among equal costs
            if s["cost"][0] < best[0]:
                best = s["cost"]
        res["cost"] = best
    if spec.budget is not None:
        found = [s["budget"] for s in got if s["budget"] is not None]
        res["budget"] = min(found) if found else float("inf")
    if spec.target_fpr is not None:
        found = [s["fpr"] for s in got if s["fpr"] is not None]
        res["fpr"] = min(found)[0] if found else float("inf")
        P, N = grand[POS], grand[NEG]
        if P == 0 or N == 0:
            res["recall_at_fpr"] = float("nan")
        else:
            res["recall_at_fpr"] = float(max(f[1] for f in found) / P) if found else 0.0
    if spec.k is not None:
        found = [s["precision_at_k"] for s in got if "precision_at_k" in s]
        res["precision_at_k"] = found[0] if found else float("nan")
    return res


# ------------------------------------------------------------------------------------- running
def check_score_ranges(score_ranges):
    """'auto', an int >= 1 or an array of interior boundaries."""
    if score_ranges is None or (isinstance(score_ranges, str) and score_ranges == "auto"):
        return "auto"
    if isinstance(score_ranges, str):
        raise ParameterError(
            f"score_ranges must be None, 'auto', an int >= 1 or a sorted list of boundaries; got {score_ranges!r}."
        )
    if isinstance(score_ranges, (int, np.integer)) and not isinstance(score_ranges, bool):
        if score_ranges < 1:
            raise ParameterError(
                f"score_ranges must be >= 1 or a sorted list of boundaries; got {score_ranges}."
            )
        return int(score_ranges)
    b = np.asarray(score_ranges, dtype=float).ravel()
    if np.any(np.isnan(b)) or np.any(np.diff(b) <= 0):
        raise ParameterError("score_ranges boundaries must be strictly increasing numbers without NaN.")
    return b


def check_passes(passes, ranges, compute: bool):
    if passes is None or (isinstance(passes, str) and passes == "auto"):
        return None
    if not isinstance(passes, (int, np.integer)) or isinstance(passes, bool) or passes < 1:
        raise ParameterError(f"passes must be a positive integer or 'auto'; got {passes!r}.")
    if passes > 1 and isinstance(ranges, int) and ranges == 1:
        raise ParameterError(
            "passes > 1 splits the work by score range: give score_ranges > 1 or 'auto' (the default)."
        )
    if passes > 1 and not compute:
        raise ParameterError("passes > 1 computes pass after pass: it needs compute=True.")
    return int(passes)


def make_plan(src, score_ranges, passes, *, compute: bool, client, spec: Spec) -> Plan:
    """Check the options, run the sizing pass when needed, and plan ranges and passes."""
    from ..cluster import compute as _compute

    ranges = check_score_ranges(score_ranges)
    p = check_passes(passes, ranges, compute)
    if not compute and p is None:
        p = 1  # a lazy result is one graph: one binning pass (each task still bounded by its range)
    per_task, per_pass = budgets(client, 5 if src.has_amount else 3)
    explicit = isinstance(ranges, np.ndarray) or (isinstance(ranges, int) and ranges == 1)
    if explicit and p is not None and not (spec.needs_totals and p > 1):
        b = np.empty(0) if isinstance(ranges, int) else ranges
        return Plan(b, min(p, len(b) + 1), None, per_task, per_pass)
    k = sketch_size()
    make = sketch_frame if src.frame else sketch_arrays
    parts = [delayed(make, pure=True, nout=4)(*src.args(i), k=k) for i in range(len(src.parts))]
    sketch = _compute(tree(parts, partial(merge_sketches, k=k)), client=client)[0]  # <= k values
    check_stats(sketch[0], has_weight=src.has_weight, has_amount=src.has_amount)
    n_ranges = ranges
    if p is not None and p > 1 and isinstance(n_ranges, str):
        auto = plan_from_sketch(sketch, "auto", None, per_task, per_pass, k)
        n_ranges = max(auto.n_ranges, p)
    if not isinstance(ranges, np.ndarray):
        return plan_from_sketch(sketch, n_ranges, p, per_task, per_pass, k)
    d = plan_from_sketch(sketch, 1, 1, per_task, per_pass, k).distinct_estimate
    if p is None:
        p = int(np.clip(np.ceil(d / per_pass), 1, len(ranges) + 1))
    return Plan(ranges, min(p, len(ranges) + 1), d, per_task, per_pass, sketch[0], sketch[1], True)


def _range_graph(src, boundaries, group, window, above, grand, spec, n_ranges):
    """Delayed summaries of the ranges in ``group`` (high to low), the stats, and their totals."""
    ph = src.partition_hists(boundaries, window)
    merged = {b: tree([p[0][b] for p in ph], merge_hists) for b in group}
    st = tree([p[1] for p in ph], merge_stats)
    totals = [delayed(range_totals, pure=True)(merged[b]) for b in group]
    if grand is None:  # one pass without a sizing pass: the grand totals come from the ranges
        grand = delayed(add, pure=True)(np.zeros(5), *totals)
    out = []
    for j, b in enumerate(group):
        off = delayed(add, pure=True)(above, *totals[:j])
        out.append(delayed(range_summary, pure=True)(merged[b], off, grand, st, spec, n_ranges))
    return out, st, totals, grand


def evaluate(src, spec: Spec, *, score_ranges="auto", passes=None, compute: bool = True, client=None):
    """Run ``spec`` over the source: a dict of small results (see :func:`combine`), or a delayed one."""
    from ..cluster import compute as _compute

    kw = dict(has_weight=src.has_weight, has_amount=src.has_amount)
    if not src.lazy:  # in memory already: one range, in this process
        check_score_ranges(score_ranges)
        check_passes(passes, "auto", True)
        (h,), st = src.make(*src.args(0), boundaries=None)
        check_stats(st, **kw)
        grand = range_totals(h)
        res = combine(st, [range_summary(h, np.zeros(5), grand, st, spec)], grand, spec, **kw)
        return res if compute else delayed(res)
    plan = make_plan(src, score_ranges, passes, compute=compute, client=client, spec=spec)
    nr = plan.n_ranges
    order = np.arange(nr)[::-1]  # highest scores first
    b = plan.boundaries if nr > 1 else None
    if plan.passes == 1:
        out, st, _t, grand = _range_graph(src, b, order, None, np.zeros(5), plan.totals, spec, nr)
        value = delayed(_combine_lazy, pure=True)(st, grand, spec, kw, plan, *out)
        if not compute:
            return value
        return _compute(value, client=client)[0]
    edges = np.concatenate([[-np.inf], plan.boundaries, [np.inf]])
    above, summaries, st = np.zeros(5), [], None
    for g in [g for g in np.array_split(order, plan.passes) if len(g)]:
        window = (edges[g.min()], edges[g.max() + 1])
        out, st_d, totals, _ = _range_graph(src, b, g, window, above, plan.totals, spec, nr)
        got, st, tots = _compute(out, st_d, totals, client=client)  # small: a summary per range
        check_stats(st, **kw)
        summaries.extend(got)
        above = add(above, *tots)
    return combine(st, summaries, plan.totals, spec, plan=plan, **kw)


def _combine_lazy(st, grand, spec, kw, plan, *summaries):
    return combine(st, list(summaries), grand, spec, plan=plan, **kw)
