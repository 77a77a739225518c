"""Operating points, exact: threshold choice, costs, recall at FPR, precision@k.

Given labels and scores, each function runs like the metrics (one sizing pass, then one binning
pass, or more when memory needs them): every score range is searched **on its worker** with the
cumulative counts of the higher ranges carried in (the best cost in the range, the lowest threshold
within the budget or FPR, the k-th row), and the client only compares one candidate per range.
Given ``hist=`` (a :class:`ScoreHistogram` already gathered by :func:`score_histogram`), they answer
from it in memory, so that many operating points cost one pass over small (tied) data.
A threshold ``t`` means: rows with ``score >= t`` are alerts.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, check_in
from ._histogram import ScoreHistogram
from ._ranges import Spec, evaluate

__all__ = [
    "choose_threshold",
    "expected_cost",
    "precision_at_k",
    "recall_at_fpr",
]


def _check_hist(hist) -> ScoreHistogram:
    if not isinstance(hist, ScoreHistogram):
        raise ParameterError(
            f"hist must be a ScoreHistogram from score_histogram(); got {type(hist).__name__}."
        )
    return hist


def _by_range(spec: Spec, y_true, y_score, sample_weight=None, amount=None, client=None) -> dict:
    """Run ``spec`` range by range on the workers (or in process for in-memory input)."""
    from ._classification import _Source

    if y_true is None or y_score is None:
        raise ParameterError("Pass y_true and y_score, or hist=score_histogram(...).")
    src = _Source.from_arrays(y_true, y_score, sample_weight, amount)
    return evaluate(src, spec, client=client)


def _missed(h: ScoreHistogram, use_amount: bool):
    """Per candidate threshold (distinct scores high to low, then 'no alert' first): FN and FP."""
    s, _cnt, tps, fps = h.descending()
    if use_amount:
        if h.pos_amount is None:
            raise ParameterError("amount-weighted costs need amount=... when the histogram is built.")
        pos_caught = np.cumsum(h.pos_amount[::-1])
        total = pos_caught[-1] if len(pos_caught) else 0.0
    else:
        pos_caught = tps
        total = h.n_positive
    thresholds = np.concatenate([[np.inf], s])
    fn = total - np.concatenate([[0.0], pos_caught])
    fp = np.concatenate([[0.0], fps])
    return thresholds, fn, fp


def expected_cost(
    y_true=None,
    y_score=None,
    *,
    threshold: float = 0.5,
    cost_fn: float = 1.0,
    cost_fp: float = 1.0,
    amount=None,
    sample_weight=None,
    hist: ScoreHistogram | None = None,
    client=None,
) -> float:
    """Total cost of alerting on ``score >= threshold``: ``cost_fn * missed + cost_fp * false alerts``.

    With ``amount``, a missed positive costs ``cost_fn`` times its amount (missed fraud loses the money);
    otherwise ``cost_fn`` per missed positive. Weighted by ``sample_weight`` when given.

    Passes over Dask input: one sizing pass, one binning pass (see :func:`roc_auc_score`).

    Examples
    --------
    >>> expected_cost([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.9], threshold=0.5, cost_fn=10, cost_fp=1)
    11.0
    """
    if hist is None:
        res = _by_range(Spec(threshold=float(threshold)), y_true, y_score, sample_weight, amount, client)
        t = res["sums"]
        fn = t["pos_amt"] - t["tp_amt"] if amount is not None else t["pos"] - t["tp"]
        return float(cost_fn * fn + cost_fp * t["fp"])
    h = _check_hist(hist)
    t, fn, fp = _missed(h, amount is not None or h.pos_amount is not None)
    # index of the lowest candidate threshold that is >= threshold
    i = int(np.searchsorted(-t, -float(threshold), side="right")) - 1
    return float(cost_fn * fn[i] + cost_fp * fp[i])


def choose_threshold(
    y_true=None,
    y_score=None,
    *,
    method: str = "cost",
    cost_fn: float = 1.0,
    cost_fp: float = 1.0,
    amount=None,
    budget: float | None = None,
    target_fpr: float | None = None,
    sample_weight=None,
    hist: ScoreHistogram | None = None,
    client=None,
) -> float:
    """Choose the alert threshold (alerts are ``score >= threshold``) exactly, from one pass.

    Parameters
    ----------
    y_true, y_score : labels and scores (dask or in memory), or ``hist=``
    method : {"cost", "budget", "fpr"}
        ``"cost"``: minimise :func:`expected_cost` over every distinct score (ties: fewest alerts).
        ``"budget"``: the lowest threshold giving at most ``budget`` alerts (``budget >= 1``: a number
        of rows; ``0 < budget < 1``: a fraction of rows). ``"fpr"``: the lowest threshold whose false
        positive rate is at most ``target_fpr`` (the highest recall at that FPR).
    cost_fn, cost_fp : float
        Cost of a missed positive (per unit of ``amount`` when given) and of a false alert.
    amount : same kind as y_true, optional
        Amount per row for amount-weighted missed-fraud costs.
    budget : float, optional
    target_fpr : float, optional
    sample_weight : optional
    hist : ScoreHistogram, optional
        A histogram already computed by :func:`score_histogram`, instead of y_true/y_score.
    client : distributed.Client, optional

    Returns
    -------
    float
        A distinct score of the data, or ``inf`` when the best choice is to raise no alert.

    Notes
    -----
    Passes over Dask input: one sizing pass (which also gives the totals the costs and rates need)
    and one binning pass, more only when the workers' memory needs them (see
    :func:`roc_auc_score`). Each score range finds its own best candidate on its worker, given
    the counts of the ranges above; the client compares one number per range.

    Examples
    --------
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.9], method="cost", cost_fn=10, cost_fp=1)
    0.3
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.9], method="budget", budget=1)
    0.9
    """
    check_in("method", method, ("cost", "budget", "fpr"), "choose_threshold")
    if method == "cost":
        for name, v in (("cost_fn", cost_fn), ("cost_fp", cost_fp)):
            if not np.isfinite(v) or v < 0:
                raise ParameterError(f"{name} must be a finite number >= 0; got {v!r}.")
    if method == "budget" and (budget is None or not budget > 0):
        raise ParameterError(
            f"method='budget' needs budget > 0 (a number of alerts, or a fraction in (0, 1)); got {budget!r}."
        )
    if method == "fpr" and (target_fpr is None or not 0 <= target_fpr <= 1):
        raise ParameterError(f"method='fpr' needs target_fpr in [0, 1]; got {target_fpr!r}.")
    if hist is None:
        spec = {
            "cost": Spec(cost=(float(cost_fn), float(cost_fp), amount is not None)),
            "budget": Spec(budget=budget),
            "fpr": Spec(target_fpr=target_fpr),
        }[method]
        res = _by_range(spec, y_true, y_score, sample_weight, amount, client)
        return float(res["cost"][1] if method == "cost" else res[method])
    h = _check_hist(hist)
    if method == "cost":
        t, fn, fp = _missed(h, amount is not None or h.pos_amount is not None)
        return float(t[int(np.argmin(cost_fn * fn + cost_fp * fp))])
    s, cnt, _tps, fps = h.descending()
    if method == "budget":
        limit = budget * h.n if budget < 1 else budget
        ok = np.flatnonzero(cnt <= limit + 1e-9)
    else:
        n_neg = h.n_negative
        fpr = fps / n_neg if n_neg > 0 else np.zeros_like(fps)
        ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    return float(s[ok[-1]]) if len(ok) else float("inf")


def recall_at_fpr(
    y_true=None, y_score=None, *, target_fpr: float = 0.01, sample_weight=None, hist=None, client=None
) -> float:
    """Highest recall (true positive rate) at a false positive rate of at most ``target_fpr``.

    Examples
    --------
    >>> recall_at_fpr([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.9], target_fpr=0.0)
    0.5
    """
    if not 0 <= target_fpr <= 1:
        raise ParameterError(f"target_fpr must be in [0, 1]; got {target_fpr!r}.")
    if hist is None:
        return _by_range(Spec(target_fpr=target_fpr), y_true, y_score, sample_weight, None, client)[
            "recall_at_fpr"
        ]
    h = _check_hist(hist)
    _s, _cnt, tps, fps = h.descending()
    P, N = h.n_positive, h.n_negative
    if P == 0 or N == 0:
        return float("nan")
    ok = np.flatnonzero(fps / N <= target_fpr + 1e-12)
    return float(tps[ok[-1]] / P) if len(ok) else 0.0


def precision_at_k(
    y_true=None, y_score=None, *, k: int = 100, sample_weight=None, hist=None, client=None
) -> float:
    """Precision among the ``k`` highest-scored rows (the k alerts an analyst can review).

    Rows tied at the k-th score enter fractionally (the expected precision when ties are broken at
    random), so the result does not depend on row order.

    Examples
    --------
    >>> precision_at_k([0, 0, 1, 1], [0.1, 0.6, 0.3, 0.9], k=2)
    0.5
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive integer; got {k!r}.")
    if hist is None:
        return _by_range(Spec(k=int(k)), y_true, y_score, sample_weight, None, client)["precision_at_k"]
    h = _check_hist(hist)
    _s, cnt, tps, fps = h.descending()
    if len(cnt) == 0:
        return float("nan")
    k = min(k, int(cnt[-1]))
    i = int(np.searchsorted(cnt, k, side="left"))  # group holding the k-th row
    before = (cnt[i - 1], tps[i - 1], fps[i - 1]) if i > 0 else (0.0, 0.0, 0.0)
    frac = (k - before[0]) / (cnt[i] - before[0])
    tp = before[1] + frac * (tps[i] - before[1])
    fp = before[2] + frac * (fps[i] - before[2])
    return float(tp / (tp + fp)) if tp + fp > 0 else 0.0
