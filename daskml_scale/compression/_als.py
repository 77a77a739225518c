"""QuantizedALSRecommender: an ALS model whose factors are stored and scored as quantized codes.

It is an :class:`~daskml_scale.recommend.ALSRecommender` (``isinstance`` holds), so
``recommend_all``, ``recommend_new_users``, ``similar_items``, ``save``/``load_model`` and the CLI
take it unchanged; its ``user_factors_`` / ``item_factors_`` are
:class:`~daskml_scale.compression.QuantizedFactors` and every scoring path works on their codes
tile by tile (see ``_quantize``).

Artifact layout (kind ``QuantizedALSRecommender``): the id maps (parquet, integer ids delta-encoded),
``user_codes.npy`` / ``item_codes.npy`` (int8, packed uint8 for int4, float16), ``user_scales.npy`` /
``item_scales.npy`` (float32, absent for fp16), ``params.json``, ``metrics.json`` and
``compression.json`` (the trade-off report, when there is one); no pickle.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import ArtifactError, ParameterError, check_fitted, check_in
from ..recommend import ALSRecommender
from ..recommend._artifacts import load_from
from ..storage import register_kind
from ._quantize import METHODS, QuantizedFactors, quantize

__all__ = ["QuantizedALSRecommender", "quantize_als"]


class QuantizedALSRecommender(ALSRecommender):
    """ALS with quantized factors: fitted like :class:`ALSRecommender`, then quantized.

    Usually made by :func:`~daskml_scale.compression.compress` from a fitted model; ``fit`` trains
    in float32 and quantizes the result.

    Parameters
    ----------
    quantization : {'int8', 'int4', 'fp16'}
        Storage of both factor matrices (per-row symmetric scales for int8 and int4).
    **als_params
        Every parameter of :class:`ALSRecommender` (``factors``, ``iterations``, ...); an unknown
        name raises ``TypeError`` as it would there.

    Attributes
    ----------
    user_factors_, item_factors_ : QuantizedFactors
    compression_report_ : dict
        Set by ``compress``: bytes, NDCG@10 and top-N rows/s before and after.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.compression import QuantizedALSRecommender
    >>> from daskml_scale.recommend import recommend_all
    >>> ddf = make_interactions(20_000, n_users=300, n_items=100, seed=0)
    >>> model = QuantizedALSRecommender(quantization="int8", factors=8, iterations=3).fit(ddf)
    >>> model.item_factors_.codes.dtype
    dtype('int8')
    >>> recommend_all(model, n=5).columns.tolist()
    ['user_id', 'item_id', 'score', 'rank']
    """

    def __init__(self, *, quantization: str = "int8", **als_params):
        super().__init__(**als_params)
        self.quantization = quantization

    @classmethod
    def _get_param_names(cls):
        return sorted({*ALSRecommender._get_param_names(), "quantization"})

    def fit(self, interactions, y=None, *, client=None):
        """Fit in float32 (see :meth:`ALSRecommender.fit`), then quantize both factor matrices."""
        check_in("quantization", self.quantization, METHODS, type(self).__name__)
        super().fit(interactions, y, client=client)
        self.user_factors_ = quantize(self.user_factors_, self.quantization)
        self.item_factors_ = quantize(self.item_factors_, self.quantization)
        return self

    # ------------------------------------------------------------------- scoring hooks (_topn)
    def _user_vectors(self, start: int, stop: int) -> QuantizedFactors:
        return self.user_factors_[start:stop]

    def _item_matrix(self) -> QuantizedFactors:
        return self.item_factors_

    def _fold_in(self, C) -> np.ndarray:
        """New users' factors against the quantized item factors (exact solve, as in ALS).

        The Gram matrix is accumulated tile by tile; each user reads only its own items' rows.
        """
        from ..recommend._foldin import solve_users

        Q = self.item_factors_
        A0 = self._item_gram() + self.regularization * np.eye(Q.n_cols)
        # this user's items only
        return solve_users(C, A0, lambda idx: Q[idx].dequantize().astype(np.float64))

    def _item_gram(self) -> np.ndarray:
        gram = self.__dict__.get("_gram_cache")
        if gram is None:
            gram = self.item_factors_.gram()
            self._gram_cache = gram
        return gram

    def _similarity_inputs(self):
        """(codes, code norms, block kernel) for ``recommend.similar_items``: scored on the codes."""
        return self.item_factors_, self.item_factors_.code_norms(), _similar_block

    # ------------------------------------------------------------------- persistence hooks
    def _save_files(self, tmp: Path) -> None:
        """Write the id maps (integer ids delta-encoded), codes, scales and the report."""
        for name, ids, col in (
            ("user_ids", self.user_ids_, S.USER_ID),
            ("item_ids", self.item_ids_, S.ITEM_ID),
        ):
            kw = {}
            if np.issubdtype(np.asarray(ids).dtype, np.integer):
                kw = {"use_dictionary": False, "column_encoding": {col: "DELTA_BINARY_PACKED"}}
            pd.DataFrame({col: ids}).to_parquet(tmp / f"{name}.parquet", index=False, **kw)
        for side, q in (("user", self.user_factors_), ("item", self.item_factors_)):
            np.save(tmp / f"{side}_codes.npy", q.codes, allow_pickle=False)
            if q.scales is not None:
                np.save(tmp / f"{side}_scales.npy", q.scales, allow_pickle=False)
        report = getattr(self, "compression_report_", None)
        if report is not None:
            (tmp / "compression.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    def _load_files(self, path: Path) -> None:
        for side in ("user", "item"):
            f = path / f"{side}_codes.npy"
            if not f.is_file():
                raise ArtifactError(f"{path}: {f.name} is missing. Save the model again.")
            codes = np.load(f, allow_pickle=False)
            sf = path / f"{side}_scales.npy"
            scales = np.load(sf, allow_pickle=False) if sf.is_file() else None
            setattr(
                self, f"{side}_factors_", QuantizedFactors(codes, scales, self.quantization, self.factors)
            )
        if (path / "compression.json").is_file():
            self.compression_report_ = json.loads((path / "compression.json").read_text())


def quantize_als(model, method: str = "int8") -> QuantizedALSRecommender:
    """A :class:`QuantizedALSRecommender` holding ``model``'s factors quantized with ``method``.

    The id maps, parameters, training metrics and (in this session) the reference to the training
    interactions are kept, so ``recommend_all`` excludes the same seen items.
    """
    check_fitted(model, "user_factors_")
    check_in("method", method, METHODS, "quantize_als")
    if isinstance(model, QuantizedALSRecommender):
        raise ParameterError(
            f"quantize_als: the model is already quantized ({model.quantization}). Quantize the float "
            "ALSRecommender it came from."
        )
    params = ALSRecommender.get_params(model, deep=False)
    out = QuantizedALSRecommender(quantization=method, **params)
    for key, value in model.__dict__.items():
        if key.endswith("_") and not key.startswith("__") or key == "_train_interactions":
            setattr(out, key, copy.copy(value))
    out.user_factors_ = quantize(model.user_factors_, method)
    out.item_factors_ = quantize(model.item_factors_, method)
    return out


# --------------------------------------------------------------------------------- similar items
def _similar_block(Q, norms, lo, hi, item_ids, n):
    """Cosine top-``n`` of items ``lo:hi``: code dot products over code norms (the scales cancel)."""
    import scipy.sparse as sp

    m = hi - lo
    self_pairs = sp.csr_matrix((np.ones(m), np.arange(lo, hi), np.arange(m + 1)), shape=(m, len(Q)))
    unit = QuantizedFactors(Q.codes, (1.0 / np.maximum(norms, 1e-12)).astype(np.float32), Q.method, Q.n_cols)
    queries = QuantizedFactors(Q.codes[lo:hi], unit.scales[lo:hi], Q.method, Q.n_cols)
    rows, cols, score, rank = unit.block_top_n(queries, n, self_pairs)
    return pd.DataFrame(
        {
            S.ITEM_ID: item_ids[lo + rows],
            "similar_item_id": item_ids[cols],
            S.SCORE: score,
            S.RANK: rank.astype(np.int64),
        }
    )


# load_model finds the class by its kind: the artifact code imports no model

register_kind(QuantizedALSRecommender, load_from)
