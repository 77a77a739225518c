"""Batch top-N: every user's recommendations and similar items (fold-in for new users: ``_foldin``).

Both work block by block, each block in bounded memory (:mod:`._tiled`): a batch of user (or
item) vectors times one float32 tile of the item factors, the seen items of the tile masked, only the
scores that can still reach a row's top ``n`` merged into its running top ``n``; one BLAS thread per
task (Dask runs one task per core). The scratch of one task is sized from the config
``daskml_scale.topn.task_memory`` (default 256 MiB, at most a quarter of a worker's memory per
thread), read where the task runs. A popularity model scores nothing: its one global list is
filtered per user (:class:`~._popularity.PopularityList`). Outputs are Dask DataFrames in long
format ``user_id, item_id, score, rank`` with the original ids; nothing the size of the output
reaches the client.
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
from ..errors import ParameterError, SchemaError, check_fitted, check_in
from ._matrix import block_bounds, build_block, check_interactions, index_partition, pattern_csr, split_pieces
from ._tiled import one_blas_thread, task_memory, tiled_top_n, top_k_merge

__all__ = ["recommend_all", "similar_items"]

_OUTPUT_ROW_BYTES = 64  # one output row (user, item, score, rank) while a partition's frame is built


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

    Rows are sorted by score descending, ties by column ascending (also at the n-th place: the
    smaller columns win); rows with fewer than ``n`` unseen columns return fewer. ``scores`` is
    modified (seen pairs set to ``-inf``). For a small matrix already formed; factors go through
    :func:`._tiled.tiled_top_n`, which never forms it.
    """
    m, n_cols = scores.shape
    if seen is not None and seen.nnz:
        r = np.repeat(np.arange(m), np.diff(seen.indptr))
        scores[r, seen.indices] = -np.inf
    k = min(n, n_cols)
    if k == 0 or m == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0), z
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k]
    r, c = np.nonzero((scores >= kth[:, None]) & np.isfinite(scores))
    rows, cols, score, rank = top_k_merge(r, c, scores[r, c], k)
    return rows, cols, score.astype(np.float64), rank


def _block_recs(vectors, V, seen, user_ids, item_ids, n, *, budget=None):
    """Recommendations of one block of users, in bounded memory (see :func:`._tiled.tiled_top_n`)."""
    with one_blas_thread():
        if hasattr(V, "block_top_n"):  # scores itself: quantized factors, a popularity list
            rows, cols, score, rank = V.block_top_n(vectors, n, seen)
        else:
            rows, cols, score, rank = tiled_top_n(vectors, V, n, seen, budget=budget)
    return pd.DataFrame(
        {
            S.USER_ID: user_ids[rows],
            S.ITEM_ID: item_ids[cols],
            S.SCORE: score,
            S.RANK: np.asarray(rank, dtype=np.int64),
        }
    )


def _user_block(vectors, user_ids, pieces, n_items, item_ids, V, n, *, budget=None):
    """Top ``n`` of one block of users; ``budget``: scratch bytes (default: :func:`._tiled.task_memory`)."""
    seen = build_block(pieces, len(user_ids), n_items) if pieces is not None else None
    return _block_recs(vectors, V, seen, user_ids, item_ids, n, budget=budget)


