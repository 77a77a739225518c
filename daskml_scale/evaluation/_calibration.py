"""Expected calibration error from equal-width probability bins reduced on the workers.

Each partition is reduced to three numbers per bin (weighted rows, weighted positives, weighted sum
of scores); the bins of all partitions are added in one tree reduction and only ``3 * n_bins``
numbers reach the client. The bins are those of :func:`calibration_curve` (``strategy="uniform"``)
and of the reliability plot of :meth:`Report.classification`.
"""

from __future__ import annotations

import numpy as np

from ..cluster import tree_reduce
from ..errors import ParameterError

__all__ = ["expected_calibration_error"]


def ece_from_bins(tot, pos, ssum) -> float:
    """ECE of per-bin weighted rows, positives and score sums: ``sum_b |ssum_b - pos_b| / sum_b tot_b``,
    i.e. the bins' |mean predicted - observed rate| weighted by their share of the rows."""
    tot, pos, ssum = (np.asarray(a, dtype="float64") for a in (tot, pos, ssum))
    n = tot.sum()
    return float(np.abs(ssum - pos).sum() / n) if n > 0 else float("nan")


def _bins(pdf, label, score, weight, n_bins):
    s = pdf[score].to_numpy(dtype="float64")
    y = pdf[label].to_numpy(dtype="float64")
    w = np.ones_like(s) if weight is None else pdf[weight].to_numpy(dtype="float64")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], s)  # as calibration_curve: bin i is (edges[i], edges[i + 1]]
    out = np.zeros((4, n_bins))
    out[0] = np.bincount(ids, weights=w, minlength=n_bins)
    out[1] = np.bincount(ids, weights=w * y, minlength=n_bins)
    out[2] = np.bincount(ids, weights=w * s, minlength=n_bins)
    bad = ~np.isfinite(s) | (s < 0) | (s > 1)
    out[3, 0] = bad.sum()
    return out


def _add(*parts):
    return np.sum(parts, axis=0)


def expected_calibration_error(
    df,
    *,
    label: str = "is_fraud",
    score: str = "score",
    weight: str | None = None,
    n_bins: int = 10,
    compute: bool = True,
    client=None,
):
    """Expected calibration error (ECE) of probability scores, one pass over the data.

    The scores are cut into ``n_bins`` equal-width bins on [0, 1] (the bins of
    :func:`calibration_curve` with ``strategy="uniform"``); ECE is the mean over bins of
    ``|mean score - observed positive rate|`` weighted by each bin's share of the (weighted) rows.
    With rare positives most rows fall in the first bin, so ECE is then close to
    ``|mean score - positive rate|`` over all rows.

    Parameters
    ----------
    df : dask or pandas DataFrame
        Holds the 0/1 label and the score (a probability in [0, 1]) columns.
    label, score : str
        Column names.
    weight : str, optional
        Column of non-negative sample weights.
    n_bins : int
        Number of equal-width bins.
    compute : bool
        If False, return a ``dask.delayed`` float.
    client : distributed.Client, optional

    Returns
    -------
    float
        NaN for an empty table.

    Raises
    ------
    ParameterError
        ``n_bins`` < 1, a column missing, or a score outside [0, 1] (raised when computed).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"is_fraud": [0, 0, 1, 1], "score": [0.1, 0.2, 0.7, 0.9]})
    >>> round(expected_calibration_error(df), 6)
    0.175
    """
    import dask

    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ParameterError(
            f"The 'n_bins' parameter of expected_calibration_error must be an int >= 1. Got {n_bins!r} instead."
        )
    cols = [label, score] + ([weight] if weight is not None else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(
            f"expected_calibration_error: column {missing[0]!r} is missing; pass label=, score= or "
            f"weight= with the names of your columns (have {list(df.columns)})."
        )
    if hasattr(df, "to_delayed"):
        parts = [dask.delayed(_bins)(p, label, score, weight, int(n_bins)) for p in df[cols].to_delayed()]
        total = tree_reduce(parts, _add)
    else:
        total = dask.delayed(_bins(df, label, score, weight, int(n_bins)))
    out = dask.delayed(_finish)(total)
    if not compute:
        return out
    from ..cluster import compute as _compute

    (value,) = _compute(out, client=client)  # small: one float
    return value


def _finish(total):
    if total[3, 0] > 0:
        raise ParameterError(
            f"expected_calibration_error: {int(total[3, 0])} scores are outside [0, 1] or not finite; "
            "ECE needs probabilities (use predict_proba's scores, not margins)."
        )
    return ece_from_bins(total[0], total[1], total[2])
