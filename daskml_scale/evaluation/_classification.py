"""Exact out-of-core classification metrics: ROC-AUC, average precision, log loss, Brier, F1.

Inputs are Dask Series/arrays partitioned alike, a Dask DataFrame with named columns, or in-memory
numpy/pandas. Dask Series taken from one frame are read together as one frame (the upstream graph
is computed once per pass). The data are reduced partition by partition to exact
per-distinct-score histograms (see :mod:`._histogram`), split into score ranges planned by a sizing
pass (:mod:`._sketch`) and reduced range by range on the workers (:mod:`._ranges`); no score is
collected to the client, only a few numbers per range.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
from dask import delayed

from ..errors import ParameterError, SchemaError
from ._histogram import (
    ScoreHistogram,
    check_stats,
    check_threshold,
    hist_from_arrays,
    hist_from_frame,
    merge_hists,
    merge_stats,
    warn_undefined,
)
from ._ranges import Spec, evaluate, tree

__all__ = [
    "average_precision_score",
    "brier_score_loss",
    "classification_metrics",
    "log_loss",
    "roc_auc_score",
    "score_histogram",
]


def _is_dask(x) -> bool:
    return dask.is_dask_collection(x)


def _blocks(x, name: str) -> list:
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(x, da.Array):
        if x.ndim != 1:
            raise SchemaError(f"{name} must be one-dimensional; got a dask array with ndim={x.ndim}.")
        return list(x.to_delayed().ravel())
    if isinstance(x, dd.DataFrame):
        raise SchemaError(
            f"{name} must be one column (a Series); got a DataFrame. Use classification_metrics(df, "
            "label=..., score=...) for a DataFrame."
        )
    if isinstance(x, dd.Series):
        return list(x.to_delayed())
    raise SchemaError(f"{name} must be a dask Series or dask array; got {type(x).__name__}.")


_COLS = ("y_true", "y_score", "sample_weight", "amount")


def _one_frame(given: dict):
    """Dask Series from the same frame (co-aligned), as ONE frame with columns named by argument.

    Reading them as one frame computes the upstream graph once per pass; reading each Series'
    partitions separately computes it once per Series. None when they are not co-aligned (e.g.
    unrelated Series), where the partitions are zipped instead.
    """
    import dask.dataframe as dd

    if not all(isinstance(v, dd.Series) for v in given.values()):
        return None
    try:
        from dask.dataframe.dask_expr._expr import are_co_aligned
    except ImportError:  # pragma: no cover - dask moved it: zip the partitions instead
        return None
    exprs = [v.expr for v in given.values()]
    if not are_co_aligned(*exprs):
        return None
    names = list(given)
    frame = given[names[0]].to_frame(names[0])
    return frame.assign(**{k: given[k] for k in names[1:]}) if len(names) > 1 else frame


class _Source:
    """The rows to evaluate: partitions of (label, score[, weight, amount]) as delayed or in memory."""

    def __init__(self, parts: list, *, lazy: bool, has_weight: bool, has_amount: bool, make):
        self.parts = parts  # one entry per partition: args for ``make``
        self.lazy = lazy
        self.has_weight = has_weight
        self.has_amount = has_amount
        self.make = make
        self.frame = make is hist_from_frame

    def args(self, i: int) -> tuple:
        return self.parts[i]

    @classmethod
    def from_arrays(cls, y_true, y_score, sample_weight=None, amount=None) -> _Source:
        arrays = dict(zip(_COLS, (y_true, y_score, sample_weight, amount)))
        given = {k: v for k, v in arrays.items() if v is not None}
        kinds = {k: _is_dask(v) for k, v in given.items()}
        if len(set(kinds.values())) > 1:
            raise SchemaError(
                "y_true, y_score, sample_weight and amount must all be Dask collections or all be in memory; "
                f"got Dask for {sorted(k for k, d in kinds.items() if d)} and in-memory for "
                f"{sorted(k for k, d in kinds.items() if not d)}. Convert with dd.from_pandas or select the "
                "columns from one Dask DataFrame."
            )
        flags = dict(has_weight=sample_weight is not None, has_amount=amount is not None)
        if not any(kinds.values()):
            n = {
                k: len(np.asarray(v).ravel()) if not isinstance(v, pd.Series) else len(v)
                for k, v in given.items()
            }
            if len(set(n.values())) > 1:
                raise SchemaError(f"Inputs have different lengths {n}: they must have one value per row.")
            return cls([(y_true, y_score, sample_weight, amount)], lazy=False, make=hist_from_arrays, **flags)
        blocks = {k: _blocks(v, k) for k, v in given.items()}
        nparts = {k: len(b) for k, b in blocks.items()}
        if len(set(nparts.values())) > 1:
            raise SchemaError(
                f"Inputs have different numbers of partitions {nparts}: they must be partitioned alike. "
                "Select the columns from one DataFrame, or use classification_metrics(df, label=..., score=...)."
            )
        frame = _one_frame(given)
        if frame is not None:
            names = [k if k in given else None for k in _COLS]
            return cls([(p, *names) for p in frame.to_delayed()], lazy=True, make=hist_from_frame, **flags)
        m = next(iter(nparts.values()))
        get = {k: blocks.get(k, [None] * m) for k in arrays}
        parts = [tuple(get[k][i] for k in _COLS) for i in range(m)]
        return cls(parts, lazy=True, make=hist_from_arrays, **flags)

    @classmethod
    def from_frame(cls, df, label: str, score: str, weight=None, amount=None) -> _Source:
        cols = [c for c in (label, score, weight, amount) if c is not None]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise SchemaError(
                f"Column(s) {missing} not found; the DataFrame has {list(df.columns)}. Pass the right "
                "names as label=, score=, weight=, amount=.",
                column=missing[0],
            )
        for c in cols:
            if not (pd.api.types.is_numeric_dtype(df[c].dtype) or pd.api.types.is_bool_dtype(df[c].dtype)):
                raise SchemaError(
                    f"Column {c!r} has dtype {df[c].dtype}; it must be numeric (labels 0/1 or boolean).",
                    column=c,
                )
        sub = df[list(dict.fromkeys(cols))]
        lazy = _is_dask(sub)
        parts = [(p, label, score, weight, amount) for p in (sub.to_delayed() if lazy else [sub])]
        return cls(
            parts,
            lazy=lazy,
            has_weight=weight is not None,
            has_amount=amount is not None,
            make=hist_from_frame,
        )

    # --------------------------------------------------------------------------------------- graph
    def partition_hists(self, boundaries, window=None):
        """Delayed (histograms by range, stats) of every partition."""
        return [
            delayed(self.make, pure=True, nout=2)(*p, boundaries=boundaries, window=window)
            for p in self.parts
        ]

    def histogram(self):
        """Lazy (or concrete, for in-memory input) merged :class:`ScoreHistogram`."""
        if not self.lazy:
            (h,), st = self.make(*self.parts[0], boundaries=None)
            return delayed(_checked_histogram)(h, st, self.has_weight, self.has_amount)
        ph = self.partition_hists(None)
        h = tree([p[0][0] for p in ph], merge_hists)
        st = tree([p[1] for p in ph], merge_stats)
        return delayed(_checked_histogram, pure=True)(h, st, self.has_weight, self.has_amount)


def _checked_histogram(h, stats, has_weight, has_amount):
    check_stats(stats, has_weight=has_weight, has_amount=has_amount)
    return ScoreHistogram._from_parts(h, stats, has_weight)


def _finish(value, lazy: bool, compute: bool, client, post=None):
    """Compute ``value`` (in memory: synchronously, here) unless ``compute=False``; then ``post``."""
    from ..cluster import compute as _compute

    if not compute:
        return value if post is None else delayed(post)(value)
    if not lazy:
        out = dask.compute(value, scheduler="sync")[0]
    else:
        out = _compute(value, client=client)[0]
    return out if post is None else post(out)


def _check_gather(src: _Source, client) -> None:
    """Refuse to gather a histogram larger than one task's budget (a sizing pass decides)."""
    from ._ranges import make_plan

    plan = make_plan(src, 1, None, compute=True, client=client, spec=Spec())
    if plan.distinct_estimate > plan.max_scores_per_task:
        raise ParameterError(
            f"score_histogram would gather about {plan.distinct_estimate:,.0f} distinct scores into one "
            f"task and the client, more than max_scores_per_task={plan.max_scores_per_task:,}. Use the "
            "functions that reduce by score range on the workers instead (roc_auc_score, "
            "classification_metrics, choose_threshold(y, s, ...), Report.classification), or raise the "
            "budget with dask.config.set({'daskml_scale.evaluation.max_scores_per_task': n})."
        )


