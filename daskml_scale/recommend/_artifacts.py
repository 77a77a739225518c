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
from ..errors import ArtifactError
from ..io import read_artifact, write_artifact

__all__ = ["load_model", "save_model"]

_ARRAYS = {
    "ALSRecommender": ("user_factors_", "item_factors_"),
    "PopularityRecommender": ("item_scores_",),
    "QuantizedALSRecommender": (),  # codes and scales: written by the model's _save_files
}
_METRICS = ("loss_history_", "iteration_times_", "n_interactions_", "fit_time_s_")


def _classes():
    from ..compression import QuantizedALSRecommender
    from ._als import ALSRecommender
    from ._popularity import PopularityRecommender

    return {
        "ALSRecommender": ALSRecommender,
        "PopularityRecommender": PopularityRecommender,
        "QuantizedALSRecommender": QuantizedALSRecommender,
    }


def save_model(model, path):
    """Write ``model`` to the directory ``path`` atomically; returns the path."""
    kind = type(model).__name__
    params = model.get_params()
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

    return write_artifact(path, write, kind=kind, metadata={"params": params, "metrics": metrics})


def load_model(path, kind=None):
    """Load a recommender saved by ``save``; ``kind`` (class name) is checked when given.

    Examples
    --------
    >>> from daskml_scale.recommend import load_model
    >>> model = load_model("models/als")  # doctest: +SKIP
    """
    manifest = read_artifact(path, kind=kind)
    kind = manifest["kind"]
    classes = _classes()
    if kind not in classes:
        raise ArtifactError(
            f"{path} holds a {kind!r} artifact, not a recommender. Load it with its own class."
        )
    from pathlib import Path

    path = Path(path)
    model = classes[kind](**json.loads((path / "params.json").read_text()))
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
