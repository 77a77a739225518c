"""``compress``: one entry point for quantization, pruning and distillation, with a measured report.

Every method returns a model of the same kind as its input (an ``ALSRecommender`` subclass for the
quantizations, an ``XGBoostFraudClassifier`` or ``SGDFraudClassifier`` for pruning and
distillation), so ``recommend_all``, ``score``, ``save``/``load_model`` and the CLI take it as is.
The trade-off is measured, not estimated, and attached as ``compression_report_``:

* ``bytes_before`` / ``bytes_after``: the two artifacts as saved (every file of the directory);
* ``quality_before`` / ``quality_after``: NDCG@k of ``recommend_all`` against a holdout (ALS), or
  PR-AUC and ROC-AUC on the evaluation part of the data (fraud), when data is given;
* ``rows_per_s_before`` / ``rows_per_s_after``: ``recommend_all`` users/s on the same users (ALS),
  or booster/linear prediction rows/s on the same model matrix (fraud), best of ``repeats`` runs
  alternating the two models.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ParameterError, check_fitted, check_in
from ._quantize import METHODS as QUANT_METHODS

__all__ = ["METHODS", "artifact_bytes", "compress"]

TREE_METHODS = ("prune", "distill")
METHODS = (*QUANT_METHODS, *TREE_METHODS)


def artifact_bytes(model) -> int:
    """Bytes of ``model`` saved as an artifact directory (every file, manifest included)."""
    tmp = Path(tempfile.mkdtemp(prefix="daskml-compress-"))
    try:
        model.save(tmp / "model")
        return int(sum(f.stat().st_size for f in (tmp / "model").rglob("*") if f.is_file()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_file_bytes(model) -> int:
    """Bytes of the saved artifact without its JSON files (manifest, features, metadata)."""
    tmp = Path(tempfile.mkdtemp(prefix="daskml-compress-"))
    try:
        model.save(tmp / "model")
        return int(
            sum(f.stat().st_size for f in (tmp / "model").rglob("*") if f.is_file() and f.suffix != ".json")
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compress(
    model,
    method: str = "int8",
    data=None,
    *,
    eval_data=None,
    k: int = 10,
    exclude_seen=None,
    timing_rows: int = 20_000,
    repeats: int = 3,
    student: str = "xgboost",
    n_estimators: int | None = None,
    size_ratio: float = 12.0,
    max_depth: int = 6,
    max_leaves: int | None = 15,
    learning_rate: float = 0.3,
    clip_quantile: float = 0.9,
    gamma: float | None = None,
    report: bool = True,
    client=None,
):
    """Compress a fitted model and attach the measured trade-off as ``compression_report_``.

    Parameters
    ----------
    model : ALSRecommender, XGBoostFraudClassifier or SGDFraudClassifier
        Fitted (or loaded).
    method : {'fp16', 'int8', 'int4', 'prune', 'distill'}
        ``fp16`` / ``int8`` / ``int4``: quantize an ALS model's factors (scored on the codes).
        ``prune``: xgboost's own pruner (``process_type='update'``, ``updater='prune'``) with
        ``gamma``, trees left as a single leaf dropped, then leaf values refreshed on the training
        data over Dask (``updater='refresh'``, ``refresh_leaf``). ``distill``: a smaller student
        (``student``) trained on the teacher's scores over the training data.
    data : Dask or pandas DataFrame, optional
        ALS: holdout interactions (``user_id, item_id``) for NDCG@``k``. Fraud: labelled
        transactions (required): the student (or the refresh) learns on the rows before the
        teacher's ``valid_from_`` and the report is measured on the rows from it on (all rows for
        both when the teacher had no validation part), unless ``eval_data`` is given.
    eval_data : Dask or pandas DataFrame, optional
        Fraud: labelled transactions for the report (then all of ``data`` is for training).
    k : int
        NDCG cut-off (ALS).
    exclude_seen : None, bool or DataFrame
        Passed to ``recommend_all`` for the NDCG of both models (ALS).
    timing_rows : int
        Users (ALS) or transactions (fraud) scored to time rows/s.
    repeats : int
        Timed runs per model, alternating; the best is reported.
    student : {'xgboost', 'sgd'}
        ``distill``: a shallow booster (``n_estimators`` trees of ``max_depth`` regressing the
        teacher's margins with squared error, then scored as ``sigmoid(margin)`` like the teacher)
        or the linear ``SGDFraudClassifier`` (least squares on the teacher's margins, solved
        exactly from per-partition sums).
    n_estimators, max_depth, max_leaves, learning_rate : int or None, int, int or None, float
        The xgboost student's size and step. With ``max_leaves`` trees grow by loss
        (``grow_policy='lossguide'``) up to ``max_leaves`` leaves, ``max_depth`` capping their
        depth; ``max_leaves=None`` grows full trees of ``max_depth``. ``n_estimators=None`` (the
        default) sizes the student by the teacher: the most trees, at least 8, whose artifact is at
        most ``1 / size_ratio`` of the teacher's (bytes only: no data read to choose it). Before,
        the default was a fixed 8 trees of at
        most 15 leaves (232 nodes), is 10.7-12.4x smaller than a 500-round, depth-6 teacher
        stopped early at 66-79 trees (600k-2M rows), and was chosen on the teacher's validation
        days: an artifact pays ~40 bytes per node and ~650 per tree, so few trees with many
        leaves beat many shallow ones (10 trees of depth 4: 304 nodes, 9.2-10.6x, and no closer).
    size_ratio : float > 1
        ``distill`` with the xgboost student and ``n_estimators=None``: the target artifact size,
        the teacher's over this (12: room above the 10x goal for the metadata's rounding).
    clip_quantile : float in [0, 1)
        ``distill`` with the xgboost student: the teacher's margins are floored at this quantile of
        their values over the training rows before the student fits them (0: no floor). The
        student's capacity then goes to ranking the top of the score distribution (what PR-AUC and
        the alert threshold read) rather than to the bulk of obviously legitimate rows.
    gamma : float, optional
        ``prune``: minimum split gain kept; default the 90th percentile of the teacher's split gains.
    report : bool
        Measure and attach ``compression_report_`` (costs a save of each model and the timings).
    client : distributed.Client, optional

    Returns
    -------
    model
        Same kind as ``model`` (for ALS: a :class:`QuantizedALSRecommender`, an ALSRecommender).

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import ALSRecommender, recommend_all
    >>> from daskml_scale.compression import compress
    >>> model = ALSRecommender(factors=16, iterations=3).fit(make_interactions(20_000, 300, 100, seed=0))
    >>> small = compress(model, "int8", timing_rows=300, repeats=1)
    >>> small.compression_report_["size_ratio"] > 1
    True
    >>> recs = recommend_all(small, n=5)
    """
    check_in("method", method, METHODS, "compress")
    if max_leaves is not None and (
        not isinstance(max_leaves, (int, np.integer)) or isinstance(max_leaves, bool) or max_leaves < 2
    ):
        raise ParameterError(
            f"The 'max_leaves' parameter of compress must be an int >= 2 or None. Got {max_leaves!r} instead."
        )
    if not isinstance(size_ratio, (int, float)) or isinstance(size_ratio, bool) or not size_ratio > 1:
        raise ParameterError(
            f"The 'size_ratio' parameter of compress must be a number > 1. Got {size_ratio!r} instead."
        )
    counts = {"k": k, "timing_rows": timing_rows, "repeats": repeats, "max_depth": max_depth}
    if n_estimators is not None:
        counts["n_estimators"] = n_estimators
    for name, v in counts.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ParameterError(
                f"The {name!r} parameter of compress must be an int >= 1. Got {v!r} instead."
            )
    if (
        not isinstance(clip_quantile, (int, float))
        or isinstance(clip_quantile, bool)
        or not (0.0 <= clip_quantile < 1.0)
    ):
        raise ParameterError(
            f"The 'clip_quantile' parameter of compress must be a float in [0, 1). Got {clip_quantile!r} "
            "instead."
        )
    from ..recommend import ALSRecommender

    if method in QUANT_METHODS:
        if not isinstance(model, ALSRecommender):
            raise ParameterError(
                f"compress(method={method!r}) quantizes ALS factors; got a {type(model).__name__}. "
                "For fraud models use method='prune' or 'distill'."
            )
        return _compress_als(model, method, data, k, exclude_seen, timing_rows, repeats, report, client)
    from ..fraud import SGDFraudClassifier, XGBoostFraudClassifier

    if not isinstance(model, (XGBoostFraudClassifier, SGDFraudClassifier)):
        raise ParameterError(
            f"compress(method={method!r}) prunes or distills fraud models; got a {type(model).__name__}. "
            "For ALS models use method='fp16', 'int8' or 'int4'."
        )
    from ._trees import compress_fraud

    return compress_fraud(
        model, method, data, eval_data=eval_data, student=student, n_estimators=n_estimators,
        max_depth=max_depth, max_leaves=max_leaves, learning_rate=learning_rate, clip_quantile=clip_quantile, gamma=gamma,
        timing_rows=timing_rows, repeats=repeats, report=report, client=client, size_ratio=size_ratio,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- ALS
def _first_users(model, n_users):
    """A light copy of ``model`` restricted to its first ``n_users`` users (for timing)."""
    m = copy.copy(model)
    m.__dict__.pop("_train_interactions", None)
    m.__dict__.pop("_train_seen", None)
    m.user_ids_ = model.user_ids_[:n_users]
    m.user_factors_ = model.user_factors_[:n_users]
    return m


def _recommend_rate(model, k, client):
    from ..cluster import compute
    from ..recommend import recommend_all

    recs = recommend_all(model, n=k, exclude_seen=False, client=client)
    t = time.perf_counter()
    (lengths,) = compute(recs.map_partitions(len), client=client)  # small: one count per partition
    seconds = time.perf_counter() - t
    return len(model.user_ids_) / seconds, int(np.sum(lengths))


def _ndcg(model, truth, k, exclude_seen, client):
    from ..evaluation import ranking_metrics
    from ..recommend import recommend_all

    recs = recommend_all(model, n=k, exclude_seen=exclude_seen, client=client)
    return float(ranking_metrics(recs, truth, k=k, client=client)[f"ndcg@{k}"])


def _timings(make_runs, repeats):
    """Best rate of each of two callables, run alternately ``repeats`` times."""
    best = [0.0, 0.0]
    for _ in range(repeats):
        for i, run in enumerate(make_runs):
            best[i] = max(best[i], run())
    return best


def _compress_als(model, method, data, k, exclude_seen, timing_rows, repeats, report, client):
    from ._als import QuantizedALSRecommender, quantize_als

    check_fitted(model, "user_factors_")
    if isinstance(model, QuantizedALSRecommender):
        raise ParameterError(
            f"compress: the model is already quantized ({model.quantization}). Compress the float "
            "ALSRecommender it came from."
        )
    t0 = time.perf_counter()
    out = quantize_als(model, method)
    seconds = time.perf_counter() - t0
    if not report:
        return out
    from ..cluster import get_client

    client = get_client(client)
    rep = {
        "kind": type(model).__name__,
        "method": method,
        "compress_seconds": seconds,
        "bytes_before": artifact_bytes(model),
        "bytes_after": artifact_bytes(out),
        "factor_bytes_before": int(model.user_factors_.nbytes + model.item_factors_.nbytes),
        "factor_bytes_after": int(out.user_factors_.nbytes + out.item_factors_.nbytes),
    }
    rep["size_ratio"] = rep["bytes_before"] / rep["bytes_after"]
    if data is not None:
        from ..recommend._matrix import check_interactions

        truth = check_interactions(data, "compress")
        rep["quality_metric"] = f"ndcg@{k}"
        rep["quality_before"] = _ndcg(model, truth, k, exclude_seen, client)
        rep["quality_after"] = _ndcg(out, truth, k, exclude_seen, client)
        rep["quality_relative_change"] = (
            (rep["quality_after"] - rep["quality_before"]) / rep["quality_before"]
            if rep["quality_before"] > 0
            else 0.0
        )
    n_users = min(int(timing_rows), len(model.user_ids_))
    a, b = _first_users(model, n_users), _first_users(out, n_users)
    before, after = _timings(
        [lambda: _recommend_rate(a, k, client)[0], lambda: _recommend_rate(b, k, client)[0]], repeats
    )
    rep.update(
        {
            "timing": f"recommend_all top-{k} of {n_users} users, best of {repeats}",
            "rows_per_s_before": before,
            "rows_per_s_after": after,
            "speed_ratio": after / before,
        }
    )
    out.compression_report_ = rep
    return out
