"""Top-N in bounded memory: tiled scoring with a running merge, the popularity list, and a 200k-item
catalogue on 2 GiB workers (recommend_all for ALS and popularity, similar_items), exact against brute
force on sampled rows."""

from __future__ import annotations

import os
import resource
import tracemalloc

import dask
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from daskml_scale.errors import ParameterError
from daskml_scale.recommend import ALSRecommender, PopularityRecommender, recommend_all, similar_items
from daskml_scale.recommend._popularity import PopularityList
from daskml_scale.recommend._tiled import one_blas_thread, task_memory, tiled_top_n
from daskml_scale.recommend._topn import top_n


def _brute_top(scores: np.ndarray, n: int, seen: sp.csr_matrix | None = None):
    """Reference: a full stable sort of each row (score descending, ties by column), seen dropped."""
    scores = np.array(scores, dtype=np.float64)
    if seen is not None and seen.nnz:
        scores[np.repeat(np.arange(len(scores)), np.diff(seen.indptr)), seen.indices] = -np.inf
    out = []
    for i, row in enumerate(scores):
        cols = np.lexsort((np.arange(len(row)), -row))[:n]
        cols = cols[np.isfinite(row[cols])]
        out += [(i, c, row[c], j + 1) for j, c in enumerate(cols)]
    if not out:
        return [np.zeros(0)] * 4
    return [np.array(x) for x in zip(*out, strict=True)]


def _assert_equal(got, expected):
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


