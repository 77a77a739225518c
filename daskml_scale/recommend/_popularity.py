"""PopularityRecommender: the most popular items, for everyone; baseline and cold-start fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from .. import schema as S
from ..cluster import compute
from ..errors import check_fitted, check_in
from ..storage import register_kind
from ._artifacts import load_from
from ._matrix import build_id_maps, check_interactions

__all__ = ["PopularityList", "PopularityRecommender"]


class PopularityRecommender(BaseEstimator):
    """Recommend the items with the most interactions (or the largest total weight) to every user.

    Same API as :class:`ALSRecommender` for :func:`recommend_all`, :func:`recommend_new_users`,
    ``save`` and ``load``, so it serves as the baseline of every ranking comparison and as the
    fallback for users without history.

    Parameters
    ----------
    by : {"users", "weight"}
        Popularity as the number of distinct users of an item (default) or its summed weight.

    Attributes
    ----------
    user_ids_, item_ids_ : ndarray
        Sorted distinct ids seen in training.
    item_scores_ : ndarray of float64
        Popularity of each item of ``item_ids_``.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import PopularityRecommender
    >>> pop = PopularityRecommender().fit(make_interactions(5_000, n_users=100, n_items=50, seed=0))
    >>> len(pop.item_scores_)
    50
    """

    def __init__(self, *, by: str = "users"):
        self.by = by

    def fit(self, interactions, y=None, *, client=None):
        """Count each item's users (or sum its weights) with one distributed aggregation."""
        owner = type(self).__name__
        check_in("by", self.by, ("users", "weight"), owner)
        ddf = check_interactions(interactions, owner)
        user_ids, item_ids = build_id_maps(ddf, owner=owner, client=client)
        if self.by == "users":
            pop = ddf[[S.USER_ID, S.ITEM_ID]].drop_duplicates().groupby(S.ITEM_ID).size()
        elif S.WEIGHT in ddf.columns:
            pop = ddf.groupby(S.ITEM_ID)[S.WEIGHT].sum()
        else:
            pop = ddf.groupby(S.ITEM_ID).size()
        (pop,) = compute(pop, client=client)  # small: one value per item
        scores = pd.Series(pop).reindex(item_ids).fillna(0).to_numpy(dtype=np.float64)
        self.user_ids_, self.item_ids_, self.item_scores_ = user_ids, item_ids, scores
        self._train_interactions = ddf
        return self

    def _user_vectors(self, start: int, stop: int) -> np.ndarray:
        return np.ones((stop - start, 1))

    def _item_matrix(self) -> PopularityList:
        """The items ranked once by popularity (kept between calls while ``item_scores_`` is unchanged)."""
        ranking = self.__dict__.get("_ranking")
        if ranking is None or ranking.scores is not self.item_scores_:
            ranking = PopularityList(self.item_scores_)
            self._ranking = ranking
        return ranking

    def _fold_in(self, C) -> np.ndarray:
        return np.ones((C.shape[0], 1))

    def _confidence_rows(self, C):
        return C

    def save(self, path, *, storage_options: dict | None = None):
        """Save ids and popularity (parquet, ``.npy``, JSON), with a manifest of checksums. To a directory or fsspec URL."""
        check_fitted(self, "item_scores_")
        from ._artifacts import save_model

        return save_model(self, path, storage_options=storage_options)

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None):
        """Load a model saved by :meth:`save`."""
        from ._artifacts import load_model

        return load_model(path, kind=cls.__name__, storage_options=storage_options)


class PopularityList:
    """The item side of a popularity model for top-N: one global list, filtered per user.

    The items are sorted once (popularity descending, ties by position ascending); a user's top
    ``n`` is the first ``n`` entries of that list that the user has not seen, found from the ranks of
    the seen items alone: the ``j``-th unseen entry is at list position ``j + #{i : r_i - i <= j}``
    for the user's sorted seen ranks ``r_0 < r_1 < ...``. Work and memory per block of users:
    ``O(users x n + seen pairs)``, never ``users x items``.

    It is what :meth:`PopularityRecommender._item_matrix` returns; ``recommend._topn`` scores it
    through its ``block_top_n`` hook, as it does quantized factors.
    """

    def __init__(self, scores: np.ndarray):
        self.scores = scores
        self.order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(len(self.order))

    def __len__(self) -> int:
        return len(self.order)

    def block_top_n(self, queries, n: int, seen: sp.csr_matrix | None = None):
        """Top ``n`` items of each of ``len(queries)`` users: ``(rows, cols, score, rank)`` like
        ``recommend._topn.top_n`` (the query vectors themselves are ignored: all ones)."""
        m, n_items = len(queries), len(self.order)
        k = min(int(n), n_items)
        j = np.arange(k)
        pos = np.broadcast_to(j, (m, k))
        if seen is not None and seen.nnz and k:
            span = n_items + 1  # ranks and adjusted ranks lie in [0, n_items]
            row = np.repeat(np.arange(m, dtype=np.int64), np.diff(seen.indptr))
            key = np.unique(row * span + self.rank[seen.indices])  # per user, seen ranks ascending
            row = key // span
            start = np.searchsorted(row, np.arange(m))
            adjusted = key - (np.arange(len(key)) - start[row])  # row * span + (r_i - i)
            count = np.searchsorted(adjusted, np.arange(m)[:, None] * span + j, side="right") - start[:, None]
            pos = j + count
        keep = pos < n_items  # a user who saw (nearly) everything gets fewer
        rows = np.broadcast_to(np.arange(m)[:, None], (m, k))[keep]
        cols = self.order[pos[keep]]
        ranks = np.broadcast_to(j + 1, (m, k))[keep]
        return rows, cols, self.scores[cols].astype(np.float64), ranks.astype(np.int64)


# load_model finds the class by its kind: the artifact code imports no model
register_kind(PopularityRecommender, load_from)
