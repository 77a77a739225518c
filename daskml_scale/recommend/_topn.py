"""Batch top-N: every user's recommendations, similar items, fold-in for new users.

All three work block by block: a block of user (or item) vectors times the item factors, a partial
sort (``argpartition``) of each row, the row's seen items masked first. Outputs are Dask DataFrames
in long format ``user_id, item_id, score, rank`` with the original ids; nothing the size of the
output reaches the client.
"""

from __future__ import annotations

import copy
import math

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import schema as S
from ..cluster import get_client
from ..errors import ParameterError, SchemaError, check_fitted
from ._matrix import block_bounds, build_block, check_interactions, index_partition, split_pieces
from ._runner import worker_threads

__all__ = ["recommend_all", "recommend_new_users", "similar_items"]

_BATCH_ROWS = 1024


def _check_n(n, owner):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ParameterError(f"The 'n' parameter of {owner} must be an int >= 1. Got {n!r} instead.")


def _recs_meta(user_ids, item_ids) -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.USER_ID: pd.Series(user_ids[:0]),
            S.ITEM_ID: pd.Series(item_ids[:0]),
            S.SCORE: pd.Series([], dtype="float64"),
            S.RANK: pd.Series([], dtype="int64"),
        }
    )


def top_n(scores: np.ndarray, n: int, seen: sp.csr_matrix | None = None):
    """Top ``n`` columns of each row of ``scores`` (seen pairs excluded): ``(rows, cols, score, rank)``.

    Rows are sorted by score descending, ties by column ascending; rows with fewer than ``n`` unseen
    columns return fewer.
    """
    m, n_cols = scores.shape
    if seen is not None and seen.nnz:
        r = np.repeat(np.arange(m), np.diff(seen.indptr))
        scores[r, seen.indices] = -np.inf
    k = min(n, n_cols)
    if k == 0 or m == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0), z
    if k < n_cols:
        idx = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k :]
    else:
        idx = np.tile(np.arange(n_cols), (m, 1))
    top = np.take_along_axis(scores, idx, axis=1)
    order = np.lexsort((idx, -top), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    top = np.take_along_axis(top, order, axis=1)
    rows = np.repeat(np.arange(m), k)
    ranks = np.tile(np.arange(1, k + 1), m)
    keep = np.isfinite(top.ravel())
    return rows[keep], idx.ravel()[keep], top.ravel()[keep].astype(np.float64), ranks[keep]


def _implicit_topk():
    """implicit's compiled batch top-k (``implicit.cpu.topk``), or None where it is missing."""
    try:
        from implicit.cpu.topk import topk
    except ImportError:
        return None
    return topk


def _top_n_fast(topk, vectors, V, n, seen):
    """``top_n`` through implicit's compiled kernel (float32 factors); same outputs."""
    k = min(n, V.shape[0])
    ids, scores = topk(
        V, np.ascontiguousarray(vectors), k, filter_query_items=seen, num_threads=worker_threads()
    )
    m = ids.shape[0]
    rows, ranks = np.repeat(np.arange(m), k), np.tile(np.arange(1, k + 1), m)
    keep = scores.ravel() > np.finfo(np.float32).min  # filtered slots hold -FLT_MAX
    return (
        rows[keep],
        ids.ravel()[keep].astype(np.int64),
        scores.ravel()[keep].astype(np.float64),
        ranks[keep],
    )


def _block_recs(vectors, V, seen, user_ids, item_ids, n):
    """Recommendations of one block of users, computed ``_BATCH_ROWS`` users at a time."""
    if hasattr(V, "block_top_n"):  # quantized factors (daskml_scale.compression): scored on codes
        rows, cols, score, rank = V.block_top_n(vectors, n, seen)
        return pd.DataFrame({S.USER_ID: user_ids[rows], S.ITEM_ID: item_ids[cols], S.SCORE: score,
                             S.RANK: rank.astype(np.int64)})  # fmt: skip
    topk = _implicit_topk() if vectors.dtype == np.float32 and V.dtype == np.float32 else None
    frames = []
    for lo in range(0, len(vectors), _BATCH_ROWS):
        hi = min(lo + _BATCH_ROWS, len(vectors))
        seen_rows = None if seen is None else seen[lo:hi]
        if topk is not None:
            rows, cols, score, rank = _top_n_fast(topk, vectors[lo:hi], V, n, seen_rows)
        else:
            rows, cols, score, rank = top_n(np.asarray(vectors[lo:hi] @ V.T), n, seen_rows)
        frames.append(
            pd.DataFrame(
                {
                    S.USER_ID: user_ids[lo + rows],
                    S.ITEM_ID: item_ids[cols],
                    S.SCORE: score,
                    S.RANK: rank.astype(np.int64),
                }
            )
        )
    if not frames:
        return _recs_meta(user_ids, item_ids)
    return pd.concat(frames, ignore_index=True)


def _user_block(vectors, user_ids, pieces, n_items, item_ids, V, n):
    seen = build_block(pieces, len(user_ids), n_items) if pieces is not None else None
    return _block_recs(vectors, V, seen, user_ids, item_ids, n)


def _light(model):
    """A copy of a fitted model without its reference to the (lazy) training data."""
    m = copy.copy(model)
    m.__dict__.pop("_train_interactions", None)
    return m


def _resolve_seen(model, exclude_seen, owner):
    if exclude_seen is None:
        return getattr(model, "_train_interactions", None)
    if exclude_seen is False:
        return None
    if exclude_seen is True:
        seen = getattr(model, "_train_interactions", None)
        if seen is None:
            raise ParameterError(
                f"{owner}(exclude_seen=True): this model was loaded from disk and does not hold its "
                "training interactions. Pass them: exclude_seen=interactions_ddf."
            )
        return seen
    return check_interactions(exclude_seen, owner)


def recommend_all(model, n: int = 10, *, exclude_seen=None, users_per_partition: int = 50_000, client=None):
    """Top-``n`` items for every user of a fitted model, as a lazy Dask DataFrame.

    Parameters
    ----------
    model : ALSRecommender or PopularityRecommender
        Fitted.
    n : int
        Items per user.
    exclude_seen : None, bool or DataFrame
        Interactions whose (user, item) pairs are never recommended. None (default): the training
        interactions when the model was fitted in this session, else nothing; True: the training
        interactions (error when the model was loaded from disk); False: nothing; or a Dask/pandas
        DataFrame of ``user_id, item_id``.
    users_per_partition : int
        Users per output partition at most (each scored in batches of 1024 users); with a client,
        at least one partition per worker thread.
    client : distributed.Client, optional
        With a client (given or current), the factors are scattered to its workers now and the
        result must be computed on that client; without one they are embedded in the graph.

    Returns
    -------
    dask.dataframe.DataFrame
        ``user_id, item_id, score, rank`` (rank 1 = best), one partition per block of users.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import PopularityRecommender, recommend_all
    >>> ddf = make_interactions(5_000, n_users=100, n_items=50, seed=0)
    >>> recs = recommend_all(PopularityRecommender().fit(ddf), n=3)
    >>> recs.compute()[["rank"]].max().item()  # small: a 300-user example
    3
    """
    owner = "recommend_all"
    blocks = getattr(model, "user_blocks_", None) is not None
    check_fitted(model, "user_blocks_" if blocks else "user_ids_")
    _check_n(n, owner)
    seen = _resolve_seen(model, exclude_seen, owner)
    if blocks:  # factors as blocks: scored where they live
        return _recommend_blocks(model, int(n), seen, users_per_partition, client)
    n_users, item_ids = len(model.user_ids_), model.item_ids_
    client = get_client(client)
    n_blocks = max(1, math.ceil(n_users / max(1, int(users_per_partition))))
    if client is not None:  # at least one block per worker thread, so every core works
        n_blocks = max(n_blocks, sum(client.nthreads().values()))
    bounds = block_bounds(n_users, n_blocks)
    n_blocks = len(bounds) - 1
    vectors = [model._user_vectors(int(bounds[b]), int(bounds[b + 1])) for b in range(n_blocks)]
    if client is not None:
        # factors go to the workers once (not inside the graph): user blocks spread, items everywhere
        vectors = client.scatter(vectors, hash=False)
        V = client.scatter(model._item_matrix(), broadcast=True, hash=False)
    else:
        vectors = [dask.delayed(v, pure=True) for v in vectors]
        V = dask.delayed(model._item_matrix(), pure=True)
    items_d = dask.delayed(item_ids, pure=True)
    pieces = [None] * n_blocks
    if seen is not None:
        users_d = dask.delayed(model.user_ids_, pure=True)
        split = [
            dask.delayed(split_pieces, nout=n_blocks)(
                dask.delayed(index_partition)(p, users_d, items_d), bounds, by="row"
            )
            for p in seen.to_delayed()
        ]
        pieces = [[s[b] for s in split] for b in range(n_blocks)]
    parts = [
        dask.delayed(_user_block)(
            vectors[b],
            model.user_ids_[bounds[b] : bounds[b + 1]],
            pieces[b],
            len(item_ids),
            items_d,
            V,
            int(n),
        )
        for b in range(n_blocks)
    ]
    return dd.from_delayed(parts, meta=_recs_meta(model.user_ids_, item_ids), verify_meta=False)


def _seen_by_block(df, n_blocks: int):
    """One partition of seen interactions cut by user block (the factorize's hash of the user id)."""
    from ._factorize import _cut

    u, i = df[S.USER_ID].to_numpy(), df[S.ITEM_ID].to_numpy()
    return _cut(u, n_blocks, u, i)


def _block_slice_recs(vectors, ids, lo, hi, pieces, item_ids, V, n):
    """Recommendations of users ``lo:hi`` of one factor block (seen pairs from their pieces)."""
    vectors, ids = vectors[lo:hi], ids[lo:hi]
    seen = None
    if pieces is not None:
        u = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0)
        i = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0)
        rows = pd.Index(ids).get_indexer(u)
        cols = pd.Index(item_ids).get_indexer(i)
        keep = (rows >= 0) & (cols >= 0)
        seen = build_block(
            [(rows[keep], cols[keep], np.ones(int(keep.sum()), np.float32))], len(ids), len(item_ids)
        )
    return _block_recs(vectors, V, seen, ids, item_ids, n)