def _rows_per_partition(requested, n: int) -> int:
    """``requested`` rows per output partition, fewer where ``n`` rows each would exceed the budget."""
    return max(1, min(int(requested), task_memory() // (_OUTPUT_ROW_BYTES * int(n))))


def _light(model):
    """A copy of a fitted model without its reference to the (lazy) training data.

    A model whose factors are blocks on the cluster keeps its item side only, in this process (the
    fold-in tasks score against it): the futures themselves cannot travel into tasks.
    """
    m = copy.copy(model)
    m.__dict__.pop("_train_interactions", None)
    m.__dict__.pop("_train_seen", None)
    if getattr(model, "item_blocks_", None) is not None and not isinstance(
        model.item_blocks_.factors[0], np.ndarray
    ):
        m.__dict__ = {
            k: v for k, v in m.__dict__.items() if k not in ("user_blocks_", "item_blocks_", "_local")
        }
        m.item_ids_, m.item_factors_ = model.item_ids_, model.item_factors_
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
        DataFrame of ``user_id, item_id``, read once. An ``ALSRecommender`` fitted in this session
        keeps its training pairs by user block on the workers (5 bytes a pair), so excluding the
        training interactions (by default, or passing the same collection) reads nothing again.
    users_per_partition : int
        Users per output partition at most, and at most as many as keep a partition's output
        (``n`` rows per user, ~64 bytes a row while it is built) within the task memory; with a
        client, at least one partition per worker thread. Each partition is scored in batches of
        users times tiles of items sized from the task memory (config
        ``daskml_scale.topn.task_memory``, see the module docstring), so the memory of a task does
        not grow with the number of items.
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
    users_per_partition = _rows_per_partition(users_per_partition, n)
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


def _seen_block(ids, pieces, item_ids):
    """The seen pairs of one user block as a CSR (its users x all items), from its routed pieces."""
    u = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0)
    i = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0)
    rows = pd.Index(ids).get_indexer(u)
    cols = pd.Index(item_ids).get_indexer(i)
    keep = (rows >= 0) & (cols >= 0)
    return pattern_csr(rows[keep], cols[keep], len(ids), len(item_ids))


def _block_slice_recs(vectors, ids, lo, hi, seen, item_ids, V, n):
    """Recommendations of users ``lo:hi`` of one factor block (``seen``: the block's seen CSR)."""
    return _block_recs(vectors[lo:hi], V, None if seen is None else seen[lo:hi], ids[lo:hi], item_ids, n)


def _block_source(F):
    """A factor block for the graph: a block mapped from a saved model is opened by the task that
    uses it (only its file name travels), an array in memory is embedded."""
    name = getattr(F, "filename", None)
    if isinstance(F, np.memmap) and name:
        return dask.delayed(np.load)(str(name), mmap_mode="r", allow_pickle=False)
    return dask.delayed(F, pure=True)


def _is_training_data(model, ddf) -> bool:
    """Whether ``ddf`` is the collection ``model`` was fitted on (the same graph, by Dask's name)."""
    train = getattr(model, "_train_interactions", None)
    return train is not None and getattr(ddf, "_name", None) == getattr(train, "_name", False)


def _recommend_blocks(model, n, seen, users_per_partition, client):
    """recommend_all of a model whose factors are blocks (on the cluster, or in process).

    Item factors and ids are concatenated once per worker (from the item blocks, worker to worker);
    each user block is scored where it lives, in slices of at most ``users_per_partition`` users.
    Seen pairs: a model fitted in this session kept each user block's training pairs on its worker,
    used when the interactions to exclude are the training ones; others reach their user block by
    one exchange keyed on the user's block.
    """
    from ._blocks import concat, on_cluster

    ub, ib = model.user_blocks_, model.item_blocks_
    if on_cluster(ub.factors):
        client = ub.factors[0].client
        V = client.submit(concat, *ib.factors, pure=False)
        items = client.submit(concat, *ib.ids, pure=False)
        vectors, ids = ub.factors, ub.ids
    else:
        V = dask.delayed(concat)(*[_block_source(f) for f in ib.factors])
        items = dask.delayed(concat)(*ib.ids)
        vectors = [_block_source(f) for f in ub.factors]
        ids = [dask.delayed(x, pure=True) for x in ub.ids]
    nb = ub.n_blocks
    seen_blocks = [None] * nb
    kept = getattr(model, "_train_seen", None)
    if seen is not None and kept is not None and _is_training_data(model, seen):
        # the fit kept each user block's pairs where the block lives: nothing is read again
        seen_blocks = kept if on_cluster(kept) else [dask.delayed(x, pure=True) for x in kept]
    elif seen is not None:
        # seen pairs reach their user block by one exchange; each block's are assembled once
        split = [dask.delayed(_seen_by_block, nout=nb)(p, nb) for p in seen.to_delayed()]
        seen_blocks = [dask.delayed(_seen_block)(ids[b], [sp_[b] for sp_ in split], items) for b in range(nb)]
    per = max(1, int(users_per_partition))
    parts = []
    for b in range(nb):
        size = int(ub.offsets[b + 1] - ub.offsets[b])
        bounds = block_bounds(size, max(1, math.ceil(size / per)))  # slices of equal size: balanced
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            parts.append(dask.delayed(_block_slice_recs)(vectors[b], ids[b], int(lo), int(hi), seen_blocks[b],
                                                         items, V, n))  # fmt: skip
    meta = _recs_meta(model._id_meta("user"), model._id_meta("item"))
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _unit_rows(F) -> np.ndarray:
    """Rows of ``F`` scaled to unit length, as float32 (zero rows stay zero); 64k rows at a time."""
    out = np.empty(F.shape, dtype=np.float32)
    for lo in range(0, len(F), 1 << 16):
        x = np.asarray(F[lo : lo + (1 << 16)], dtype=np.float64)
        out[lo : lo + len(x)] = x / np.maximum(np.linalg.norm(x, axis=1), 1e-12)[:, None]
    return out