def score_histogram(y_true, y_score, *, sample_weight=None, amount=None, compute=True, client=None):
    """Exact per-distinct-score histogram of labels and scores, gathered to the client.

    The whole histogram is one object: one row per distinct score. For Dask input a sizing pass
    first checks that it fits one task's budget (``max_scores_per_task``, see
    :func:`classification_metrics`) and raises otherwise; then one pass builds it. The curves,
    thresholds and reports do NOT need it: they are reduced by score range on the workers.

    Parameters
    ----------
    y_true : dask Series/array, pandas Series or array-like
        Binary labels 0/1 (or boolean).
    y_score : same kind as ``y_true``, partitioned alike
        Scores, higher meaning more likely positive.
    sample_weight : same kind, optional
        Non-negative row weights.
    amount : same kind, optional
        Amount per row (e.g. transaction amount) for amount-weighted costs and recall.
    compute : bool
        If False, return a ``dask.delayed`` value (the sizing check still runs now).
    client : distributed.Client, optional
        Client to compute on; None uses the default.

    Returns
    -------
    ScoreHistogram

    Raises
    ------
    ParameterError
        More distinct scores than one task's budget.

    Notes
    -----
    Passes over Dask input: two (sizing, then binning). The histogram holds about 6 float64 per
    distinct score: ~48 MB per million distinct scores.

    Examples
    --------
    >>> import numpy as np
    >>> h = score_histogram(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.8]))
    >>> h.scores, h.pos
    (array([0.1, 0.8]), array([0., 2.]))
    """
    src = _Source.from_arrays(y_true, y_score, sample_weight, amount)
    if src.lazy:
        _check_gather(src, client)
    return _finish(src.histogram(), src.lazy, compute, client)


