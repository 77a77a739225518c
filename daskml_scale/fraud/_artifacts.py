"""Saving and loading fraud models as verified directories of open formats (never pickle).

Layout of a saved model::

    model/
      manifest.json     kind, library versions, sha256 of every file, metadata (parameters, schema,
                        model columns, categories, training counts, validation metrics) and the
                        calibration: ``calibrate`` and ``negative_rate`` are parameters, the class
                        weight (``scale_pos_weight_`` / ``class_weight_``) and ``calibration_``
                        (method, Platt's ``a`` and ``b``, prior offset) state
      features.json     the behaviour-feature specification and fitted state (null for raw columns)
      model.ubj         XGBoost: the booster (UBJSON, or model.json with format="json")
      coef.npy, intercept.npy, mean.npy, scale.npy     SGD: weights and standardisation
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import ArtifactError, ParameterError, check_fitted, check_in
from ..storage import load_model as _load_any
from ..storage import write_artifact

__all__ = ["load_model", "save_model"]

_SGD_ARRAYS = ("coef", "intercept", "mean", "scale")
_COMMON_STATE = (
    "model_columns_",
    "numeric_columns_",
    "categories_",
    "time_range_",
    "valid_from_",
    "n_train_",
    "n_train_positive_",
    "n_valid_",
    "validation_metrics_",
    "calibration_",
)
_STATE = {
    "XGBoostFraudClassifier": ("best_iteration_", "scale_pos_weight_", "evals_result_"),
    "SGDFraudClassifier": ("class_weight_", "columns_", "n_rows_seen_", "n_epochs_", "t_"),
}


def _json_value(v):
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def save_model(model, path, *, format: str = "ubj", storage_options: dict | None = None):
    """Save a fitted fraud classifier to the directory or URL ``path`` (committed in one step).

    Parameters
    ----------
    model : XGBoostFraudClassifier or SGDFraudClassifier
    path : str or path-like
        Local directory or fsspec URL (``s3://models/fraud``).
    format : {'ubj', 'json'}
        Booster format for XGBoost (ignored for SGD).
    storage_options : dict, optional
        Passed to the filesystem.

    Returns
    -------
    pathlib.Path or str
    """
    kind = type(model).__name__
    check_in("format", format, ("ubj", "json"), "save_model")
    if kind not in _STATE:
        raise ParameterError(f"save_model saves fraud classifiers; got {kind}.")
    check_fitted(model, "model_columns_")
    params = {k: _json_value(v) for k, v in model.get_params(deep=False).items()}
    if params["features"] is not None and not isinstance(params["features"], str):
        params["features"] = "spec"  # restored from features.json
    if "storage_options" in params:  # credentials: never written into an artifact
        params["storage_options"] = None
    if params.get("checkpoint") is not None:
        params["checkpoint"] = str(params["checkpoint"])
    state = {a: getattr(model, a) for a in _COMMON_STATE + _STATE[kind]}
    if getattr(model, "compression_report_", None) is not None:  # daskml_scale.compression
        state["compression_report_"] = model.compression_report_
    if kind == "SGDFraudClassifier" and state["class_weight_"] is not None:
        state["class_weight_"] = {str(k): float(v) for k, v in state["class_weight_"].items()}
    metadata = {
        "params": params,
        "state": {k: _json_value(v) for k, v in state.items()},
        "schema": {
            "table": S.TRANSACTIONS.name,
            "required": list(S.TRANSACTIONS.required),
            "label": S.TRANSACTIONS.label,
            "categories": model.categories_,
        },
    }
    features = None if model.features_ is None else model.features_.to_dict()

    def write(tmp: Path):
        (tmp / "features.json").write_text(json.dumps(features, indent=2, sort_keys=True) + "\n")
        if kind == "XGBoostFraudClassifier":
            name = "model.ubj" if format == "ubj" else "model.json"
            (tmp / name).write_bytes(bytes(model.booster_.save_raw(format)))
        else:
            arrays = {
                "coef": model.coef_,
                "intercept": model.intercept_,
                "mean": model.mean_,
                "scale": model.scale_,
            }
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", np.asarray(arr, dtype="float64"), allow_pickle=False)

    return write_artifact(path, write, kind=kind, metadata=metadata, storage_options=storage_options)


def load_model(path, *, storage_options: dict | None = None):
    """Load a fraud classifier saved by ``save``; every file's sha256 is verified first.

    Parameters
    ----------
    path : str or path-like
        Local directory or fsspec URL.
    storage_options : dict, optional
        Passed to the filesystem.

    Returns
    -------
    XGBoostFraudClassifier or SGDFraudClassifier

    Raises
    ------
    ArtifactError
        Not a fraud model, a file missing or modified.

    Examples
    --------
    >>> from daskml_scale.fraud import load_model
    >>> model = load_model("models/fraud")  # doctest: +SKIP
    """
    return _load_any(path, kinds=tuple(_STATE), storage_options=storage_options)


def load_from(cls, manifest: dict, path: Path):
    """Build a fraud classifier of class ``cls`` from a verified artifact's files (the loader each
    fraud class registers with :func:`daskml_scale.storage.register_kind`)."""
    kind = manifest["kind"]
    meta = manifest["metadata"]
    params = dict(meta["params"])
    # saved before calibration existed: its threshold was chosen on the raw scores, keep those
    params.setdefault("calibrate", False)
    features = json.loads((path / "features.json").read_text())
    if params["features"] == "spec":
        params["features"] = _features_from_dict(features)
    model = cls(**params)
    # saved before Platt recalibration existed: calibrate=True meant the prior correction alone,
    # which is what calibration_=None gives (its threshold was chosen on those scores)
    model.calibration_ = None
    for k, v in meta["state"].items():
        setattr(model, k, v)
    model.features_ = None if features is None else _features_from_dict(features)
    if kind == "XGBoostFraudClassifier":
        import xgboost as xgb

        name = "model.ubj" if (path / "model.ubj").is_file() else "model.json"
        if not (path / name).is_file():
            raise ArtifactError(
                f"{path}: the booster file (model.ubj or model.json) is missing. Save it again."
            )
        booster = xgb.Booster()
        booster.load_model(bytearray((path / name).read_bytes()))
        model.booster_ = booster
    else:
        for name in _SGD_ARRAYS:
            f = path / f"{name}.npy"
            if not f.is_file():
                raise ArtifactError(f"{path}: {name}.npy is missing. Save the model again.")
            setattr(model, f"{name}_", np.load(f, allow_pickle=False))
        if model.class_weight_ is not None:
            model.class_weight_ = {int(k): float(v) for k, v in model.class_weight_.items()}
        model.classes_ = np.array([0, 1])
    model.time_range_ = tuple(model.time_range_)
    # JSON sorted the keys: restore the column order of the model matrix
    model.categories_ = {c: model.categories_[c] for c in model.model_columns_ if c in model.categories_}
    return model


def _features_from_dict(d):
    from ..features import TransactionFeatures

    return TransactionFeatures.from_dict(d)