# ------------------------------------------------------------------------- running merge, small
@pytest.mark.parametrize("seed", range(6))
def test_tiles_with_running_merge_equal_one_shot_top_k(seed):
    """Any tiling gives the one-shot top k exactly, ties by column included (integer scores tie a lot)."""
    rng = np.random.default_rng(seed)
    m, n_items, k = int(rng.integers(1, 120)), int(rng.integers(1, 1500)), int(rng.integers(1, 5))
    n = int(rng.integers(1, 30))
    Q = rng.integers(-2, 3, size=(m, k)).astype(np.float32)
    V = rng.integers(-2, 3, size=(n_items, k)).astype(np.float32)
    Q[: m // 3] = 0  # all-zero rows: every score ties
    density = [0.0, 0.05, 0.5, 0.97][seed % 4]
    seen = sp.random(m, n_items, density=density, format="csr", random_state=seed)
    expected = _brute_top(Q.astype(np.float64) @ V.T, n, seen)
    for shape in (None, (7, 13), (64, 97), (1, 4), (500, 1), (3, 400)):
        _assert_equal(tiled_top_n(Q, V, n, seen, shape=shape), expected)
    _assert_equal(top_n(Q.astype(np.float64) @ V.T, n, seen), expected)  # the in-memory helper too


def test_popularity_list_equals_sorting_every_user(seed=0):
    rng = np.random.default_rng(seed)
    for trial in range(20):
        n_items, m, n = int(rng.integers(1, 300)), int(rng.integers(0, 60)), int(rng.integers(1, 25))
        scores = rng.integers(0, 6, n_items).astype(np.float64)  # many ties: by position
        seen = sp.random(m, n_items, density=[0, 0.1, 0.7, 1.0][trial % 4], format="csr", random_state=trial)
        got = PopularityList(scores).block_top_n(np.ones((m, 1)), n, seen)
        _assert_equal(got, _brute_top(np.tile(scores, (m, 1)), n, seen))


@pytest.mark.parametrize("budget", ["16 MiB", "64 MiB"])
def test_scratch_stays_within_the_task_memory(budget):
    """Measured peak of one call (50k items) under its budget, also when every score ties."""
    rng = np.random.default_rng(0)
    V = rng.normal(size=(50_000, 16)).astype(np.float32)
    seen = sp.random(500, 50_000, density=0.002, format="csr", random_state=0, dtype=np.float32)
    for Q in (rng.normal(size=(500, 16)).astype(np.float32), np.zeros((500, 16), np.float32)):
        tracemalloc.start()
        try:
            rows, cols, _, _ = tiled_top_n(Q, V, 10, seen, budget=budget)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < task_memory(budget), (budget, peak)
        assert len(rows) == 10 * len(Q)
    # measured: 16 MiB -> peaks 3.3 MiB (random) and 11.5 MiB (all tie); 64 MiB -> 5.2 and 43 MiB


def test_task_memory_config():
    assert task_memory("64 MiB") == 64 << 20
    with dask.config.set({"daskml_scale.topn.task_memory": "32 MiB"}):
        assert task_memory() == 32 << 20
    assert task_memory() == 256 << 20  # outside a worker: the default
    with pytest.raises(ParameterError, match="must be at least 1 MiB. Got 1000 bytes"):
        task_memory(1000)


def test_one_blas_thread_restores_the_limit_after_overlapping_calls():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with one_blas_thread():
        with one_blas_thread():  # another task of the same worker
            assert set(blas_threads()) <= {1}
        assert set(blas_threads()) <= {1}  # still limited while the first one runs
    assert blas_threads() == before


def test_one_blas_thread_limits_a_blas_loaded_after_its_first_call():
    """Regression: the libraries were looked up once per process, so a BLAS loaded later (faiss's
    OpenBLAS, imported by an approximate index after a top-N task) kept its threads (seen as
    ``{1, 2}`` when the suite ran in another order). Run in a fresh process where faiss is not loaded."""
    pytest.importorskip("faiss")
    code = """
import sys, threadpoolctl
from daskml_scale.recommend._tiled import one_blas_thread
def blas():
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
assert "faiss" not in sys.modules
with one_blas_thread():
    pass
before = set(blas())
import faiss
assert set(blas()) > before, "faiss brought no BLAS of its own"
with one_blas_thread():
    assert set(blas().values()) == {1}, blas()
"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -------------------------------------------------------------- 200k items on 2 GiB workers
N_ITEMS, N_USERS, FACTORS = 200_000, 4_000, 16
WORKER_MEMORY = 2 << 30


@pytest.fixture(scope="module")
def small_workers():
    """Two single-thread worker processes with 2 GiB each (the session cluster has 4 GiB)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="2GiB",
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(7)
    als = ALSRecommender(factors=FACTORS)
    als.user_ids_ = np.arange(N_USERS, dtype=np.int64) * 10 + 3
    als.item_ids_ = np.arange(N_ITEMS, dtype=np.int64) * 7 + 1
    als.user_factors_ = (rng.normal(size=(N_USERS, FACTORS)) / 4).astype(np.float32)
    als.item_factors_ = (rng.normal(size=(N_ITEMS, FACTORS)) / 4).astype(np.float32)
    pop = PopularityRecommender()
    pop.user_ids_, pop.item_ids_ = als.user_ids_, als.item_ids_
    pop.item_scores_ = np.floor(rng.pareto(1.0, N_ITEMS) * 3)  # heavy tail, many ties
    # 50 seen items per user, half of them among the 500 most popular
    top = np.argsort(-pop.item_scores_, kind="stable")[:500]
    items = np.where(rng.random((N_USERS, 50)) < 0.5, rng.choice(top, (N_USERS, 50)),
                     rng.integers(0, N_ITEMS, (N_USERS, 50)))  # fmt: skip
    seen = pd.DataFrame({"user_id": np.repeat(als.user_ids_, 50), "item_id": als.item_ids_[items.ravel()]})
    return als, pop, seen


def _seen_csr(seen: pd.DataFrame, user_ids, item_ids) -> sp.csr_matrix:
    r = pd.Index(user_ids).get_indexer(seen["user_id"])
    c = pd.Index(item_ids).get_indexer(seen["item_id"])
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(user_ids), len(item_ids)))


