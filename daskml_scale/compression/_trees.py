"""Pruned and distilled fraud models: xgboost's own pruner and refresher, and teacher-student training.

``prune``
    xgboost's pruner on the trained trees (``process_type='update'``, ``updater='prune'``,
    ``gamma``): a split whose loss reduction is below ``gamma`` and whose children are leaves is
    removed, bottom-up. Trees reduced to a single leaf are dropped (their size pays for a constant),
    then every leaf value is refit on the training rows with xgboost's refresher
    (``updater='refresh'``, ``refresh_leaf=True``), distributed with ``xgboost.dask``.
``distill``
    A student trained on the teacher's scores over the training rows: a shallow booster that
    regresses the teacher's margins (log-odds) with squared error, ``xgboost.dask``, the margins
    floored at their ``clip_quantile`` quantile (rows far below the alert region all look alike to
    the student, so its few trees are spent on ranking the rows that matter for PR-AUC); its
    objective is then set to ``binary:logistic`` (base score carried over) so that it outputs
    ``sigmoid(margin)`` as the teacher does. Or the linear
    :class:`~daskml_scale.fraud.SGDFraudClassifier` whose weights are the least-squares fit of the
    teacher's margins on the standardized model matrix (per-partition sums ``X^T X``, ``X^T m``
    added in a tree, one small solve).

Soft labels (``binary:logistic`` on the teacher's probabilities), the first version, lost 0.13 of
PR-AUC at 300k rows with 15 trees of depth 4 (0.94 -> 0.81 in memory and on Dask alike): log-loss on
probabilities barely weighs the ordering of the rare high scores. The margin regression, same size,
lost 0.01 or less.

The evaluation rows are featurized with the training data as their history (as ``score`` does with
``history=``): without it their behaviour features (24h/7d/30d windows, time since the card's
previous transaction) start empty on the first day of the evaluation part.

The compressed model is the teacher's class (or ``SGDFraudClassifier``) with the teacher's fitted
features, categories, model columns and threshold: ``score``, ``save``/``load_model`` and the CLI
take it unchanged.
"""

from __future__ import annotations

import copy
import time

import dask
import numpy as np
import pandas as pd
from scipy.special import expit

from .. import schema as S
from ..cluster import get_client, tree_reduce
from ..errors import ParameterError, check_fitted, check_in
from ..fraud import SGDFraudClassifier, XGBoostFraudClassifier
from ..fraud._base import (
    check_transactions,
    compute_small,
    in_memory,
    is_dask,
    maybe_in_memory,
    model_frame,
    one_hot_matrix,
    persist,
    to_dask,
)
from ..fraud._sgd import _moments, _tree_combine

__all__ = ["compress_fraud", "distill_linear", "distill_xgboost", "prune_xgboost"]

_RIDGE = 1e-6


# ------------------------------------------------------------------------------ per partition
def _margin(pdf, booster, numeric, categories):
    X = model_frame(pdf, numeric, categories)
    if not len(X):
        return np.empty(0, dtype="float64")
    return booster.inplace_predict(X, predict_type="margin", validate_features=False).astype("float64")


def _margins(pdf, booster, numeric, categories):
    return pd.Series(_margin(pdf, booster, numeric, categories), index=pdf.index, name="margin")


def _scaled_matrix(pdf, numeric, categories, mean, scale):
    X = (one_hot_matrix(pdf, numeric, categories) - mean) / scale
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def _normal_eq(pdf, booster, numeric, categories, mean, scale):
    """``(Xa^T Xa, Xa^T m, n)`` of one partition, ``Xa = [X, 1]``, ``m`` the teacher's margins."""
    X = _scaled_matrix(pdf, numeric, categories, mean, scale)
    Xa = np.hstack([X, np.ones((len(X), 1))])
    m = _margin(pdf, booster, numeric, categories)
    return Xa.T @ Xa, Xa.T @ m, len(X)


def _add_eq(*parts):
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