def classification_metrics(
    df,
    *,
    label: str = "is_fraud",
    score: str = "score",
    weight: str | None = None,
    amount: str | None = None,
    threshold: float = 0.5,
    score_ranges="auto",
    passes="auto",
    compute: bool = True,
    client=None,
) -> dict:
    """All scalar classification metrics of a scored table, exact, with bounded memory per task.

    Passes over Dask input: one sizing pass (row counts, validation, a sketch of the distinct
    scores that plans the score ranges and passes), then one binning pass (or more when the
    distinct scores exceed what the workers' memory should hold at once: see ``passes``). Each
    range is merged and reduced on its worker; only about 15 numbers per range reach the client.
    In-memory input is computed in this process in one pass.

    Parameters
    ----------
    df : dask or pandas DataFrame
        Holds the label and score columns (and optional weight and amount columns).
    label, score : str
        Column names of the 0/1 label and the score.
    weight : str, optional
        Column of non-negative sample weights.
    amount : str, optional
        Column of amounts: adds ``fraud_amount``, ``fraud_amount_caught`` and ``amount_recall``.
    threshold : float
        Rows with ``score >= threshold`` are alerts (predicted positive).
    score_ranges : "auto" (default), int or sequence of float
        How the score axis is split so that no task holds more than ``max_scores_per_task``
        distinct scores (dask config ``daskml_scale.evaluation.max_scores_per_task``, default 2M,
        ~64 MB). ``"auto"`` (or None): as many ranges as the sizing pass's estimate of distinct
        scores needs (one for tied scores), cut at quantiles of the distinct scores. An int: that
        many ranges; a sequence: these boundaries. Results are exact and identical whatever it is.
    passes : "auto" (default) or int
        Sequential binning passes over the data, from the highest scores down, each keeping only
        its group of ranges: ``"auto"`` (or None) makes as many as the workers' memory needs (dask
        config ``daskml_scale.evaluation.max_scores_per_pass``, default 15% of the workers'
        ``memory_limit``); 1 for tied scores. An int > 1 needs ``compute=True``.
    compute : bool
        If False, return a ``dask.delayed`` dict, to compute with other lazy metrics in one binning
        pass (the sizing pass runs now; the binning is one pass).
    client : distributed.Client, optional

    Returns
    -------
    dict
        ``roc_auc``, ``pr_auc`` (average precision, as scikit-learn), ``log_loss``, ``brier``
        (NaN when a score is outside [0, 1]), ``threshold``, ``precision``, ``recall``, ``f1``,
        ``alerts``, ``alert_rate``, ``n``, ``n_positive``, ``positive_rate``, ``score_min``,
        ``score_max`` [, ``weight_total``, ``fraud_amount``, ``fraud_amount_caught``,
        ``amount_recall``].

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"is_fraud": [0, 0, 1, 1], "score": [0.1, 0.4, 0.35, 0.8]})
    >>> m = classification_metrics(df)
    >>> m["roc_auc"], m["n_positive"]
    (0.75, 2)
    """
    t = check_threshold(threshold)
    src = _Source.from_frame(df, label, score, weight, amount)
    res = evaluate(
        src, Spec(threshold=t), score_ranges=score_ranges, passes=passes, compute=compute, client=client
    )
    if not compute:
        return delayed(_metrics_of, pure=True)(res)
    warn_undefined(res["metrics"])
    return res["metrics"]