def _self_pairs(pos, n_items: int) -> sp.csr_matrix:
    """Query ``j`` x item ``pos[j]``: each item excluded from its own list."""
    m = len(pos)
    return sp.csr_matrix((np.ones(m, np.float32), np.asarray(pos), np.arange(m + 1)), shape=(m, n_items))


def _similar_frame(query_ids, item_ids, rows, cols, score, rank) -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.ITEM_ID: query_ids[rows],
            "similar_item_id": item_ids[cols],
            S.SCORE: score,
            S.RANK: np.asarray(rank, dtype=np.int64),
        }
    )


def _similar_block(U, lo, hi, item_ids, n):
    """The ``n`` nearest items of items ``lo:hi`` (unit float32 rows ``U``), in bounded memory."""
    with one_blas_thread():
        rows, cols, score, rank = tiled_top_n(U[lo:hi], U, n, _self_pairs(np.arange(lo, hi), len(U)))
    return _similar_frame(item_ids[lo:hi], item_ids, rows, cols, score, rank)


def _cluster_item_blocks(model):
    ib = getattr(model, "item_blocks_", None) if not hasattr(model, "_similarity_inputs") else None
    if ib is None or isinstance(ib.factors[0], np.ndarray):
        return None
    return ib


def _unit_concat(*blocks):
    from ._blocks import concat

    return _unit_rows(concat(*blocks))


def _item_positions(ids, items, owner):
    """``(items, positions in ids)``; SchemaError naming the unknown ids."""
    items = np.asarray(items)
    pos = pd.Index(ids).get_indexer(items)
    if (pos < 0).any():
        missing = items[pos < 0]
        raise SchemaError(
            f"{owner}: {len(missing)} item id(s) are not in the model (first: {missing[:5].tolist()}). "
            "Pass ids seen in training (model.item_ids_).",
            column=S.ITEM_ID,
        )
    return items, pos


def _similar_ann(model, items, n, items_per_partition, client, ann_params):
    """similar_items(method="ann"): approximate neighbours from an HNSW index per worker."""
    from ._ann import ItemIndex, approximate_similar_items

    if hasattr(model, "_similarity_inputs"):
        raise ParameterError(
            "similar_items(method='ann') needs float factors; this model's are quantized. Use "
            "method='exact', or the float ALSRecommender it was compressed from."
        )
    check_fitted(
        model, "item_blocks_" if getattr(model, "item_blocks_", None) is not None else "item_factors_"
    )
    ib = _cluster_item_blocks(model)
    if ib is not None:  # the index is built on the workers from the item blocks, never here
        return _similar_ann_blocks(ib, model._id_meta("item"), items, n, items_per_partition, ann_params)
    ids, F = model.item_ids_, model.item_factors_
    if items is None:
        kw = {"items_per_partition": items_per_partition} if items_per_partition is not None else {}
        return approximate_similar_items(ids, F, n, client=client, **kw, **ann_params)
    items, pos = _item_positions(ids, items, "similar_items")
    rows, cols, score, rank = ItemIndex(**ann_params).fit(F).query_long(pos, n)
    return _similar_frame(items, ids, rows, cols, score, rank)


