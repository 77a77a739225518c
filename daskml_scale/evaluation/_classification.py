"""Exact out-of-core classification metrics: ROC-AUC, average precision, log loss, Brier, F1.

Inputs are Dask Series/arrays partitioned alike, a Dask DataFrame with named columns, or in-memory
numpy/pandas. The data are reduced partition by partition to exact per-distinct-score histograms
(see :mod:`._histogram`) merged in a tree reduction; no score is collected to the client.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
from dask import delayed

from ..errors import ParameterError, SchemaError
from ._histogram import (
    ScoreHistogram,
    _as_array,
    check_stats,
    check_threshold,
    finalize_metrics,
    hist_from_arrays,
    hist_from_frame,
    merge_hists,
    merge_stats,
    offsets_above,
    partial_sums,
    range_totals,
    warn_undefined,
)

__all__ = [
    "average_precision_score",
    "brier_score_loss",
    "classification_metrics",
    "log_loss",
    "roc_auc_score",
    "score_histogram",
]

SPLIT_EVERY = 8
RANGE_TARGET = 2_000_000  # distinct scores per range with score_ranges="auto" (~100 MB merged)


def _is_dask(x) -> bool:
    return dask.is_dask_collection(x)


def _tree(items: list, func, split_every: int = SPLIT_EVERY):
    """Tree reduction of delayed ``items`` with the n-ary ``func``."""
    if not items:
        return delayed(func)()
    while len(items) > 1:
        items = [
            delayed(func, pure=True)(*items[i : i + split_every]) for i in range(0, len(items), split_every)
        ]
    return items[0]


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


class _Source:
    """The rows to evaluate: partitions of (label, score[, weight, amount]) as delayed or in memory."""

    def __init__(self, parts: list, *, lazy: bool, has_weight: bool, has_amount: bool, make):
        self.parts = parts  # one entry per partition: args for ``make``
        self.lazy = lazy
        self.has_weight = has_weight
        self.has_amount = has_amount
        self.make = make

    @classmethod
    def from_arrays(cls, y_true, y_score, sample_weight=None, amount=None) -> _Source:
        arrays = {"y_true": y_true, "y_score": y_score, "sample_weight": sample_weight, "amount": amount}
        given = {k: v for k, v in arrays.items() if v is not None}
        kinds = {k: _is_dask(v) for k, v in given.items()}
        if len(set(kinds.values())) > 1:
            raise SchemaError(
                "y_true, y_score, sample_weight and amount must all be Dask collections or all be in memory; "
                f"got Dask for {sorted(k for k, d in kinds.items() if d)} and in-memory for "
                f"{sorted(k for k, d in kinds.items() if not d)}. Convert with dd.from_pandas or select the "
                "columns from one Dask DataFrame."
            )
        if not any(kinds.values()):
            n = {
                k: len(np.asarray(v).ravel()) if not isinstance(v, pd.Series) else len(v)
                for k, v in given.items()
            }
            if len(set(n.values())) > 1:
                raise SchemaError(f"Inputs have different lengths {n}: they must have one value per row.")
            return cls(
                [(y_true, y_score, sample_weight, amount)],
                lazy=False,
                has_weight=sample_weight is not None,
                has_amount=amount is not None,
                make=hist_from_arrays,
            )
        blocks = {k: _blocks(v, k) for k, v in given.items()}
        nparts = {k: len(b) for k, b in blocks.items()}
        if len(set(nparts.values())) > 1:
            raise SchemaError(
                f"Inputs have different numbers of partitions {nparts}: they must be partitioned alike. "
                "Select the columns from one DataFrame, or use classification_metrics(df, label=..., score=...)."
            )
        m = next(iter(nparts.values()))
        get = {k: blocks.get(k, [None] * m) for k in arrays}
        parts = [
            (get["y_true"][i], get["y_score"][i], get["sample_weight"][i], get["amount"][i]) for i in range(m)
        ]
        return cls(
            parts,
            lazy=True,
            has_weight=sample_weight is not None,
            has_amount=amount is not None,
            make=hist_from_arrays,
        )

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
        if _is_dask(sub):
            parts = [(p, label, score, weight, amount) for p in sub.to_delayed()]
            lazy = True
        else:
            parts = [(sub, label, score, weight, amount)]
            lazy = False
        return cls(
            parts,
            lazy=lazy,
            has_weight=weight is not None,
            has_amount=amount is not None,
            make=hist_from_frame,
        )

    # --------------------------------------------------------------------------------------- graph
    def _partition_hists(self, boundaries, window=None):
        if self.lazy:
            return [
                delayed(self.make, pure=True, nout=2)(*p, boundaries=boundaries, window=window)
                for p in self.parts
            ]
        return [self.make(*p, boundaries=boundaries, window=window) for p in self.parts]

    def histogram(self):
        """Lazy (or concrete, for in-memory input) merged :class:`ScoreHistogram`."""
        ph = self._partition_hists(None)
        if not self.lazy:
            (h,), st = ph[0]
            return delayed(_checked_histogram)(h, st, self.has_weight, self.has_amount)
        h = _tree([p[0][0] for p in ph], merge_hists)
        st = _tree([p[1] for p in ph], merge_stats)
        return delayed(_checked_histogram, pure=True)(h, st, self.has_weight, self.has_amount)

    def metrics(self, threshold: float, boundaries):
        """Lazy metrics dict, reduced range by range on the workers."""
        ph = self._partition_hists(boundaries)
        nranges = 1 if boundaries is None else len(boundaries) + 1
        if self.lazy:
            merged = [_tree([p[0][b] for p in ph], merge_hists) for b in range(nranges)]
            st = _tree([p[1] for p in ph], merge_stats)
            totals = [delayed(range_totals, pure=True)(h) for h in merged]
            partials = [
                delayed(partial_sums, pure=True)(h, delayed(offsets_above)(totals, b), threshold, st)
                for b, h in enumerate(merged)
            ]
        else:
            hs, st = ph[0]
            totals = [range_totals(h) for h in hs]
            partials = [partial_sums(h, offsets_above(totals, b), threshold, st) for b, h in enumerate(hs)]
        return delayed(finalize_metrics, pure=True)(
            st, *partials, threshold=threshold, has_weight=self.has_weight, has_amount=self.has_amount
        )

    def metrics_in_passes(self, threshold: float, boundaries, passes: int, client=None) -> dict:
        """Metrics dict computed in ``passes`` sequential passes, each over a group of score ranges.

        Groups go from the highest scores down, so each pass knows the exact totals of every range
        above it (from the earlier passes): each pass reads the data again but holds only its
        group's distinct scores, which bounds the memory per worker by distinct / passes.
        """
        from ..cluster import compute

        nranges = len(boundaries) + 1
        edges = np.concatenate([[-np.inf], boundaries, [np.inf]])
        groups = [g for g in np.array_split(np.arange(nranges)[::-1], passes) if len(g)]
        above = np.zeros(5)
        partials, stats = [], None
        for g in groups:
            window = (edges[g.min()], edges[g.max() + 1])
            ph = self._partition_hists(boundaries, window)
            merged = {b: _tree([p[0][b] for p in ph], merge_hists) for b in g}  # g: high to low
            st = _tree([p[1] for p in ph], merge_stats)
            out, totals = [], []
            for b in g:
                tot = delayed(range_totals, pure=True)(merged[b])
                off = delayed(_add_offsets)(above, *totals)
                out.append(delayed(partial_sums, pure=True)(merged[b], off, threshold, st))
                totals.append(tot)
            res = compute(st, out, totals, client=client)  # small: a dozen sums per range
            stats = res[0]
            check_stats(stats, has_weight=self.has_weight, has_amount=self.has_amount)
            partials.extend(res[1])
            above = _add_offsets(above, *res[2])
        return finalize_metrics(
            stats, *partials, threshold=threshold, has_weight=self.has_weight, has_amount=self.has_amount
        )

    def sample_boundaries(self, n_ranges, client=None, per_partition: int = 2000) -> np.ndarray:
        """Score-range boundaries at quantiles of a per-partition sample (a light extra pass).

        ``n_ranges="auto"`` estimates the number of distinct scores from the sample (rows times the
        share of distinct values in it, or "few" when the sample repeats itself) and uses one range
        per ``RANGE_TARGET`` distinct scores. The estimate only sizes the ranges: results are exact
        whatever it says.
        """
        from ..cluster import compute

        sample = _Sampler(self.make is hist_from_frame, per_partition)
        if self.lazy:
            tasks = [delayed(sample)(*p) for p in self.parts]
            samples = compute(*tasks, client=client)  # small: <= per_partition values per partition
        else:
            samples = [sample(*p) for p in self.parts]
        u = np.concatenate([s[0] for s in samples])
        if len(u) == 0:
            return np.empty(0)
        wts = np.concatenate([s[1] for s in samples])  # rows each sampled value stands for
        if n_ranges == "auto":
            ratio = len(np.unique(u)) / len(u)
            distinct = wts.sum() * ratio if ratio > 0.5 else len(np.unique(u))
            n_ranges = max(1, int(np.ceil(distinct / RANGE_TARGET)))
            if n_ranges == 1:
                return np.empty(0)
        order = np.argsort(u, kind="stable")
        u, wts = u[order], wts[order]
        cum = np.cumsum(wts) / wts.sum()
        qs = np.arange(1, n_ranges) / n_ranges
        return np.unique(u[np.minimum(np.searchsorted(cum, qs), len(u) - 1)])


class _Sampler:
    """A seeded random sample of up to ``k`` of a partition's scores, each standing for ``rows / k``
    rows: enough to place range boundaries at row quantiles without sorting the partition."""

    def __init__(self, frame: bool, k: int):
        self.frame, self.k = frame, k

    def __call__(self, *args, **_):
        if self.frame:
            df, _label, score = args[:3]
            s = _as_array(df[score], "y_score")
        else:
            s = _as_array(args[1], "y_score")
        s = s[np.isfinite(s)]  # non-finite scores are refused by the pass itself, with their count
        rows = len(s)
        if rows > self.k:
            s = np.random.default_rng(rows).choice(s, self.k, replace=False)
        return np.sort(s), np.full(len(s), rows / max(len(s), 1))


def _add_offsets(above, *totals):
    out = np.array(above, dtype=float)
    for t in totals:
        out = out + t
    return out


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


def _boundaries(src: _Source, score_ranges, client) -> np.ndarray | None:
    if score_ranges is None:
        return None
    if isinstance(score_ranges, str):
        if score_ranges != "auto":
            raise ParameterError(
                f"score_ranges must be None, 'auto', an int >= 1 or a sorted list of boundaries; got {score_ranges!r}."
            )
        b = src.sample_boundaries("auto", client=client)
        return b if len(b) else None
    if isinstance(score_ranges, (int, np.integer)) and not isinstance(score_ranges, bool):
        if score_ranges < 1:
            raise ParameterError(
                f"score_ranges must be >= 1 or a sorted list of boundaries; got {score_ranges}."
            )
        if score_ranges == 1:
            return None
        return src.sample_boundaries(int(score_ranges), client=client)
    b = np.asarray(score_ranges, dtype=float).ravel()
    if np.any(np.isnan(b)) or np.any(np.diff(b) <= 0):
        raise ParameterError("score_ranges boundaries must be strictly increasing numbers without NaN.")
    return b


def score_histogram(y_true, y_score, *, sample_weight=None, amount=None, compute=True, client=None):
    """Exact per-distinct-score histogram of labels and scores, in one pass.

    The building block of every other classification metric: curves, thresholds and costs are
    computed from it. Its memory is one row per distinct score (see Notes).

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
        If False, return a ``dask.delayed`` value.
    client : distributed.Client, optional
        Client to compute on; None uses the default.

    Returns
    -------
    ScoreHistogram

    Notes
    -----
    The histogram holds about 6 float64 per distinct score: ~48 MB per million distinct scores. Round
    nothing to save memory; for tens of millions of distinct scores use the scalar metrics with
    ``score_ranges=`` instead, which never gather the histogram.

    Examples
    --------
    >>> import numpy as np
    >>> h = score_histogram(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.8]))
    >>> h.scores, h.pos
    (array([0.1, 0.8]), array([0., 2.]))
    """
    src = _Source.from_arrays(y_true, y_score, sample_weight, amount)
    return _finish(src.histogram(), src.lazy, compute, client)


def classification_metrics(
    df,
    *,
    label: str = "is_fraud",
    score: str = "score",
    weight: str | None = None,
    amount: str | None = None,
    threshold: float = 0.5,
    score_ranges=None,
    passes: int = 1,
    compute: bool = True,
    client=None,
) -> dict:
    """All scalar classification metrics of a scored table in ONE pass over the data.

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
    score_ranges : int, "auto" or sequence of float, optional
        Split the score axis into this many ranges (boundaries from a light sampling pass), into one
        range per ~2M estimated distinct scores (``"auto"``), or at these boundaries, so that no task
        holds more than about 1/R of the distinct scores. Only needed for tens of millions of
        distinct (continuous) scores; results are identical.
    passes : int
        With ``score_ranges``, evaluate the ranges in this many sequential passes over the data (from
        the highest scores down), so that only 1/passes of the distinct scores is held at a time:
        memory per worker bounded by distinct scores / passes, at the cost of reading the data
        ``passes`` times. Needs ``compute=True``.
    compute : bool
        If False, return a ``dask.delayed`` dict, to compute with other lazy metrics in one pass.
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
    _check_passes(passes, score_ranges, compute)
    b = _boundaries(src, score_ranges, client)
    if passes > 1 and b is not None and src.lazy:
        m = src.metrics_in_passes(t, b, passes, client=client)
    else:
        m = _finish(src.metrics(t, b), src.lazy, compute, client)
    if compute:
        warn_undefined(m)
    return m