def _recommend_blocks(model, n, seen, users_per_partition, client):
    """recommend_all of a model whose factors are blocks (on the cluster, or in process).

    Item factors and ids are concatenated once per worker (from the item blocks, worker to worker);
    each user block is scored where it lives, in slices of at most ``users_per_partition`` users;
    seen interactions reach their user block by one exchange keyed on the user's block.
    """
    from ._als import _has_futures
    from ._blocks import concat

    ub, ib = model.user_blocks_, model.item_blocks_
    on_cluster = _has_futures(ub.factors)
    if on_cluster:
        client = ub.factors[0].client
        V = client.submit(concat, *ib.factors, pure=False)
        items = client.submit(concat, *ib.ids, pure=False)
        vectors, ids = ub.factors, ub.ids
    else:
        V = dask.delayed(concat)(*ib.factors)
        items = dask.delayed(concat)(*ib.ids)
        vectors = [dask.delayed(f, pure=True) for f in ub.factors]
        ids = [dask.delayed(x, pure=True) for x in ub.ids]
    nb = ub.n_blocks
    pieces = [None] * nb
    if seen is not None:
        split = [dask.delayed(_seen_by_block, nout=nb)(p, nb) for p in seen.to_delayed()]
        pieces = [[sp_[b] for sp_ in split] for b in range(nb)]
    per = max(1, int(users_per_partition))
    parts = []
    for b in range(nb):
        size = int(ub.offsets[b + 1] - ub.offsets[b])
        for lo in range(0, max(size, 1), per):
            parts.append(dask.delayed(_block_slice_recs)(vectors[b], ids[b], lo, min(lo + per, size), pieces[b],
                                                         items, V, n))  # fmt: skip
    meta = _recs_meta(model._id_meta("user"), model._id_meta("item"))
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


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
    check_fitted(model, "user_ids_")
    _check_n(n, owner)
    if fallback is not None:
        check_fitted(fallback, "item_ids_")
    ddf = check_interactions(interactions, owner)
    if ddf.npartitions > 1:
        ddf = ddf.shuffle(on=S.USER_ID)
    meta = _recs_meta(np.asarray(ddf._meta[S.USER_ID]), model.item_ids_)
    return ddf.map_partitions(
        _fold_in_partition,
        _light(model),
        int(n),
        bool(exclude_seen),
        None if fallback is None else _light(fallback),
        meta=meta,
        enforce_metadata=False,
    )