def _similar_ann_blocks(ib, ids_meta, items, n, items_per_partition, ann_params):
    """method="ann" for item blocks on the cluster: factors and ids concatenated on a worker, the
    index built from them once per worker (cached by the blocks' keys); queries answered there."""
    from ._ann import ItemIndex, _faiss, ann_frame
    from ._blocks import concat

    index = ItemIndex(**ann_params)  # its defaults
    index._check_params("similar_items")
    params = {"M": index.M, "ef_construction": index.ef_construction, "ef_search": index.ef_search}
    _faiss()  # fail now, not on a worker, without the extra
    client = ib.factors[0].client
    Fd = client.submit(concat, *ib.factors, pure=False)
    idd = client.submit(concat, *ib.ids, pure=False)
    token = dask.base.tokenize([f.key for f in ib.factors], params["M"], params["ef_construction"])
    if items is None:
        per = 50_000 if items_per_partition is None else int(items_per_partition)
        # on every worker, like the scattered arrays of approximate_similar_items (broadcast): with
        # one copy the scheduler queues every block's task where it lives, and one worker builds
        # and queries alone (a spread test saw it in a full suite run)
        client.replicate([Fd, idd])
        return ann_frame(Fd, idd, ids_meta, ib.n_rows, token, params, n, per, client)
    # small: the queries' neighbours
    return client.submit(_ann_queries, Fd, idd, token, params, np.asarray(items), n, pure=False).result()


def _ann_queries(F, ids, token, params, items, n):
    from ._ann import _cached_index

    items, pos = _item_positions(ids, items, "similar_items")
    rows, cols, score, rank = _cached_index(token, F, params).query_long(pos, n)
    return _similar_frame(items, ids, rows, cols, score, rank)


def _similar_queries(U, ids, items, n):
    """Exact neighbours of the query ``items`` (unit rows ``U`` of every item), in one task."""
    items, pos = _item_positions(ids, items, "similar_items")
    with one_blas_thread():
        rows, cols, score, rank = tiled_top_n(U[pos], U, n, _self_pairs(pos, len(U)))
    return _similar_frame(items, ids, rows, cols, score, rank)