# ------------------------------------------------------------------------------ helpers
def _xgb_matrix(model, frame, label, client, quantile=True, ref=None):
    """A (Dask) DMatrix of ``frame``'s model columns with ``label`` (a Series of the same rows)."""
    import xgboost as xgb
    import xgboost.dask  # noqa: F401 - registers xgb.dask

    kw = {"enable_categorical": True, "feature_types": model._feature_types()}
    if client is not None:
        X = model._matrix(frame)
        if quantile:
            return xgb.dask.DaskQuantileDMatrix(client, X, label, max_bin=model.max_bin, **kw)
        return xgb.dask.DaskDMatrix(client, X, label, **kw)
    with in_memory():
        pdf, y = dask.compute(frame, label)  # small: pandas input, in memory already
    X = model_frame(pdf, model.numeric_columns_, model.categories_)
    if quantile:
        return xgb.QuantileDMatrix(X, y, max_bin=model.max_bin, **kw)
    return xgb.DMatrix(X, y, **kw)


def _train(client, params, dtrain, rounds, xgb_model=None):
    import warnings

    import xgboost as xgb

    with xgb.config_context(verbosity=0), warnings.catch_warnings():
        # the update passes name their updater on purpose (xgboost warns that tree_method is ignored)
        warnings.filterwarnings("ignore", message=".*manually specified the `updater`", category=UserWarning)
        if client is not None:
            out = xgb.dask.train(client, params, dtrain, num_boost_round=rounds, xgb_model=xgb_model)
            return out["booster"]
        return xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=xgb_model)


def _student_of(model, booster, **params):
    out = copy.copy(model)
    out.__dict__.pop("_cpu_booster", None)
    out.__dict__.pop("compression_report_", None)
    out.set_params(**params)
    out.booster_ = booster
    out.best_iteration_ = int(booster.num_boosted_rounds()) - 1
    out.evals_result_ = {}
    return out


# ------------------------------------------------------------------------------ methods
def prune_xgboost(model, train, *, gamma=None, client=None):
    """Prune ``model``'s trees with xgboost's pruner, drop leaf-only trees, refresh the leaves."""
    import xgboost as xgb

    booster = model.booster_
    trees = booster.trees_to_dataframe()
    gains = trees.loc[trees["Feature"] != "Leaf", "Gain"].to_numpy()
    if gamma is None:
        gamma = float(np.quantile(gains, 0.9)) if len(gains) else 0.0
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or gamma < 0:
        raise ParameterError(
            f"The 'gamma' parameter of compress must be a float >= 0. Got {gamma!r} instead."
        )
    params = {**model._params(), "device": "cpu"}
    (sample,) = compute_small(train.head(1000, npartitions=-1, compute=False), client=client)  # small
    dsample = xgb.DMatrix(
        model_frame(sample, model.numeric_columns_, model.categories_),
        sample[S.IS_FRAUD],
        enable_categorical=True,
        feature_types=model._feature_types(),
    )  # the pruner reads the gains stored in the trees, not the data
    rounds = booster.num_boosted_rounds()
    # trees pay for their size while their total gain reaches gamma: keep the leading ones that do
    tree_gain = (
        trees[trees["Feature"] != "Leaf"].groupby("Tree")["Gain"].sum().reindex(range(rounds), fill_value=0)
    )
    failing = np.flatnonzero(tree_gain.to_numpy() < gamma)
    n_keep = max(1, int(failing[0]) if len(failing) else rounds)
    pruned = _train(None, {**params, "process_type": "update", "updater": "prune", "gamma": gamma},
                    dsample, n_keep, xgb_model=booster[:n_keep])  # fmt: skip
    dtrain = _xgb_matrix(model, train, train[S.IS_FRAUD], client, quantile=False)
    refresh = {**params, "process_type": "update", "updater": "refresh", "refresh_leaf": True}
    refreshed = _train(client, refresh, dtrain, pruned.num_boosted_rounds(), xgb_model=pruned)
    out = _student_of(model, refreshed, early_stopping_rounds=None)
    out.n_estimators = int(refreshed.num_boosted_rounds())
    out.prune_gamma_ = float(gamma)
    return out