def _similar_block(F, norms, lo, hi, item_ids, n):
    Q = F[lo:hi] / np.maximum(norms[lo:hi], 1e-12)[:, None]
    scores = Q @ (F / np.maximum(norms, 1e-12)[:, None]).T
    self_pairs = sp.csr_matrix(
        (np.ones(hi - lo), np.arange(lo, hi), np.arange(hi - lo + 1)), shape=(hi - lo, len(F))
    )
    rows, cols, score, rank = top_n(np.asarray(scores, dtype=np.float64), n, self_pairs)
    return pd.DataFrame(
        {
            S.ITEM_ID: item_ids[lo + rows],
            "similar_item_id": item_ids[cols],
            S.SCORE: score,
            S.RANK: rank.astype(np.int64),
        }
    )


def similar_items(model, items=None, n: int = 10, *, items_per_partition: int = 20_000):
    """The ``n`` items most similar to each given item (cosine of item factors), itself excluded.

    Parameters
    ----------
    model : ALSRecommender
        Fitted.
    items : array-like, optional
        Item ids; None means every item (returned as a lazy Dask DataFrame).
    n : int

    Returns
    -------
    pandas.DataFrame (``items`` given) or dask.dataframe.DataFrame (``items=None``)
        ``item_id, similar_item_id, score, rank``.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import ALSRecommender, similar_items
    >>> model = ALSRecommender(factors=4, iterations=2).fit(make_interactions(5_000, 100, 50, seed=0))
    >>> similar_items(model, [0, 1], n=3).shape
    (6, 4)
    """
    owner = "similar_items"
    check_fitted(model, "item_factors_")
    _check_n(n, owner)
    ids = model.item_ids_
    if hasattr(model, "_similarity_inputs"):  # quantized factors (daskml_scale.compression)
        F, norms, block = model._similarity_inputs()
    else:
        F = model.item_factors_.astype(np.float64)
        norms, block = np.linalg.norm(F, axis=1), _similar_block
    if items is None:
        bounds = block_bounds(len(ids), max(1, math.ceil(len(ids) / items_per_partition)))
        Fd, nd, idd = (dask.delayed(a, pure=True) for a in (F, norms, ids))
        parts = [
            dask.delayed(block)(Fd, nd, int(bounds[b]), int(bounds[b + 1]), idd, int(n))
            for b in range(len(bounds) - 1)
        ]
        meta = block(F, norms, 0, 0, ids, int(n))
        return dd.from_delayed(parts, meta=meta, verify_meta=False)
    items = np.asarray(items)
    pos = pd.Index(ids).get_indexer(items)
    if (pos < 0).any():
        missing = items[pos < 0]
        raise SchemaError(
            f"{owner}: {len(missing)} item id(s) are not in the model (first: {missing[:5].tolist()}). "
            "Pass ids seen in training (model.item_ids_).",
            column=S.ITEM_ID,
        )
    if block is not _similar_block:  # quantized: one query at a time through its block kernel
        frames = []
        for p in pos:
            out = block(F, norms, int(p), int(p) + 1, ids, int(n))
            out[S.ITEM_ID] = ids[p]
            frames.append(out)
        return pd.concat(frames, ignore_index=True)
    Fq = F[pos]
    nq = norms[pos]
    out = []
    for j in range(len(pos)):
        scores = (Fq[j] / max(nq[j], 1e-12)) @ (F / np.maximum(norms, 1e-12)[:, None]).T
        scores = np.asarray(scores, dtype=np.float64)[None, :]
        scores[0, pos[j]] = -np.inf
        rows, cols, score, rank = top_n(scores, n)
        out.append(
            pd.DataFrame({S.ITEM_ID: items[j], "similar_item_id": ids[cols], S.SCORE: score, S.RANK: rank})
        )
    return pd.concat(out, ignore_index=True)
