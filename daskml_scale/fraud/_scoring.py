"""Batch scoring and threshold choice for fraud models."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import DaskMLScaleError, ParameterError, SchemaError, check_fitted
from ..storage import _is_local, same_place
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


def score(
    model,
    ddf,
    *,
    out=None,
    history=None,
    threshold=None,
    quarantine=None,
    strict: bool = False,
    keep=None,
    start=None,
    storage_options: dict | None = None,
    client=None,
):
    """Score transactions with a fitted fraud model: ``transaction_id, [keep...], score, is_alert``.

    The input is first coerced and checked with the rules of :func:`daskml_scale.data.validate`
    (wrong dtypes such as amounts stored as strings are parsed; a value that cannot be parsed becomes
    missing). Rows the model cannot score (a missing or unparseable time, id or amount, a non-finite
    or negative amount, an unparseable or infinite value of an extra model column; see
    :mod:`daskml_scale.fraud._quarantine`) are set aside with a ``reason``, like
    :func:`~daskml_scale.data.clean`'s quarantine, instead of failing the job; the others are scored
    as if the bad rows had never been there. Bad ``history`` rows are dropped from the history (and
    counted). The model then computes its behaviour features from the good rows (and ``history``),
    partition by partition: every good row gets exactly one output row.

    Parameters
    ----------
    model : XGBoostFraudClassifier or SGDFraudClassifier
        Fitted, or loaded with :func:`load_model`.
    ddf : Dask or pandas DataFrame
        Canonical transactions (``is_fraud`` not needed, and ignored).
    out : str or path-like, optional
        Parquet directory or fsspec URL (``s3://bucket/scores/2025-02-01``) to write with the commit
        protocol of :mod:`daskml_scale.storage`: parts, then a manifest of their rows and sha256; a
        reader never sees half an output, and a rerun replaces it in one visible step with
        identical parts, never duplicating.
    history : Dask or pandas DataFrame, optional
        Earlier transactions, so per-card windows at the start of the batch see their past.
    start : time-like or "auto", optional
        With ``history``: the batch's first time, or any earlier one. Each feature shuffle then
        carries only the history its windows read (see ``TransactionFeatures.transform``): a gain
        where the history is much longer than the batch (a day scored with a month). ``"auto"``:
        the batch's earliest parseable time, found by one pass over its timestamp column before the
        scoring pass. Default None: every history row goes through every shuffle (measured faster
        for 28 days scored with 30 of history, see ``benchmarks/RESULTS.md``).
    threshold : float, optional
        Alert when ``score >= threshold``; default the model's ``threshold``.
    quarantine : path-like, optional
        Parquet directory for the rows that cannot be scored: their coerced columns,
        ``source_partition``, ``source_row`` (where they were read) and ``reason``. Needs ``out``;
        both are written in the same pass and committed once both are complete. Without it, those
        rows are counted in the summary but not written.
    strict : bool
        Fail instead: raise :class:`~daskml_scale.errors.SchemaError` naming the column, the rule and
        the count when any row (of ``ddf`` or ``history``) fails a check, after a counting pass and
        before anything is written.
    keep : list of str, optional
        Input columns carried to the output beside the score, as they are: ``keep=["is_fraud"]``
        writes the label next to its score, so an evaluation reads one table (no join on
        ``transaction_id``). A kept ``is_fraud`` is not checked.
    storage_options : dict, optional
        Passed to the filesystem of ``out`` and ``quarantine`` (credentials, endpoint).
    client : distributed.Client, optional

    Returns
    -------
    dask.dataframe.DataFrame or dict
        Without ``out``: the lazy scores of the good rows. With ``out``: a summary ``{"out", "rows",
        "rows_in", "rows_scored", "rows_quarantined", "conserved", "counts", "quarantine", "history",
        "alerts", "threshold", "model"}``: ``rows`` is ``rows_scored``; ``counts`` the rows failing
        each check (a row failing two counts under both, and once in ``rows_quarantined``);
        ``history`` is ``{"rows_in", "rows_used", "rows_dropped", "counts"}`` or None. Row counts
        are those recorded by the tasks that wrote the parts, and ``rows_in == rows_scored +
        rows_quarantined`` is checked on independent counts before the outputs are committed.

    Raises
    ------
    SchemaError
        A required column missing (before any work), or with ``strict`` any row failing a check.

    Examples
    --------
    >>> from daskml_scale.fraud import load_model, score
    >>> model = load_model("models/fraud")  # doctest: +SKIP
    >>> score(model, day_ddf, out="scores/2025-02-01", history=last_month,
    ...       quarantine="quarantine/2025-02-01")  # doctest: +SKIP
    {'alerts': 312, 'counts': {'invalid_timestamp': 2, ...}, 'rows_in': 1000003, 'rows_scored': 1000000,
     'rows_quarantined': 3, ...}
    """
    from ._quarantine import check_rows, raise_if_bad, summarize

    check_fitted(model, "model_columns_")
    check_transactions(ddf, "score", label=False, dtypes=False)
    threshold = _check_threshold(model.threshold if threshold is None else threshold, "score")
    if not isinstance(strict, bool):
        raise ParameterError(f"The 'strict' parameter of score must be a bool. Got {strict!r} instead.")
    if quarantine is not None:
        if out is None:
            raise ParameterError(
                "score: quarantine= needs out= (the scores and the quarantine are written together)."
            )
        if same_place(out, quarantine):
            raise ParameterError("score: out and quarantine must be different directories.")
    keep = _check_keep(keep, ddf)
    if history is not None:
        check_transactions(history, "score (history)", label=False, dtypes=False)
    batch = check_rows(to_dask(ddf), model, owner="score", keep=keep)
    hist = None if history is None else check_rows(to_dask(history), model, owner="score (history)")
    if isinstance(start, str) and start == "auto":
        auto = hist is not None and model.features_ is not None
        start = _first_time(to_dask(ddf), batch.rules, client) if auto else None
    lazy_counts = [batch.counts] + ([hist.counts] if hist is not None else [])
    if strict:
        totals = compute(*lazy_counts, client=client)  # small: counts
        raise_if_bad(summarize(totals[0], batch.rules), batch.rules, "score")
        if hist is not None:
            raise_if_bad(summarize(totals[1], hist.rules), hist.rules, "score", "history rows")
    featurized = model._featurize(batch.good, None if hist is None else hist.good, start=start)
    scored = model._score_frame(featurized, keep=keep)
    scored = scored.assign(**{S.IS_ALERT: scored[S.SCORE] >= threshold})
    # rows in transaction order inside each partition: a rerun writes byte-identical files
    scored = scored.map_partitions(_sorted_by_id, meta=scored._meta)
    if out is None:
        return scored
    from ..storage import committed, write_parts

    # one pass: the scores, the quarantine and the counts (small); each written part by part and
    # committed by its manifest (rows and sha256 of every part) once every part is in place
    with (
        committed(out, storage_options) as st_out,
        committed(quarantine, storage_options)
        if quarantine is not None
        else contextlib.nullcontext() as st_q,
    ):
        alerts_lazy = scored[S.IS_ALERT].sum()
        tasks = [write_parts(scored, st_out.writer, "part")]
        if st_q is not None:
            tasks.append(write_parts(batch.bad, st_q.writer, "part"))
        res = compute(*tasks, alerts_lazy, *lazy_counts, client=client)
        st_out.add(res[0])
        if st_q is not None:
            st_q.add(res[1])
        alerts = res[len(tasks)]
        res = res[len(tasks) + 1 :]
        report = summarize(res[0], batch.rules)
        rows_scored = st_out.rows
        rows_q = st_q.rows if st_q is not None else report["rows_bad"]
        if report["rows_in"] != rows_scored + rows_q or rows_q != report["rows_bad"]:
            raise DaskMLScaleError(
                f"score: row conservation failed: {report['rows_in']} rows in, {rows_scored} scored + "
                f"{rows_q} quarantined (expected {report['rows_bad']} quarantined). Nothing was "
                "written; this is a bug, please report it."
            )
        st_out.metadata.update({"rows_in": report["rows_in"], "rows_quarantined": rows_q})
    hist_report = None
    if hist is not None:
        h = summarize(res[1], hist.rules)
        hist_report = {
            "rows_in": h["rows_in"],
            "rows_used": h["rows_in"] - h["rows_bad"],
            "rows_dropped": h["rows_bad"],
            "counts": h["counts"],
        }
    return {
        "out": _display(out),
        "rows": rows_scored,
        "rows_in": report["rows_in"],
        "rows_scored": rows_scored,
        "rows_quarantined": rows_q,
        "conserved": True,
        "counts": report["counts"],
        "quarantine": None if quarantine is None else _display(quarantine),
        "history": hist_report,
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


def _first_time(ddf, rules, client):
    """The earliest time of the batch as the checks parse it, set-aside rows included (so a lower
    bound of the rows scored); None when it has none. One pass over one column."""
    from ..data._readers import coerce_frame

    ts = S.TIMESTAMP
    col = ddf[[ts]]
    plan = {ts: rules.plan.get(ts)}
    parsed = col.map_partitions(
        coerce_frame, plan, rules.time_unit, meta=coerce_frame(col._meta, plan, rules.time_unit)
    )
    (first,) = compute(parsed[ts].min(), client=client)  # small: one time
    return None if pd.isna(first) else first


def _check_keep(keep, ddf) -> list:
    if keep is None:
        return []
    if isinstance(keep, str) or not all(isinstance(c, str) for c in keep):
        raise ParameterError(f"The 'keep' parameter of score must be a list of column names. Got {keep!r}.")
    keep = list(dict.fromkeys(keep))
    reserved = [c for c in keep if c in (S.TRANSACTION_ID, S.SCORE, S.IS_ALERT)]
    if reserved:
        raise ParameterError(f"score: keep={keep!r} names output column(s) {reserved}; drop them from keep.")
    missing = [c for c in keep if c not in ddf.columns]
    if missing:
        raise SchemaError(
            f"score: keep names column(s) {missing} that the input does not have (it has "
            f"{list(ddf.columns)}).",
            column=missing[0],
        )
    return keep


def _display(url) -> str:
    return str(Path(url)) if _is_local(url) else str(url)


def _sorted_by_id(pdf):
    return pdf.sort_values(S.TRANSACTION_ID, kind="stable").reset_index(drop=True)
