"""Curves, thinned to a few thousand points for plotting, from a histogram or from range summaries.

ROC and precision-recall curves keep every corner when the data have fewer distinct scores than
``max_points``; otherwise they keep points evenly spaced along both axes (so steep and flat parts
are both drawn), always including the end points. Calibration, score distribution and gain curves
are binned. The public functions take a :class:`ScoreHistogram`; :meth:`Report.classification`
builds the same tables from the points each score range thinned on its worker (``_*_table``), so
nothing of the size of the distinct scores reaches the client.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ._histogram import ScoreHistogram

__all__ = ["calibration_curve", "gain_curve", "pr_curve", "roc_curve", "score_distribution"]


def _thin(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    half = max(max_points // 2, 2)
    idx = np.concatenate(
        [
            np.searchsorted(x, np.linspace(x[0], x[-1], half)),
            np.searchsorted(y, np.linspace(y[0], y[-1], half)) if y[-1] >= y[0] else [],
            np.linspace(0, n - 1, half // 4 + 2).round(),
            [0, n - 1],
        ]
    ).astype(int)
    return np.unique(np.clip(idx, 0, n - 1))


def _check(h):
    if not isinstance(h, ScoreHistogram):
        raise ParameterError(f"Expected a ScoreHistogram from score_histogram(); got {type(h).__name__}.")
    if max(h.n_positive, 0) == 0:
        return False
    return True


def _points(h: ScoreHistogram) -> np.ndarray:
    s, cnt, tps, fps = h.descending()
    return np.column_stack([s, cnt, tps, fps])


def _roc_table(pts: np.ndarray, P: float, N: float, max_points: int) -> pd.DataFrame:
    """ROC table from descending (score, cum rows, cum TP, cum FP) points."""
    s, tps, fps = pts[:, 0], pts[:, 2], pts[:, 3]
    fpr = np.concatenate([[0.0], fps / N if N > 0 else np.zeros_like(fps)])
    tpr = np.concatenate([[0.0], tps / P if P > 0 else np.zeros_like(tps)])
    thr = np.concatenate([[np.inf], s])
    i = _thin(fpr, tpr, max_points)
    return pd.DataFrame({"threshold": thr[i], "fpr": fpr[i], "tpr": tpr[i]})


def _pr_table(pts: np.ndarray, P: float, max_points: int) -> pd.DataFrame:
    s, tps, fps = pts[:, 0], pts[:, 2], pts[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 1.0)
    recall = tps / P if P > 0 else np.ones_like(tps)
    i = _thin(recall, np.arange(len(recall), dtype=float), max_points)
    return pd.DataFrame({"threshold": s[i], "recall": recall[i], "precision": precision[i]})


def _gain_table(pts: np.ndarray, n: float, P: float, max_points: int) -> pd.DataFrame:
    cnt, tps = pts[:, 1], pts[:, 2]
    frac = np.concatenate([[0.0], cnt / max(n, 1)])
    gain = np.concatenate([[0.0], tps / P if P > 0 else np.zeros_like(tps)])
    i = _thin(frac, gain, max_points)
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.where(frac[i] > 0, gain[i] / frac[i], np.nan)
    return pd.DataFrame({"fraction_alerted": frac[i], "gain": gain[i], "lift": lift})


def _calibration_table(tot, pos, ssum, cnt) -> pd.DataFrame:
    nz = tot > 0
    return pd.DataFrame({"prob_pred": ssum[nz] / tot[nz], "prob_true": pos[nz] / tot[nz], "count": cnt[nz]})


def _distribution_table(edges, positives, negatives) -> pd.DataFrame:
    return pd.DataFrame(
        {"left": edges[:-1], "right": edges[1:], "positives": positives, "negatives": negatives}
    )


def roc_curve(h: ScoreHistogram, *, max_points: int = 2000) -> pd.DataFrame:
    """ROC curve (columns ``threshold``, ``fpr``, ``tpr``) starting at (0, 0), thinned.

    Examples
    --------
    >>> from daskml_scale.evaluation import score_histogram
    >>> roc_curve(score_histogram([0, 1], [0.2, 0.7]))["tpr"].tolist()
    [0.0, 1.0, 1.0]
    """
    _check(h)
    return _roc_table(_points(h), h.n_positive, h.n_negative, max_points)


def pr_curve(h: ScoreHistogram, *, max_points: int = 2000) -> pd.DataFrame:
    """Precision-recall curve (columns ``threshold``, ``recall``, ``precision``), recall increasing."""
    _check(h)
    return _pr_table(_points(h), h.n_positive, max_points)


def calibration_curve(h: ScoreHistogram, *, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Observed positive rate against mean predicted probability per score bin.

    Same bins as :func:`sklearn.calibration.calibration_curve` (``"uniform"``: equal-width bins on
    [0, 1]; ``"quantile"``: equal-count bins); empty bins are dropped. Columns ``prob_pred``,
    ``prob_true``, ``count``.
    """
    if n_bins < 1:
        raise ParameterError(f"n_bins must be >= 1; got {n_bins}.")
    if strategy == "uniform":
        bins = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        cum = np.cumsum(h.count) / max(h.n, 1)
        qs = np.linspace(0, 1, n_bins + 1)
        bins = h.scores[np.minimum(np.searchsorted(cum, qs), len(h.scores) - 1)] if len(h) else qs
    else:
        raise ParameterError(f"strategy must be 'uniform' or 'quantile'; got {strategy!r}.")
    ids = np.searchsorted(bins[1:-1], h.scores)
    w = h.pos + h.neg
    tot = np.bincount(ids, weights=w, minlength=len(bins))
    pos = np.bincount(ids, weights=h.pos, minlength=len(bins))
    ssum = np.bincount(ids, weights=w * h.scores, minlength=len(bins))
    cnt = np.bincount(ids, weights=h.count, minlength=len(bins))
    return _calibration_table(tot, pos, ssum, cnt)


def score_distribution(h: ScoreHistogram, *, n_bins: int = 50) -> pd.DataFrame:
    """Weighted counts of positives and negatives per equal-width score bin (``left``, ``right``)."""
    lo, hi = (h.scores[0], h.scores[-1]) if len(h) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, n_bins + 1)
    ids = np.clip(np.searchsorted(edges, h.scores, side="right") - 1, 0, n_bins - 1)
    return _distribution_table(
        edges,
        np.bincount(ids, weights=h.pos, minlength=n_bins),
        np.bincount(ids, weights=h.neg, minlength=n_bins),
    )


def gain_curve(h: ScoreHistogram, *, max_points: int = 2000) -> pd.DataFrame:
    """Cumulative gain and lift: share of positives caught against the share of rows alerted."""
    return _gain_table(_points(h), h.n, h.n_positive, max_points)