def _as_logistic(booster):
    """``booster`` (trained with ``reg:squarederror`` on margins) outputting ``sigmoid(margin)``.

    xgboost stores the base score in the objective's output space: for the logistic objective it is
    the probability whose logit starts every margin, so the regression's base margin ``b`` becomes
    ``sigmoid(b)`` (margins unchanged, to the bit: tested).
    """
    import json

    cfg = json.loads(booster.save_config())
    base = float(cfg["learner"]["learner_model_param"]["base_score"].strip("[]"))
    out = booster.copy()
    out.set_param(
        {"objective": "binary:logistic", "base_score": float(expit(base)), "eval_metric": "logloss"}
    )
    return out


def _student_size(model, raw, target, min_trees):
    """The largest tree count ``k >= min_trees`` whose student artifact (``raw[:k]``) fits ``target`` bytes."""
    from ._api import artifact_bytes

    def size(k):
        return artifact_bytes(_student_of(model, _as_logistic(raw[:k]), n_estimators=k))

    lo, hi = min(min_trees, raw.num_boosted_rounds()), raw.num_boosted_rounds()
    if size(hi) <= target:
        return hi
    while lo < hi:  # size(k) grows with k: the largest k in [lo, hi] with size(k) <= target
        mid = (lo + hi + 1) // 2
        if size(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def distill_xgboost(model, train, *, n_estimators=None, max_depth=6, max_leaves=15, learning_rate=0.3,
                    clip_quantile=0.9, size_ratio=12.0, min_trees=8, client=None):  # fmt: skip
    """A small booster regressing the teacher's margins over ``train`` (floored at a quantile).

    With ``max_leaves``, trees grow by loss (``grow_policy='lossguide'``) up to that many leaves
    (``max_depth`` caps their depth); without, level by level to ``max_depth``. An artifact pays
    ~40 bytes per node, ~650 per tree (UBJ keys and tree parameters) and ~8 KB of JSON metadata, so
    a few trees with many leaves buy more accuracy per byte than many shallow ones.

    ``n_estimators=None`` sizes the student by the teacher: the most trees (at least ``min_trees``)
    whose artifact is at most ``1 / size_ratio`` of the teacher's, the prefix of one booster trained
    long enough (boosting rounds only add to a prefix, so that is the student trained that long).
    The choice reads bytes only, no rows: nothing of the evaluation data.
    """
    teacher = model._scoring_booster()
    meta = pd.Series(np.empty(0, dtype="float64"), name="margin")
    margin = train.map_partitions(_margins, teacher, model.numeric_columns_, model.categories_, meta=meta)
    if clip_quantile > 0:
        (margin,) = persist(margin, client=client)  # one float per row, read twice
        (floor,) = compute_small(margin.quantile(clip_quantile), client=client)  # small: a float
        margin = margin.clip(lower=float(floor))
    dtrain = _xgb_matrix(model, train, margin, client)
    params = {
        **model._params(),
        "objective": "reg:squarederror",
        "max_depth": int(max_depth),
        "eta": float(learning_rate),
        "scale_pos_weight": 1.0,  # the margins already carry the teacher's weighting
        "eval_metric": "rmse",
    }
    if max_leaves is not None:
        params.update({"grow_policy": "lossguide", "max_leaves": int(max_leaves)})
    adaptive = n_estimators is None
    if adaptive:
        from ._api import artifact_bytes

        target = artifact_bytes(model) / float(size_ratio)
        leaves = int(max_leaves) if max_leaves is not None else 2 ** int(max_depth)
        per_tree = 650 + 40 * (2 * leaves - 1)  # bytes of a full tree (metadata ignored: an upper bound)
        rounds = int(min(512, max(int(min_trees), int(np.ceil(target / per_tree))) + 4))
        raw = _train(client, params, dtrain, rounds)
        n_estimators = _student_size(model, raw, target, int(min_trees))
        booster = _as_logistic(raw[: int(n_estimators)])
    else:
        booster = _as_logistic(_train(client, params, dtrain, int(n_estimators)))
    out = _student_of(
        model, booster, n_estimators=int(n_estimators), max_depth=int(max_depth),
        learning_rate=float(learning_rate), early_stopping_rounds=None,
    )  # fmt: skip
    out.distill_clip_quantile_ = float(clip_quantile)
    out.distill_max_leaves_ = None if max_leaves is None else int(max_leaves)
    out.distill_size_ratio_ = float(size_ratio) if adaptive else None
    return out


def distill_linear(model, train, *, client=None):
    """An ``SGDFraudClassifier`` whose weights fit the teacher's margins by least squares."""
    numeric, cats = model.numeric_columns_, model.categories_
    parts = train.to_delayed()
    moments = [dask.delayed(_moments)(p, numeric, cats) for p in parts]
    (total,) = compute_small(tree_reduce(moments, _tree_combine), client=client)  # small: 3 x columns
    count, mean, m2 = total
    var = np.divide(m2, count, out=np.zeros_like(m2), where=count > 0)
    scale = np.where(var > 0, np.sqrt(var), 1.0)
    teacher = model._scoring_booster()
    eqs = [dask.delayed(_normal_eq)(p, teacher, numeric, cats, mean, scale) for p in parts]
    ((A, b, n),) = compute_small(tree_reduce(eqs, _add_eq), client=client)  # small: d x d
    ridge = _RIDGE * max(float(n), 1.0) * np.eye(len(b))
    ridge[-1, -1] = 0.0  # the intercept is not penalised
    w = np.linalg.solve(A + ridge, b)
    student = SGDFraudClassifier(
        features=model.features_, valid_from=model.valid_from, valid_size=model.valid_size,
        threshold=model.threshold, random_state=model.random_state,
    )  # fmt: skip
    for attr in ("model_columns_", "numeric_columns_", "categories_", "time_range_", "valid_from_",
                 "n_train_", "n_train_positive_", "n_valid_", "validation_metrics_", "features_"):  # fmt: skip
        setattr(student, attr, copy.deepcopy(getattr(model, attr)))
    student.columns_ = list(numeric) + [f"{c}={v}" for c, vals in cats.items() for v in vals]
    # the student's margins are the teacher's, weighting of the fraud rows included: the same
    # positive weight (prior correction), calibration and its parameters
    student.class_weight_ = {0: 1.0, 1: float(model.scale_pos_weight_)}
    student.calibration_ = copy.deepcopy(getattr(model, "calibration_", None))
    shared = set(student.get_params(deep=False)) & set(model.get_params(deep=False))
    student.set_params(**{p: getattr(model, p) for p in ("calibrate", "negative_rate") if p in shared})
    student.mean_, student.scale_ = mean, scale
    student.coef_ = w[None, :-1].astype("float64")
    student.intercept_ = np.array([w[-1]], dtype="float64")
    student.t_ = 1.0
    student.n_rows_seen_ = int(n)
    student.n_epochs_ = 0
    student.classes_ = np.array([0, 1])
    return student


# ------------------------------------------------------------------------------ entry point
def _parts(model, data, eval_data, client):
    """Featurized training and evaluation parts (persisted), split at the teacher's ``valid_from_``."""
    keep = [S.TRANSACTION_ID, S.TIMESTAMP, S.IS_FRAUD, *model.model_columns_]
    featurized = model._featurize(to_dask(data))[keep]
    if eval_data is not None:
        check_transactions(eval_data, "compress", label=True)
        # the evaluation rows see the training rows as their history, as score(..., history=) does
        train, evalp = featurized, model._featurize(to_dask(eval_data), history=to_dask(data))[keep]
    elif model.valid_from_ is not None:
        cut = pd.Timestamp(model.valid_from_)
        train, evalp = featurized[featurized[S.TIMESTAMP] < cut], featurized[featurized[S.TIMESTAMP] >= cut]
    else:
        train = evalp = featurized
    return persist(train, evalp, client=client)


def _quality(model, evalp, client):
    from ..evaluation import classification_metrics

    scored = model._score_frame(evalp, keep=[S.IS_FRAUD])
    m = classification_metrics(
        scored, label=S.IS_FRAUD, score=S.SCORE, threshold=model.threshold, client=client
    )
    return m


def _predict_rate(model, sample):
    t = time.perf_counter()
    model._predict_partition(sample)
    return len(sample) / (time.perf_counter() - t)


def compress_fraud(model, method, data, *, eval_data, student, n_estimators, max_depth, max_leaves,
                   learning_rate, clip_quantile, gamma, timing_rows, repeats, report, client,
                   size_ratio=12.0):  # fmt: skip
    """See :func:`daskml_scale.compression.compress`."""
    from ._api import _timings, artifact_bytes, model_file_bytes

    check_in("student", student, ("xgboost", "sgd"), "compress")
    if not isinstance(model, XGBoostFraudClassifier):
        raise ParameterError(
            f"compress(method={method!r}) needs a tree teacher (XGBoostFraudClassifier); got a "
            f"{type(model).__name__}, which is already a linear model."
        )
    check_fitted(model, "booster_")
    if data is None:
        raise ParameterError(
            f"compress(method={method!r}) learns from data: pass data= labelled transactions (the "
            "teacher's training data, with is_fraud)."
        )
    check_transactions(data, "compress", label=True)
    distributed = is_dask(data)
    client = get_client(client) if distributed else None
    if distributed and client is None and not (method == "distill" and student == "sgd"):
        raise ParameterError(
            f"compress(method={method!r}) on a Dask DataFrame trains with xgboost.dask, which needs a "
            "distributed Client: start one with daskml_scale.connect() (or pass client=), or pass "
            "pandas data."
        )
    with maybe_in_memory(data):
        train, evalp = _parts(model, data, eval_data, client)
        t0 = time.perf_counter()
        if method == "prune":
            out = prune_xgboost(model, train, gamma=gamma, client=client)
        elif student == "sgd":
            out = distill_linear(model, train, client=client)
        else:
            out = distill_xgboost(model, train, n_estimators=n_estimators, max_depth=max_depth,
                                  max_leaves=max_leaves, learning_rate=learning_rate,
                                  clip_quantile=clip_quantile, size_ratio=size_ratio,
                                  client=client)  # fmt: skip
        seconds = time.perf_counter() - t0
        if not report:
            return out
        before, after = _quality(model, evalp, client), _quality(out, evalp, client)
        (sample,) = compute_small(evalp.head(int(timing_rows), npartitions=-1, compute=False), client=client)
    out.validation_metrics_ = after
    rates = _timings([lambda: _predict_rate(model, sample), lambda: _predict_rate(out, sample)], repeats)
    rep = {
        "kind": type(model).__name__,
        "kind_after": type(out).__name__,
        "method": method if method == "prune" else f"distill-{student}",
        "compress_seconds": seconds,
        "bytes_before": artifact_bytes(model),
        "bytes_after": artifact_bytes(out),
        # the boosters alone (model.ubj, or the SGD model's coefficients file): the artifacts' JSON
        # metadata (~8 KB, the same on both sides) is a large part of a small student
        "model_bytes_before": model_file_bytes(model),
        "model_bytes_after": model_file_bytes(out),
        "trees_before": int(model.booster_.num_boosted_rounds()),
        "trees_after": int(out.booster_.num_boosted_rounds()) if hasattr(out, "booster_") else 0,
        "quality_metric": "pr_auc",
        "quality_before": before["pr_auc"],
        "quality_after": after["pr_auc"],
        "roc_auc_before": before["roc_auc"],
        "roc_auc_after": after["roc_auc"],
        "eval_rows": int(after["n"]),
        "eval_positives": int(after["n_positive"]),
        "timing": f"model prediction on {len(sample)} featurized rows, one thread, best of {repeats}",
        "rows_per_s_before": rates[0],
        "rows_per_s_after": rates[1],
    }
    rep["size_ratio"] = rep["bytes_before"] / rep["bytes_after"]
    rep["quality_change"] = rep["quality_after"] - rep["quality_before"]
    rep["speed_ratio"] = rates[1] / rates[0]
    if method == "prune":
        rep["gamma"] = out.prune_gamma_
    elif student == "xgboost":
        rep["clip_quantile"] = out.distill_clip_quantile_
        rep["max_leaves"] = out.distill_max_leaves_
        rep["target_size_ratio"] = out.distill_size_ratio_
        rep["nodes_after"] = int(len(out.booster_.trees_to_dataframe()))
    if hasattr(out, "booster_"):
        rep["nodes_before"] = int(len(model.booster_.trees_to_dataframe()))
    out.compression_report_ = rep
    return out
