"""Exact per-distinct-score histograms: the one pass every classification metric is built on.

Each partition reduces its rows to, per distinct score: the number of rows, the weighted positives and
negatives, and (optionally) the weighted amounts of positives and negatives. Partition histograms are
merged by value (sorted union of scores, sums added) in a tree reduction. Nothing is rounded or
binned, so ROC-AUC, average precision, log loss, Brier score and every thresholded count computed from
the merged histogram are exact.

Memory bound: a merged histogram holds one row (4-6 float64) per distinct score. Tied scores (model
probabilities rounded, tree ensembles with few leaves) give a few thousand rows whatever the data
size; continuous scores on N rows give up to N. So by default the score axis is split into ranges
planned by a sizing pass (:mod:`._sketch`), each range's histogram is merged separately on the
workers and reduced there to partial sums given the totals of the ranges above it
(:mod:`._ranges`): no task holds more than ``max_scores_per_task`` rows and only a few numbers per
range reach the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ParameterError, SchemaError

__all__ = ["ScoreHistogram"]

# columns of a histogram's value matrix
CNT, POS, NEG, POS_AMT, NEG_AMT = range(5)
# stats vector kept beside the histograms (summed, except min/max/eps)
(
    ST_ROWS,
    ST_NAN_SCORE,
    ST_BAD_LABEL,
    ST_BAD_WEIGHT,
    ST_NAN_AMOUNT,
    ST_MIN,
    ST_MAX,
    ST_INF_SCORE,
    ST_NONZERO_WEIGHT,
    ST_EPS,
) = range(10)
N_STATS = 10


def _empty_stats() -> np.ndarray:
    s = np.zeros(N_STATS)
    s[ST_MIN], s[ST_MAX], s[ST_EPS] = np.inf, -np.inf, np.inf
    return s


def _score_eps(x) -> float:
    """Machine epsilon of the dtype scikit-learn computes ``log_loss`` in for these scores.

    scikit-learn keeps float16 and float32 inputs in their dtype (and clips probabilities at that
    dtype's eps); anything else (float64, integers, booleans, lists) becomes float64.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        dtype = getattr(dtype, "numpy_dtype", np.dtype(np.float64))
    dtype = np.dtype(dtype)
    if dtype in (np.dtype(np.float16), np.dtype(np.float32)):
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def stats_eps(stats) -> float:
    """The clipping eps of the data behind ``stats``: that of the dtype the partitions' scores
    concatenate to (the smallest eps seen, as float64 wins over float32), float64's without rows."""
    eps = stats[ST_EPS] if len(stats) > ST_EPS else np.inf
    return float(eps) if np.isfinite(eps) else float(np.finfo(np.float64).eps)


def _as_array(x, name: str) -> np.ndarray:
    if x is None:
        return None
    if isinstance(x, pd.DataFrame):
        raise SchemaError(
            f"{name} must be one column (a Series or 1-d array); got a DataFrame with columns {list(x.columns)}."
        )
    if isinstance(x, pd.Series):
        if isinstance(x.dtype, pd.CategoricalDtype):
            x = x.astype(object)
        return x.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(x, dtype=float).ravel()


def clean_rows(y, s, w=None, a=None):
    """Validate one partition's columns: the rows kept (finite score, 0/1 label, good weight and
    amount) as float arrays, and the stats vector counting every rejected row."""
    y = _as_array(y, "y_true")
    eps = _score_eps(s) if s is not None else np.inf
    s = _as_array(s, "y_score")
    w = _as_array(w, "sample_weight")
    a = _as_array(a, "amount")
    n = len(s)
    for name, arr in (("y_true", y), ("sample_weight", w), ("amount", a)):
        if arr is not None and len(arr) != n:
            raise SchemaError(
                f"{name} has {len(arr)} rows in a partition where y_score has {n}: the inputs must be "
                "partitioned alike (same npartitions and rows per partition). Select both columns from "
                "one DataFrame, or use classification_metrics(df, label=..., score=...)."
            )
    stats = _empty_stats()
    stats[ST_ROWS] = n
    if n:
        stats[ST_EPS] = eps
    nan_s = np.isnan(s)
    inf_s = np.isinf(s)
    bad_y = ~((y == 0) | (y == 1))
    stats[ST_NAN_SCORE] = nan_s.sum()
    stats[ST_INF_SCORE] = inf_s.sum()
    stats[ST_BAD_LABEL] = bad_y.sum()
    keep = ~(nan_s | inf_s | bad_y)
    if w is not None:
        bad_w = ~(w >= 0) | ~np.isfinite(w)
        stats[ST_BAD_WEIGHT] = bad_w.sum()
        stats[ST_NONZERO_WEIGHT] = np.count_nonzero(w)
        keep &= ~bad_w
    if a is not None:
        nan_a = np.isnan(a)
        stats[ST_NAN_AMOUNT] = nan_a.sum()
        keep &= ~nan_a
    if keep.any():
        stats[ST_MIN], stats[ST_MAX] = s[keep].min(), s[keep].max()
    if not keep.all():
        y, s = y[keep], s[keep]
        w = None if w is None else w[keep]
        a = None if a is None else a[keep]
    return y, s, w, a, stats


def hist_from_arrays(y, s, w=None, a=None, boundaries=None, window=None):
    """Histogram(s) of one partition: a list of one (scores, values) pair per score range, and stats.

    ``window=(lo, hi)`` keeps only the rows with ``lo <= score < hi`` (one pass of a multi-pass
    evaluation); the stats always describe every row.
    """
    y, s, w, a, stats = clean_rows(y, s, w, a)
    if window is not None:
        inside = (s >= window[0]) & (s < window[1])
        if not inside.all():
            y, s = y[inside], s[inside]
            w = None if w is None else w[inside]
            a = None if a is None else a[inside]
    ncol = 3 if a is None else 5
    u, inv = _unique_inverse(s)
    m = len(u)
    vals = np.empty((m, ncol))
    vals[:, CNT] = np.bincount(inv, minlength=m)
    wt = np.ones(len(s)) if w is None else w
    pw = wt * y
    nw = wt - pw
    vals[:, POS] = np.bincount(inv, weights=pw, minlength=m)
    vals[:, NEG] = np.bincount(inv, weights=nw, minlength=m)
    if a is not None:
        vals[:, POS_AMT] = np.bincount(inv, weights=pw * a, minlength=m)
        vals[:, NEG_AMT] = np.bincount(inv, weights=nw * a, minlength=m)
    if boundaries is None or len(boundaries) == 0:
        return [(u, vals)], stats
    cuts = np.searchsorted(u, boundaries, side="left")
    edges = np.concatenate([[0], cuts, [m]])
    return [(u[edges[i] : edges[i + 1]], vals[edges[i] : edges[i + 1]]) for i in range(len(edges) - 1)], stats


def _unique_inverse(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and the inverse index, as ``np.unique(s, return_inverse=True)``.

    Hash-based (pandas factorize) then only the distinct values are sorted: several times faster
    than a full sort when scores are tied, and no slower when they are all distinct.
    """
    codes, uniq = pd.factorize(s + 0.0, sort=False)  # + 0.0 folds -0.0 into 0.0, as np.unique does
    order = np.argsort(uniq, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return np.asarray(uniq)[order], rank[codes]


def hist_from_frame(df: pd.DataFrame, label, score, weight=None, amount=None, boundaries=None, window=None):
    """:func:`hist_from_arrays` on the named columns of one pandas partition."""
    return hist_from_arrays(
        df[label],
        df[score],
        None if weight is None else df[weight],
        None if amount is None else df[amount],
        boundaries,
        window,
    )


def merge_hists(*hists):
    """Merge (scores, values) histograms by value: sorted union of the scores, values summed."""
    hists = [h for h in hists if len(h[0])]
    if not hists:
        return (np.empty(0), np.empty((0, 3)))
    if len(hists) == 1:
        return hists[0]
    scores = np.concatenate([h[0] for h in hists])
    vals = np.concatenate([h[1] for h in hists])
    # the inputs are sorted runs: a stable sort merges them in about n log(runs)
    order = np.argsort(scores, kind="stable")
    scores = scores[order]
    first = np.empty(len(scores), dtype=bool)
    first[0] = True
    np.not_equal(scores[1:], scores[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return (scores[starts], np.add.reduceat(vals[order], starts, axis=0))


def merge_stats(*stats):
    out = np.sum(stats, axis=0)
    out[ST_MIN] = min(st[ST_MIN] for st in stats)
    out[ST_MAX] = max(st[ST_MAX] for st in stats)
    out[ST_EPS] = min(st[ST_EPS] for st in stats)
    return out


def check_stats(stats, *, has_weight: bool, has_amount: bool) -> None:
    """Raise :class:`SchemaError` naming the count of bad rows found in the pass."""
    n_nan, n_inf = int(stats[ST_NAN_SCORE]), int(stats[ST_INF_SCORE])
    if n_nan or n_inf:
        raise SchemaError(
            f"y_score has {n_nan + n_inf} non-finite value(s) ({n_nan} NaN, {n_inf} infinite) out of "
            f"{int(stats[ST_ROWS])} rows: scores must be finite numbers. Drop or fix those rows "
            "(e.g. df[np.isfinite(df[score])]) before evaluating.",
            column="score",
        )
    n = int(stats[ST_BAD_LABEL])
    if n:
        raise SchemaError(
            f"y_true has {n} value(s) that are not 0/1 (or are missing) out of {int(stats[ST_ROWS])} rows: "
            "labels must be binary 0/1 or boolean. Map them to 0/1 first.",
            column="label",
        )
    if has_weight and int(stats[ST_BAD_WEIGHT]):
        raise SchemaError(
            f"sample_weight has {int(stats[ST_BAD_WEIGHT])} negative, infinite or missing value(s): weights "
            "must be finite and >= 0. Fix or drop those rows.",
            column="weight",
        )
    if has_weight and stats[ST_ROWS] > 0 and int(stats[ST_NONZERO_WEIGHT]) == 0:
        raise SchemaError(
            f"sample_weight is 0 on all {int(stats[ST_ROWS])} rows: at least one weight must be non-zero "
            "(as scikit-learn requires). Check the weight column, or evaluate without weights.",
            column="weight",
        )
    if has_amount and int(stats[ST_NAN_AMOUNT]):
        raise SchemaError(
            f"amount has {int(stats[ST_NAN_AMOUNT])} missing value(s): fill them (e.g. with 0) first.",
            column="amount",
        )


# ------------------------------------------------------------------------------- partial sums by range
# A score range is reduced on its worker to these sums, given the totals of all higher ranges.
PS_NAMES = (
    "cnt",
    "pos",
    "neg",
    "pos_amt",
    "roc_num",
    "ap_num",
    "logloss",
    "brier",
    "tp",
    "fp",
    "alerts",
    "tp_amt",
    "out_of_unit",
)


def range_totals(h) -> np.ndarray:
    """Column totals of one range's histogram (cnt, pos, neg[, amounts])."""
    vals = h[1]
    tot = np.zeros(5)
    tot[: vals.shape[1]] = vals.sum(axis=0)
    return tot


def partial_sums(h, above, threshold: float, stats=None) -> np.ndarray:
    """Reduce one score range to the partial sums in ``PS_NAMES``, given the totals above it.

    Log loss clips probabilities to ``[eps, 1 - eps]`` with the eps of the scores' dtype (from
    ``stats``; float64's without), as scikit-learn does.
    """
    u, vals = h
    out = np.zeros(len(PS_NAMES))
    if len(u) == 0:
        return out
    s = u[::-1]
    v = vals[::-1]
    pos, neg = v[:, POS], v[:, NEG]
    tps = above[POS] + np.cumsum(pos)
    fps = above[NEG] + np.cumsum(neg)
    out[0], out[1], out[2] = v[:, CNT].sum(), pos.sum(), neg.sum()
    if v.shape[1] > 3:
        out[3] = v[:, POS_AMT].sum()
    out[4] = np.sum(neg * (tps - pos / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(pos > 0, tps / (tps + fps), 0.0)
    out[5] = np.sum(pos * prec)
    eps = stats_eps(stats) if stats is not None else float(np.finfo(np.float64).eps)
    p = np.clip(s, eps, 1 - eps)
    out[6] = -np.sum(pos * np.log(p) + neg * np.log1p(-p))
    out[7] = np.sum(pos * (1.0 - s) ** 2 + neg * s**2)
    alert = s >= threshold
    out[8], out[9], out[10] = pos[alert].sum(), neg[alert].sum(), v[alert, CNT].sum()
    if v.shape[1] > 3:
        out[11] = v[alert, POS_AMT].sum()
    out[12] = np.sum(v[(s < 0) | (s > 1), CNT])
    return out


def finalize_metrics(stats, *partials, threshold: float, has_weight: bool, has_amount: bool) -> dict:
    """Turn the summed partial sums of all ranges into the metrics dictionary (no warnings here:
    they are raised on the client by :func:`warn_undefined`)."""
    check_stats(stats, has_weight=has_weight, has_amount=has_amount)
    t = dict(zip(PS_NAMES, np.sum(partials, axis=0) if partials else np.zeros(len(PS_NAMES))))
    P, N = t["pos"], t["neg"]
    total = P + N
    roc = t["roc_num"] / (P * N) if P > 0 and N > 0 else float("nan")
    ap = t["ap_num"] / P if P > 0 else 0.0
    in_unit = t["out_of_unit"] == 0
    tp, fp = t["tp"], t["fp"]
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / P if P > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    out = {
        "roc_auc": float(roc),
        "pr_auc": float(min(max(ap, 0.0), 1.0)),
        "log_loss": float(t["logloss"] / total) if in_unit and total > 0 else float("nan"),
        "brier": float(t["brier"] / total) if in_unit and total > 0 else float("nan"),
        "threshold": float(threshold),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "alerts": int(t["alerts"]),
        "alert_rate": float(t["alerts"] / t["cnt"]) if t["cnt"] else 0.0,
        "n": int(t["cnt"]),
        "n_positive": float(P) if has_weight else int(round(P)),
        "positive_rate": float(P / total) if total > 0 else float("nan"),
        "score_min": float(stats[ST_MIN]),
        "score_max": float(stats[ST_MAX]),
    }
    if has_weight:
        out["weight_total"] = float(total)
    if has_amount:
        out["fraud_amount"] = float(t["pos_amt"])
        out["fraud_amount_caught"] = float(t["tp_amt"])
        out["amount_recall"] = float(t["tp_amt"] / t["pos_amt"]) if t["pos_amt"] > 0 else 0.0
    return out


def warn_undefined(m: dict, keys=("roc_auc", "pr_auc")) -> None:
    """Warn on the client, as scikit-learn does, when ROC-AUC or AP is undefined for one class."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning

    if "roc_auc" in keys and np.isnan(m["roc_auc"]):
        warnings.warn(
            "Only one class is present in y_true. ROC AUC score is not defined in that case.",
            UndefinedMetricWarning,
            stacklevel=4,
        )
    if "pr_auc" in keys and m["positive_rate"] == 0:
        warnings.warn(
            "No positive class found in y_true, recall is set to one for all thresholds.",
            UserWarning,
            stacklevel=4,
        )


# ------------------------------------------------------------------------------------- the histogram
@dataclass(frozen=True)
class ScoreHistogram:
    """Exact per-distinct-score summary of (label, score[, weight, amount]) rows.

    Built by :func:`score_histogram` and gathered to the client; curves, threshold choices and
    costs can be computed from it in memory (``hist=``). Its size is the number of distinct scores
    (see the module notes); the functions given labels and scores do not need it.

    Attributes
    ----------
    scores : ndarray
        Distinct scores, ascending.
    count, pos, neg : ndarray
        Rows, weighted positives and weighted negatives per distinct score.
    pos_amount, neg_amount : ndarray or None
        Weighted amounts of positives and negatives per distinct score (when ``amount`` was given).
    stats : ndarray
        Row count, rejected-row counts, min and max score, the scores' dtype eps (internal).
    """

    scores: np.ndarray
    count: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    pos_amount: np.ndarray | None
    neg_amount: np.ndarray | None
    stats: np.ndarray
    weighted: bool = False

    @classmethod
    def _from_parts(cls, h, stats, weighted: bool) -> ScoreHistogram:
        u, v = h
        amt = v.shape[1] > 3
        return cls(
            scores=u,
            count=v[:, CNT],
            pos=v[:, POS],
            neg=v[:, NEG],
            pos_amount=v[:, POS_AMT] if amt else None,
            neg_amount=v[:, NEG_AMT] if amt else None,
            stats=stats,
            weighted=weighted,
        )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def n(self) -> int:
        """Number of rows counted."""
        return int(self.count.sum())

    @property
    def n_positive(self) -> float:
        """Weighted number of positives."""
        return float(self.pos.sum())

    @property
    def n_negative(self) -> float:
        """Weighted number of negatives."""
        return float(self.neg.sum())

    def descending(self):
        """Distinct scores high to low with cumulative rows, true positives and false positives."""
        s = self.scores[::-1]
        return s, np.cumsum(self.count[::-1]), np.cumsum(self.pos[::-1]), np.cumsum(self.neg[::-1])

    def metrics(self, threshold: float = 0.5) -> dict:
        """The :func:`classification_metrics` dictionary computed from this histogram."""
        v = np.column_stack(
            [self.count, self.pos, self.neg]
            + ([self.pos_amount, self.neg_amount] if self.pos_amount is not None else [])
        )
        ps = partial_sums((self.scores, v), np.zeros(5), threshold, self.stats)
        return finalize_metrics(
            self.stats,
            ps,
            threshold=threshold,
            has_weight=self.weighted,
            has_amount=self.pos_amount is not None,
        )


def check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"threshold must be a number; got {threshold!r}.") from None
    if np.isnan(t):
        raise ParameterError("threshold must be a number, not NaN.")
    return t