def _metrics_of(res):
    return res["metrics"]


def _key_of(res, key):
    return res["metrics"][key]


def _metric(key, y_true, y_score, sample_weight, compute, client, score_ranges="auto", passes="auto"):
    src = _Source.from_arrays(y_true, y_score, sample_weight, None)
    res = evaluate(src, Spec(), score_ranges=score_ranges, passes=passes, compute=compute, client=client)
    if not compute:
        return delayed(_key_of, pure=True)(res, key)
    warn_undefined(res["metrics"], keys=(key,))
    return res["metrics"][key]


def roc_auc_score(
    y_true, y_score, *, sample_weight=None, score_ranges="auto", passes="auto", compute=True, client=None
):
    """Exact area under the ROC curve, equal to :func:`sklearn.metrics.roc_auc_score`.

    Computed from per-distinct-score counts merged by score range on the workers (ties count one
    half, as in scikit-learn's trapezoidal rule): each range gives its partial area given the
    counts above it; no score is collected to the client. Passes over Dask input: one sizing pass
    and one binning pass (more only when the workers' memory needs them). Two Dask Series from the
    same DataFrame are read together: the upstream graph is computed once per pass.

    Parameters
    ----------
    y_true, y_score : dask Series/arrays partitioned alike, or in-memory arrays
        Binary 0/1 labels and scores.
    sample_weight : same kind, optional
    score_ranges : "auto" (default), int or sequence of float
        How the score axis is split so that no task holds more than ``max_scores_per_task``
        distinct scores (dask config ``daskml_scale.evaluation.max_scores_per_task``, default 2M,
        ~64 MB). ``"auto"`` (or None): as many ranges as the sizing pass's estimate of distinct
        scores needs (one for tied scores), cut at quantiles of the distinct scores. An int: that
        many ranges; a sequence: these boundaries. Results are exact and identical whatever it is.
    passes : "auto" (default) or int
        Sequential binning passes over the data, from the highest scores down, each keeping only
        its group of ranges: ``"auto"`` (or None) makes as many as the workers' memory needs (dask
        config ``daskml_scale.evaluation.max_scores_per_pass``, default 15% of the workers'
        ``memory_limit``); 1 for tied scores. An int > 1 needs ``compute=True``.
    compute : bool
        If False, return a ``dask.delayed`` float (the sizing pass runs now).
    client : distributed.Client, optional

    Returns
    -------
    float
        NaN (with an ``UndefinedMetricWarning``, as scikit-learn) when only one class is present.

    Raises
    ------
    SchemaError
        Non-finite scores (NaN or +-inf), labels other than 0/1, negative or non-finite weights, or
        weights that are all zero (as scikit-learn); the message gives the count.

    Examples
    --------
    >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    return _metric("roc_auc", y_true, y_score, sample_weight, compute, client, score_ranges, passes)


def average_precision_score(
    y_true, y_score, *, sample_weight=None, score_ranges="auto", passes="auto", compute=True, client=None
):
    """Exact average precision (PR-AUC), equal to :func:`sklearn.metrics.average_precision_score`.

    The step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, tied scores
    grouped into one threshold as scikit-learn does; each score range adds its terms on its worker
    given the cumulative counts of the ranges above. Passes as :func:`roc_auc_score`.

    Parameters
    ----------
    y_true, y_score, sample_weight, score_ranges, passes, compute, client
        As :func:`roc_auc_score`.

    Returns
    -------
    float
        0.0 with a warning when there is no positive (as scikit-learn).

    Examples
    --------
    >>> round(average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    return _metric("pr_auc", y_true, y_score, sample_weight, compute, client, score_ranges, passes)


def log_loss(y_true, y_score, *, sample_weight=None, compute=True, client=None):
    """Mean log loss, equal to :func:`sklearn.metrics.log_loss` for binary labels.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of the scores'
    dtype, as scikit-learn does: ``np.finfo(np.float32).eps`` for float32 scores, float64's for
    float64, integer or list input. (scikit-learn then computes float32 input in float32; we sum in
    float64, so the two agree to float32 precision, about 1e-7 relative.) Passes as
    :func:`roc_auc_score` (the sum is split by score range like the areas).

    Raises :class:`~daskml_scale.errors.SchemaError` when a score lies outside [0, 1], is not finite,
    or when every sample weight is zero.

    Examples
    --------
    >>> round(log_loss([0, 1], [0.2, 0.9]), 4)
    0.1643
    """
    return _prob_metric("log_loss", y_true, y_score, sample_weight, compute, client)


def brier_score_loss(y_true, y_score, *, sample_weight=None, compute=True, client=None):
    """Mean squared difference between the 0/1 label and the probability (Brier score).

    Passes as :func:`roc_auc_score`.

    Examples
    --------
    >>> round(brier_score_loss([0, 1], [0.2, 0.9]), 4)
    0.025
    """
    return _prob_metric("brier", y_true, y_score, sample_weight, compute, client)


def _checked_prob(res, key):
    m = res["metrics"]
    if m["score_min"] < 0 or m["score_max"] > 1:
        raise SchemaError(
            f"{key} needs probabilities in [0, 1]; scores range over [{m['score_min']}, {m['score_max']}]. "
            "Pass predicted probabilities (e.g. predict_proba[:, 1]), not raw margins.",
            column="score",
        )
    return m[key]


def _prob_metric(key, y_true, y_score, sample_weight, compute, client):
    src = _Source.from_arrays(y_true, y_score, sample_weight, None)
    res = evaluate(src, Spec(), compute=compute, client=client)
    return delayed(_checked_prob)(res, key) if not compute else _checked_prob(res, key)
