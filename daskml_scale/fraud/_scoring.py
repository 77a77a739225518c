"""Batch scoring and threshold choice for fraud models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import schema as S
from ..cluster import compute
from ..errors import ParameterError, check_fitted
from ._base import check_transactions, to_dask

__all__ = ["score", "tune_threshold"]


def _check_threshold(threshold, owner):
    if (
        not isinstance(threshold, (int, float, np.floating))
        or isinstance(threshold, bool)
        or not threshold >= 0.0
    ):
        raise ParameterError(
            f"The 'threshold' parameter of {owner} must be a float >= 0 (scores are in [0, 1]; inf "
            f"raises no alert). Got {threshold!r} instead."
        )
    return float(threshold)


def score(model, ddf, *, out=None, history=None, threshold=None, client=None):
    """Score transactions with a fitted fraud model: ``transaction_id, score, is_alert``.

    The model computes its behaviour features from ``ddf`` (and ``history``, earlier transactions of
    the same cards), partition by partition. Every input row gets exactly one output row.

    Parameters
    ----------
    model : XGBoostFraudClassifier or SGDFraudClassifier
        Fitted, or loaded with :func:`load_model`.
    ddf : Dask or pandas DataFrame
        Canonical transactions (``is_fraud`` not needed).
    out : path-like, optional
        Parquet directory to write; replaced atomically (a temporary sibling, then a rename), so a
        rerun gives identical files and never duplicates.
    history : Dask or pandas DataFrame, optional
        Earlier transactions, so per-card windows at the start of the batch see their past.
    threshold : float, optional
        Alert when ``score >= threshold``; default the model's ``threshold``.
    client : distributed.Client, optional

    Returns
    -------
    dask.dataframe.DataFrame or dict
        Without ``out``: the lazy scores. With ``out``: a summary ``{"out", "rows", "alerts",
        "threshold", "model"}`` (counts read back from what was written).

    Examples
    --------
    >>> from daskml_scale.fraud import load_model, score
    >>> model = load_model("models/fraud")  # doctest: +SKIP
    >>> score(model, day_ddf, out="scores/2025-02-01", history=last_month)  # doctest: +SKIP
    {'alerts': 312, 'out': 'scores/2025-02-01', 'rows': 1000000, 'threshold': 0.93, ...}
    """
    check_fitted(model, "model_columns_")
    check_transactions(ddf, "score", label=False)
    threshold = _check_threshold(model.threshold if threshold is None else threshold, "score")
    hist = None if history is None else to_dask(history)
    scored = model.predict_proba(to_dask(ddf), history=hist)
    scored = scored.assign(**{S.IS_ALERT: scored[S.SCORE] >= threshold})
    # rows in transaction order inside each partition: a rerun writes byte-identical files
    scored = scored.map_partitions(_sorted_by_id, meta=scored._meta)
    if out is None:
        return scored
    from ..io import write_parquet

    write_parquet(scored, out, client=client)
    import dask.dataframe as dd

    written = dd.read_parquet(str(out), columns=[S.IS_ALERT])
    # small: two counts
    rows, alerts = compute(written[S.IS_ALERT].count(), written[S.IS_ALERT].sum(), client=client)
    return {
        "out": str(Path(out)),
        "rows": int(rows),
        "alerts": int(alerts),
        "threshold": threshold,
        "model": type(model).__name__,
    }


def tune_threshold(
    model,
    ddf,
    *,
    method: str = "budget",
    history=None,
    cost_fn: float | None = None,
    cost_fp: float | None = None,
    use_amount: bool = False,
    budget: float | None = None,
    target_fpr: float | None = None,
    client=None,
) -> float:
    """Choose the model's alert threshold on labelled transactions and set it on the model.

    Delegates to :func:`daskml_scale.evaluation.choose_threshold` over the model's scores.

    Parameters
    ----------
    model : fitted fraud classifier
    ddf : Dask or pandas DataFrame
        Labelled canonical transactions not used for training (e.g. the latest days).
    method : {'cost', 'budget', 'fpr'}
        Minimise expected cost (``cost_fn`` per missed fraud, ``cost_fp`` per false alert, the missed
        cost scaled by ``amount`` when ``use_amount``); alert on at most ``budget`` (a fraction of
        transactions); or keep the false-positive rate at most ``target_fpr``.
    history : optional
        Earlier transactions for the behaviour features.
    client : distributed.Client, optional

    Returns
    -------
    float
        The threshold, also set as ``model.threshold``.
    """
    from ..evaluation import choose_threshold

    check_fitted(model, "model_columns_")
    check_transactions(ddf, "tune_threshold", label=True)
    keep = [S.IS_FRAUD] + ([S.AMOUNT] if use_amount else [])
    featurized = model._featurize(to_dask(ddf), None if history is None else to_dask(history))
    scored = model._score_frame(featurized, keep=keep)
    kwargs = {"method": method, "budget": budget, "target_fpr": target_fpr, "client": client}
    if cost_fn is not None:
        kwargs["cost_fn"] = cost_fn
    if cost_fp is not None:
        kwargs["cost_fp"] = cost_fp
    if use_amount:
        kwargs["amount"] = scored[S.AMOUNT]
    t = float(choose_threshold(scored[S.IS_FRAUD], scored[S.SCORE], **kwargs))
    model.set_params(threshold=t)
    return t


def _sorted_by_id(pdf):
    return pdf.sort_values(S.TRANSACTION_ID, kind="stable").reset_index(drop=True)