def _similar_blocks(model, n, items_per_partition):
    """similar_items(items=None) of a model whose item factors are blocks on the cluster: the unit
    rows and ids are assembled on a worker (worker to worker, not through this process) and every
    partition task reads them there."""
    from ._blocks import concat

    ib = _cluster_item_blocks(model)
    client = ib.factors[0].client
    U = client.submit(_unit_concat, *ib.factors, pure=False)
    idd = client.submit(concat, *ib.ids, pure=False)
    client.replicate([U, idd])  # on every worker, so that the parts' tasks spread (see the ANN path)
    n_items = ib.n_rows
    per = _rows_per_partition(20_000 if items_per_partition is None else items_per_partition, n)
    n_parts = max(1, math.ceil(n_items / per), sum(client.nthreads().values()))
    bounds = block_bounds(n_items, n_parts)
    parts = [
        dask.delayed(_similar_block)(U, int(bounds[b]), int(bounds[b + 1]), idd, n)
        for b in range(len(bounds) - 1)
    ]
    ids0 = model._id_meta("item")
    meta = _similar_frame(
        ids0, ids0, *(np.zeros(0, dtype=np.int64),) * 2, np.zeros(0), np.zeros(0, dtype=np.int64)
    )
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def similar_items(
    model,
    items=None,
    n: int = 10,
    *,
    method: str = "exact",
    items_per_partition: int | None = None,
    client=None,
    ann_params: dict | None = None,
):
    """The ``n`` items most similar to each given item (cosine of item factors), itself excluded.

    Exact: every query item is scored against the whole catalogue, so all items of a catalogue cost
    ``n_items ** 2 * factors`` multiply-adds: O(n_items^2) work (200k items, 16 factors: 101 s on
    two 1-thread workers of a busy 2-core machine; 10M items would be 2,500 times that). Memory
    stays bounded whatever the catalogue: query items in batches times float32 tiles of items with
    a running top ``n`` (see the module docstring); the ``queries x n_items`` matrix is never
    formed. Past a few hundred thousand items use the approximate path (``method='ann'``, an HNSW
    index: ``recommend._ann.approximate_similar_items``), whose recall can be checked against this
    one on a sample.

    Parameters
    ----------
    model : ALSRecommender
        Fitted.
    items : array-like, optional
        Item ids; None means every item (returned as a lazy Dask DataFrame).
    n : int
    items_per_partition : int, optional
        Query items per output partition (``items=None``); default 20,000, fewer where ``n`` rows
        each would not fit the task memory, and at least one partition per worker thread with a
        client.
    method : {"exact", "ann"}
        ``"ann"``: an HNSW index over the item factors (faiss, the ``[ann]`` extra), built once per
        worker, queried per partition; the returned pairs carry their exact cosine, only the set of
        neighbours is approximate (recall@10 0.966 at 500k items with the defaults, 18.5x faster
        per query than exact: ``benchmarks/bench_ann.py``). Its item factors are gathered here once.
    client : distributed.Client, optional
        With a client (given or current) and ``items=None``, the factors are scattered to its
        workers now and the result must be computed on that client.
    ann_params : dict, optional
        ``M``, ``ef_construction``, ``ef_search`` of the index (``method="ann"``).

    Returns
    -------
    pandas.DataFrame (``items`` given) or dask.dataframe.DataFrame (``items=None``)
        ``item_id, similar_item_id, score, rank``; per item by score descending, ties by position
        in ``model.item_ids_``.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import ALSRecommender, similar_items
    >>> model = ALSRecommender(factors=4, iterations=2).fit(make_interactions(5_000, 100, 50, seed=0))
    >>> similar_items(model, [0, 1], n=3).shape
    (6, 4)
    """
    owner = "similar_items"
    _check_n(n, owner)
    check_in("method", method, ("exact", "ann"), owner)
    if method == "ann":
        return _similar_ann(model, items, int(n), items_per_partition, client, ann_params or {})
    ib = _cluster_item_blocks(model)
    if ib is not None and items is None:  # scored where the blocks live
        return _similar_blocks(model, int(n), items_per_partition)
    if ib is not None:  # a few queries: answered on a worker holding the assembled item side
        from ._blocks import concat

        client = ib.factors[0].client
        U = client.submit(_unit_concat, *ib.factors, pure=False)
        idd = client.submit(concat, *ib.ids, pure=False)
        # small: the queries' neighbours
        return client.submit(_similar_queries, U, idd, np.asarray(items), int(n), pure=False).result()
    check_fitted(model, "item_factors_")
    ids = model.item_ids_
    if hasattr(model, "_similarity_inputs"):  # quantized factors (daskml_scale.compression)
        F, norms, block = model._similarity_inputs()
        shared = (F, norms)
    else:
        block = _similar_block
        shared = (_unit_rows(model.item_factors_),)
    if items is None:
        client = get_client(client)
        per = _rows_per_partition(20_000 if items_per_partition is None else items_per_partition, n)
        n_parts = max(1, math.ceil(len(ids) / per))
        if client is not None and items_per_partition is None:
            n_parts = max(n_parts, sum(client.nthreads().values()))
        bounds = block_bounds(len(ids), n_parts)
        if client is not None:  # the factors go to every worker once, not inside the graph
            shared_d = [client.scatter(a, broadcast=True, hash=False) for a in shared]
            idd = client.scatter(ids, broadcast=True, hash=False)
        else:
            shared_d = [dask.delayed(a, pure=True) for a in shared]
            idd = dask.delayed(ids, pure=True)
        parts = [
            dask.delayed(block)(*shared_d, int(bounds[b]), int(bounds[b + 1]), idd, int(n))
            for b in range(len(bounds) - 1)
        ]
        meta = block(*shared, 0, 0, ids, int(n))
        return dd.from_delayed(parts, meta=meta, verify_meta=False)
    items, pos = _item_positions(ids, items, owner)
    if block is not _similar_block:  # quantized: one query at a time through its block kernel
        frames = []
        for p in pos:
            out = block(F, norms, int(p), int(p) + 1, ids, int(n))
            out[S.ITEM_ID] = ids[p]
            frames.append(out)
        return pd.concat(frames, ignore_index=True)
    (U,) = shared
    return _similar_queries(U, ids, items, n)
