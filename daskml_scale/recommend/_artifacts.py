"""Save and load recommenders as open-format artifact directories (no pickle).

Layout: ``user_ids.parquet`` and ``item_ids.parquet`` (the id maps: row ``i`` is index ``i``),
``user_factors.npy`` / ``item_factors.npy`` (ALS) or ``item_scores.npy`` (popularity),
``params.json`` and ``metrics.json``; ``manifest.json`` records library versions and sha256 of each.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .. import schema as S
from ..storage import load_model as _load_any
from ..storage import write_artifact

__all__ = ["load_model", "save_model"]

_ARRAYS = {
    "ALSRecommender": ("user_factors_", "item_factors_"),
    "PopularityRecommender": ("item_scores_",),
    "QuantizedALSRecommender": (),  # codes and scales: written by the model's _save_files
}
_METRICS = ("loss_history_", "iteration_times_", "n_interactions_", "fit_time_s_")


_KINDS = tuple(_ARRAYS)


def save_model(model, path, *, storage_options: dict | None = None):
    """Write ``model`` to the directory or fsspec URL ``path``, committed in one step; returns it."""
    kind = type(model).__name__
    params = model.get_params()
    if "storage_options" in params:  # credentials are never written into an artifact
        params["storage_options"] = None
    if params.get("checkpoint") is not None:
        params["checkpoint"] = str(params["checkpoint"])
    metrics = {m.rstrip("_"): getattr(model, m) for m in _METRICS if hasattr(model, m)}

    def write(tmp):
        if hasattr(model, "_save_files"):  # quantized models write their own id maps and codes
            model._save_files(tmp)
        else:
            pd.DataFrame({S.USER_ID: model.user_ids_}).to_parquet(tmp / "user_ids.parquet", index=False)
            pd.DataFrame({S.ITEM_ID: model.item_ids_}).to_parquet(tmp / "item_ids.parquet", index=False)
        for attr in _ARRAYS[kind]:
            np.save(tmp / f"{attr.rstrip('_')}.npy", np.asarray(getattr(model, attr)), allow_pickle=False)
        (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")

    return write_artifact(
        path,
        write,
        kind=kind,
        metadata={"params": params, "metrics": metrics},
        storage_options=storage_options,
    )


def load_model(path, kind=None, *, storage_options: dict | None = None):
    """Load a recommender saved by ``save``; ``kind`` (class name) is checked when given.

    Examples
    --------
    >>> from daskml_scale.recommend import load_model
    >>> model = load_model("models/als")  # doctest: +SKIP
    """
    return _load_any(path, kinds=(kind,) if kind else _KINDS, storage_options=storage_options)


def load_from(cls, manifest: dict, path):
    """Build a recommender of class ``cls`` from a verified artifact's files (the loader each
    recommender class registers with :func:`daskml_scale.storage.register_kind`)."""
    kind = manifest["kind"]
    model = cls(**json.loads((path / "params.json").read_text()))
    model.user_ids_ = pd.read_parquet(path / "user_ids.parquet")[S.USER_ID].to_numpy()
    model.item_ids_ = pd.read_parquet(path / "item_ids.parquet")[S.ITEM_ID].to_numpy()
    for attr in _ARRAYS[kind]:
        setattr(model, attr, np.load(path / f"{attr.rstrip('_')}.npy", allow_pickle=False))
    if hasattr(model, "_load_files"):  # quantized models read their own codes and scales
        model._load_files(path)
    metrics = json.loads((path / "metrics.json").read_text())
    for m in _METRICS:
        if m.rstrip("_") in metrics:
            setattr(model, m, metrics[m.rstrip("_")])
    return model
