"""Save and load recommenders as open-format artifact directories (no pickle).

Layout: ``user_ids.parquet`` and ``item_ids.parquet`` (the id maps: row ``i`` is index ``i``),
``user_factors.npy`` / ``item_factors.npy`` (ALS) or ``item_scores.npy`` (popularity),
``params.json`` and ``metrics.json``; ``manifest.json`` records library versions and sha256 of each.

An ALS model whose factors are blocks on a cluster is saved by block, each written by the worker
holding it: ``user_factors/part-00000.npy`` with ``user_ids/part-00000.parquet`` and so on per block
(the manifest's ``metadata.blocks`` gives their row offsets). Loading maps each block file
(``np.load(mmap_mode="r")`` on a local disk), so a large model is read block by block where used.
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


def _write_npy(F, url: str, storage_options):
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(F), allow_pickle=False)
    return _put(buf.getvalue(), url, storage_options, hashlib)


def _write_ids(ids, url: str, column: str, storage_options):
    import hashlib
    import io

    buf = io.BytesIO()
    pd.DataFrame({column: ids}).to_parquet(buf, index=False)
    return _put(buf.getvalue(), url, storage_options, hashlib)


def _put(data: bytes, url: str, storage_options, hashlib):
    import posixpath

    from ..storage import filesystem

    fs, path = filesystem(url, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _cluster_blocks(model):
    """The model's factor blocks when they are futures on a cluster (saved by the workers), else None."""
    ub = model.__dict__.get("user_blocks_")
    if ub is None or isinstance(ub.factors[0], np.ndarray):
        return None
    return ub, model.__dict__["item_blocks_"]


def _block_parts(model, storage_options):
    """``parts`` callback of write_artifact: every block written by the worker holding it."""
    ub, ib = _cluster_blocks(model)

    def parts(staging: str) -> dict:
        import posixpath

        client = ub.factors[0].client
        futures, names = [], []
        for side, blocks, col in (("user", ub, S.USER_ID), ("item", ib, S.ITEM_ID)):
            for b in range(blocks.n_blocks):
                for sub, fn, arg, ext in ((f"{side}_factors", _write_npy, blocks.factors[b], "npy"),
                                          (f"{side}_ids", _write_ids, blocks.ids[b], "parquet")):  # fmt: skip
                    rel = f"{sub}/part-{b:05d}.{ext}"
                    url = posixpath.join(staging, rel)
                    extra = (col,) if fn is _write_ids else ()
                    futures.append(client.submit(fn, arg, url, *extra, storage_options, pure=False))
                    names.append(rel)
        return dict(zip(names, client.gather(futures)))  # small: a checksum per file

    return parts


def save_model(model, path, *, storage_options: dict | None = None):
    """Write ``model`` to the directory or fsspec URL ``path``, committed in one step; returns it."""
    kind = type(model).__name__
    blocks = _cluster_blocks(model) if kind == "ALSRecommender" else None
    params = model.get_params()
    if "storage_options" in params:  # credentials are never written into an artifact
        params["storage_options"] = None
    if params.get("checkpoint") is not None:
        params["checkpoint"] = str(params["checkpoint"])
    metrics = {m.rstrip("_"): getattr(model, m) for m in _METRICS if hasattr(model, m)}

    if blocks is not None:
        ub, ib = blocks
        meta = {"params": params, "metrics": metrics,
                "blocks": {"user": ub.offsets.tolist(), "item": ib.offsets.tolist()}}  # fmt: skip

        def write_small(tmp):
            (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
            (tmp / "metrics.json").write_text(
                json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n"
            )

        return write_artifact(path, write_small, kind=kind, metadata=meta, storage_options=storage_options,
                              parts=_block_parts(model, storage_options))  # fmt: skip

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
    blocks = manifest.get("metadata", {}).get("blocks")
    if blocks is not None:
        _load_blocks(model, path, blocks, local=not manifest.get("root"))
    else:
        model.user_ids_ = pd.read_parquet(path / "user_ids.parquet")[S.USER_ID].to_numpy()
        model.item_ids_ = pd.read_parquet(path / "item_ids.parquet")[S.ITEM_ID].to_numpy()
    for attr in _ARRAYS[kind] if blocks is None else ():
        setattr(model, attr, np.load(path / f"{attr.rstrip('_')}.npy", allow_pickle=False))
    if hasattr(model, "_load_files"):  # quantized models read their own codes and scales
        model._load_files(path)
    metrics = json.loads((path / "metrics.json").read_text())
    for m in _METRICS:
        if m.rstrip("_") in metrics:
            setattr(model, m, metrics[m.rstrip("_")])
    return model


def _load_blocks(model, path, blocks: dict, *, local: bool) -> None:
    """Factor blocks of a model saved by block: memory-mapped on a local disk, read otherwise."""
    from ._blocks import FactorBlocks

    for side, col in (("user", S.USER_ID), ("item", S.ITEM_ID)):
        offsets = np.asarray(blocks[side], dtype=np.int64)
        n = len(offsets) - 1
        ids = [
            pd.read_parquet(path / f"{side}_ids" / f"part-{b:05d}.parquet")[col].to_numpy() for b in range(n)
        ]
        factors = [
            np.load(
                path / f"{side}_factors" / f"part-{b:05d}.npy",
                mmap_mode="r" if local else None,
                allow_pickle=False,
            )
            for b in range(n)
        ]
        model.__dict__[f"{side}_blocks_"] = FactorBlocks(ids, factors, offsets)