def _check_sample(got: pd.DataFrame, query_pos, query_ids, Q, V, seen, n, key, other, item_ids):
    """Brute force (float64, 50 rows at a time) on the sampled rows; ids may differ only on ties.

    ``key``/``other``: the query and result id columns; ``item_ids``: the ids of ``V``'s rows.
    """
    got = got[got[key].isin(query_ids)].sort_values([key, "rank"])
    for lo in range(0, len(query_pos), 50):
        pos, ids = query_pos[lo : lo + 50], query_ids[lo : lo + 50]
        true = Q[pos].astype(np.float64) @ V.astype(np.float64).T
        rows, cols, score, rank = _brute_top(true, n, seen[pos])
        mine = got[got[key].isin(ids)]
        assert len(mine) == len(rows)
        np.testing.assert_array_equal(mine[key].to_numpy(), ids[rows])
        np.testing.assert_array_equal(mine["rank"].to_numpy(), rank)
        np.testing.assert_allclose(mine["score"].to_numpy(), score, rtol=0, atol=1e-5)
        differ = np.flatnonzero(mine[other].to_numpy() != item_ids[cols])
        if len(differ):  # a float32 rounding swap of two scores equal within 1e-5
            mine_cols = pd.Index(item_ids).get_indexer(mine[other].to_numpy()[differ])
            a, b = true[rows[differ], mine_cols], true[rows[differ], cols[differ]]
            assert np.abs(a - b).max() < 1e-5, (mine.iloc[differ[:5]], cols[differ[:5]])


def _peak_rss(client) -> dict:
    return client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def test_200k_items_on_2gib_workers(small_workers, catalogue):
    """recommend_all (ALS and popularity) and similar_items against 200k items: bounded, exact."""
    c = small_workers
    als, pop, seen_df = catalogue
    pids = c.run(os.getpid)
    sample = np.sort(np.random.default_rng(0).choice(N_USERS, 200, replace=False))
    seen = _seen_csr(seen_df, als.user_ids_, als.item_ids_)
    with c.as_current(), dask.config.set(scheduler=c):
        recs = recommend_all(als, n=10, exclude_seen=seen_df, client=c).compute()
        assert len(recs) == 10 * N_USERS
        _check_sample(recs, sample, als.user_ids_[sample], als.user_factors_, als.item_factors_, seen, 10,
                      "user_id", "item_id", als.item_ids_)  # fmt: skip

        popular = recommend_all(pop, n=10, exclude_seen=seen_df, client=c).compute()
        assert len(popular) == 10 * N_USERS
        got = popular[popular["user_id"].isin(als.user_ids_[sample])].sort_values(["user_id", "rank"])
        rows, cols, score, rank = _brute_top(np.tile(pop.item_scores_, (len(sample), 1)), 10, seen[sample])
        np.testing.assert_array_equal(got["item_id"].to_numpy(), als.item_ids_[cols])  # exact, ties included
        np.testing.assert_array_equal(got["score"].to_numpy(), score)

        # similar items: 4 of the 100 partitions (8,000 query items, each against all 200k)
        everything = similar_items(als, n=5, items_per_partition=2_000, client=c)
        assert everything.npartitions == 100
        sim = everything.partitions[[0, 33, 66, 99]].compute()
        assert len(sim) == 5 * 8_000 and (sim["item_id"] != sim["similar_item_id"]).all()
        queried = pd.Index(als.item_ids_).get_indexer(sim["item_id"].unique())
        qpos = np.sort(np.random.default_rng(1).choice(queried, 200, replace=False))
        unit = als.item_factors_ / np.linalg.norm(als.item_factors_, axis=1, keepdims=True)
        self_pairs = sp.csr_matrix((np.ones(N_ITEMS), (np.arange(N_ITEMS), np.arange(N_ITEMS))))
        _check_sample(sim, qpos, als.item_ids_[qpos], unit, unit, self_pairs, 5, "item_id", "similar_item_id",
                      als.item_ids_)  # fmt: skip
    assert c.run(os.getpid) == pids  # no worker was restarted
    peak = _peak_rss(c)
    assert max(peak.values()) < 0.5 * WORKER_MEMORY, peak