def _check_passes(passes, score_ranges, compute) -> None:
    if not isinstance(passes, (int, np.integer)) or isinstance(passes, bool) or passes < 1:
        raise ParameterError(f"passes must be a positive integer; got {passes!r}.")
    if passes > 1 and score_ranges is None:
        raise ParameterError(
            "passes > 1 splits the work by score range: give score_ranges too (e.g. 'auto')."
        )
    if passes > 1 and not compute:
        raise ParameterError("passes > 1 computes pass after pass: it needs compute=True.")


def _metric(key, y_true, y_score, sample_weight, compute, client, score_ranges=None, passes=1):
    src = _Source.from_arrays(y_true, y_score, sample_weight, None)
    _check_passes(passes, score_ranges, compute)
    b = _boundaries(src, score_ranges, client)
    if passes > 1 and b is not None and src.lazy:
        m = src.metrics_in_passes(0.5, b, passes, client=client)
        warn_undefined(m, keys=(key,))
        return m[key]
    m = src.metrics(0.5, b)
    if not compute:
        return delayed(dict.__getitem__)(m, key)
    m = _finish(m, src.lazy, True, client)
    warn_undefined(m, keys=(key,))
    return m[key]


def roc_auc_score(
    y_true, y_score, *, sample_weight=None, score_ranges=None, passes=1, compute=True, client=None
):
    """Exact area under the ROC curve, equal to :func:`sklearn.metrics.roc_auc_score`.

    Computed from per-distinct-score counts merged across partitions (ties count one half, as in
    scikit-learn's trapezoidal rule); no score is collected to the client.

    Parameters
    ----------
    y_true, y_score : dask Series/arrays partitioned alike, or in-memory arrays
        Binary 0/1 labels and scores.
    sample_weight : same kind, optional
    score_ranges : int, "auto" or sequence, optional
        See :func:`classification_metrics`; for tens of millions of distinct scores.
    passes : int
        See :func:`classification_metrics`: bounds memory per worker by distinct scores / passes.
    compute : bool
        If False, return a ``dask.delayed`` float.
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
    y_true, y_score, *, sample_weight=None, score_ranges=None, passes=1, compute=True, client=None
):
    """Exact average precision (PR-AUC), equal to :func:`sklearn.metrics.average_precision_score`.

    The step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, tied scores
    grouped into one threshold as scikit-learn does.

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
    """Mean log loss, equal to :func:`sklearn.metrics.log_loss` for binary labels, in one pass.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of the scores'
    dtype, as scikit-learn does: ``np.finfo(np.float32).eps`` for float32 scores, float64's for
    float64, integer or list input. (scikit-learn then computes float32 input in float32; we sum in
    float64, so the two agree to float32 precision, about 1e-7 relative.)

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

    Examples
    --------
    >>> round(brier_score_loss([0, 1], [0.2, 0.9]), 4)
    0.025
    """
    return _prob_metric("brier", y_true, y_score, sample_weight, compute, client)


def _checked_prob(m, key):
    if m["score_min"] < 0 or m["score_max"] > 1:
        raise SchemaError(
            f"{key} needs probabilities in [0, 1]; scores range over [{m['score_min']}, {m['score_max']}]. "
            "Pass predicted probabilities (e.g. predict_proba[:, 1]), not raw margins.",
            column="score",
        )
    return m[key]


def _prob_metric(key, y_true, y_score, sample_weight, compute, client):
    src = _Source.from_arrays(y_true, y_score, sample_weight, None)
    value = delayed(_checked_prob)(src.metrics(0.5, None), key)
    return _finish(value, src.lazy, compute, client)
