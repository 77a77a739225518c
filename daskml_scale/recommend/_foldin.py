"""Fold-in: recommendations for users absent from training, from their interactions.

A new user's factors are the user half-step of ALS for that user alone, solved exactly against the
model's fixed item factors (:func:`solve_users`); the user is then scored against every item in
bounded memory like ``recommend_all`` (:mod:`._tiled`). The fold-in tasks read the model through a
few hooks (``item_ids_``, ``_item_matrix``, ``_confidence_rows``, ``_fold_in``); for a model whose
factors are blocks on the cluster, :class:`BlockFoldIn` stands in for it, built on one worker.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import check_fitted
from ._blocks import on_cluster
from ._matrix import apply_confidence, build_block, check_interactions, index_partition
from ._topn import _block_recs, _check_n, _light, _recs_meta

__all__ = ["BlockFoldIn", "confidence_rows", "recommend_new_users", "solve_users"]


def solve_users(C, A0: np.ndarray, rows) -> np.ndarray:
    """Factors of new users from their confidence rows ``C``: per user, implicit's normal equations
    ``(A0 + Y_u^T (C_u - I) Y_u) x = Y_u^T p_u`` solved exactly (float64).

    ``A0``: ``Y^T Y + regularization * I`` of the whole item side; ``rows(idx)``: the float64 item
    factors of the items ``idx`` (only each user's own items are read).
    """
    out = np.zeros((C.shape[0], A0.shape[0]), dtype=np.float32)
    for u in range(C.shape[0]):
        lo, hi = C.indptr[u], C.indptr[u + 1]
        if lo == hi:
            continue
        idx, c = C.indices[lo:hi], C.data[lo:hi].astype(np.float64)
        Yi = rows(idx)
        A = A0 + (Yi * (np.abs(c) - 1)[:, None]).T @ Yi
        b = (np.where(c > 0, c, 0)[:, None] * Yi).sum(axis=0)
        out[u] = np.linalg.solve(A, b)
    return out


def confidence_rows(C, confidence: str, alpha: float, k1: float):
    """New users' confidences; BM25 takes idf from their own counts and item norms of 1 (the item
    lengths of training are not kept)."""
    if confidence == "bm25":
        bm25 = (np.ones(C.shape[1]), np.log(C.shape[1]) - np.log1p(np.diff(C.indptr)))
        return apply_confidence(C, confidence="bm25", alpha=alpha, bm25=bm25, k1=k1, orientation="user")
    return apply_confidence(C, confidence=confidence, alpha=alpha)


class BlockFoldIn:
    """What fold-in reads of an ALS model whose factors are blocks on the cluster, on one worker:
    the item ids and factors (concatenated from the item blocks), ``A0`` (the Gram matrix summed on
    the workers, plus the regularization) and the confidence parameters."""

    def __init__(self, item_ids, item_factors, A0, confidence: str, alpha: float, k1: float):
        self.item_ids_, self.item_factors_, self.A0 = item_ids, item_factors, A0
        self.confidence, self.alpha, self.k1 = confidence, alpha, k1

    def _item_matrix(self) -> np.ndarray:
        return self.item_factors_

    def _confidence_rows(self, C):
        return confidence_rows(C, self.confidence, self.alpha, self.k1)

    def _fold_in(self, C) -> np.ndarray:
        Y = self.item_factors_
        return solve_users(C, self.A0, lambda idx: Y[idx].astype(np.float64))


def _assemble(n_blocks: int, gram, regularization, confidence, alpha, k1, *blocks) -> BlockFoldIn:
    ids, factors = blocks[:n_blocks], blocks[n_blocks:]
    A0 = gram + regularization * np.eye(gram.shape[0])
    return BlockFoldIn(np.concatenate(ids), np.concatenate(factors), A0, confidence, alpha, k1)


def _block_fold_in(model, ib) -> list:
    """Futures of the :class:`BlockFoldIn` of ``model`` (item blocks ``ib`` on its cluster), one
    assembled on each worker: the fold-in tasks are dealt over them, so that they spread instead of
    all queueing where a single copy lives (their input partitions are small beside it)."""
    from ._blocks import side_gram
    from ._runner import Runner

    runner = Runner(ib.factors[0].client)
    gram = side_gram(runner, ib.factors)
    args = (
        ib.n_blocks,
        gram,
        float(model.regularization),
        model.confidence,
        float(model.alpha),
        float(model.bm25_k1),
    )
    return [runner.submit_to(w, _assemble, *args, *ib.ids, *ib.factors) for w in range(runner.n_workers())]


def _fold_in_partition(df, model, n, exclude_seen, fallback):
    users = np.sort(df[S.USER_ID].unique())
    if len(users) == 0:
        return _recs_meta(np.asarray(df[S.USER_ID]), model.item_ids_)
    rows, cols, w = index_partition(df, users, model.item_ids_)
    C_raw = build_block([(rows, cols, w)], len(users), len(model.item_ids_))
    C = model._confidence_rows(C_raw)
    vectors = model._fold_in(C)
    out = _block_recs(vectors, model._item_matrix(), C_raw if exclude_seen else None, users,
                      model.item_ids_, n)  # fmt: skip
    if fallback is not None:
        cold = np.diff(C.indptr) == 0
        if cold.any():
            seen = C_raw[cold] if exclude_seen else None
            ones = np.ones((int(cold.sum()), 1))
            fb = _block_recs(ones, fallback._item_matrix(), None, users[cold], fallback.item_ids_, n)
            if seen is not None and seen.nnz:
                known = pd.MultiIndex.from_arrays(
                    [users[cold][np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))],
                     model.item_ids_[seen.indices]]
                )  # fmt: skip
                fb = fb[~pd.MultiIndex.from_frame(fb[[S.USER_ID, S.ITEM_ID]]).isin(known)]
                fb[S.RANK] = fb.groupby(S.USER_ID).cumcount().astype(np.int64) + 1
            out = pd.concat([out[~out[S.USER_ID].isin(users[cold])], fb], ignore_index=True)
    return out


def recommend_new_users(model, interactions, n: int = 10, *, exclude_seen: bool = True, fallback=None):
    """Recommendations for users absent from training, from their interactions (fold-in).

    Each new user's factors are solved exactly against the model's fixed item factors (the user
    half-step of ALS for that user alone); items unknown to the model are ignored. A user with no
    known items gets ``fallback``'s list (e.g. a fitted :class:`PopularityRecommender`) when given.
    A model whose factors are blocks on the cluster never brings its item side to this process: each
    worker assembles it from the item blocks, with the Gram matrix summed on the workers, and the
    fold-in tasks are dealt over the workers. One pass over ``interactions`` (plus the shuffle by user).

    Parameters
    ----------
    model : ALSRecommender or PopularityRecommender
        Fitted.
    interactions : dask.dataframe.DataFrame or pandas.DataFrame
        ``user_id, item_id[, weight]`` of the new users; shuffled by user when it has several
        partitions.
    n : int
    exclude_seen : bool
        Do not recommend the items in ``interactions``.
    fallback : PopularityRecommender, optional
        Cold-start list for users without any known item.

    Returns
    -------
    dask.dataframe.DataFrame
        ``user_id, item_id, score, rank``.

    Examples
    --------
    >>> import pandas as pd
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import ALSRecommender, recommend_new_users
    >>> model = ALSRecommender(factors=4, iterations=2).fit(make_interactions(5_000, 100, 50, seed=0))
    >>> new = pd.DataFrame({"user_id": [10**6, 10**6], "item_id": [0, 1]})
    >>> len(recommend_new_users(model, new, n=5).compute())  # small: a few new users
    5
    """
    owner = "recommend_new_users"
    check_fitted(model, "item_blocks_" if getattr(model, "item_blocks_", None) is not None else "item_ids_")
    _check_n(n, owner)
    if fallback is not None:
        check_fitted(fallback, "item_ids_")
    ddf = check_interactions(interactions, owner)
    if ddf.npartitions > 1:
        ddf = ddf.shuffle(on=S.USER_ID)
    fb = None if fallback is None else _light(fallback)
    ib = getattr(model, "item_blocks_", None)
    if ib is not None and on_cluster(ib.factors):
        # the item side stays on the cluster: each worker concatenates the item blocks (the Gram
        # matrix summed worker to worker), and the fold-in tasks are dealt over those copies
        folds = _block_fold_in(model, ib)
        meta = _recs_meta(np.asarray(ddf._meta[S.USER_ID]), model._id_meta("item"))
        parts = [
            dask.delayed(_fold_in_partition)(p, folds[i % len(folds)], int(n), bool(exclude_seen), fb)
            for i, p in enumerate(ddf.to_delayed())
        ]
        return dd.from_delayed(parts, meta=meta, verify_meta=False)
    meta = _recs_meta(np.asarray(ddf._meta[S.USER_ID]), model.item_ids_)
    return ddf.map_partitions(
        _fold_in_partition, _light(model), int(n), bool(exclude_seen), fb, meta=meta, enforce_metadata=False
    )
