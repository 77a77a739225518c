"""Approximate similar items (HNSW over item factors): recall against brute force, format, per-worker build."""

from __future__ import annotations

import pickle

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from daskml_scale.errors import NotFittedError, ParameterError  # noqa: E402
from daskml_scale.recommend._ann import (  # noqa: E402
    ItemIndex,
    approximate_similar_items,
    exact_similar_items,
    exact_top_n,
    recall_at_k,
)

N_ITEMS, K, N = 20_000, 32, 10


def clustered_factors(n_items, k, n_clusters, *, spread=1.0, seed=0):
    """A mixture of Gaussians with a popularity-like (log-normal) spread of norms, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, k))
    X = centres[rng.integers(0, n_clusters, n_items)] + spread * rng.normal(size=(n_items, k))
    return (X * rng.lognormal(0.0, 0.7, size=(n_items, 1))).astype(np.float32)


def _exact_cosine(F, a, b):
    F = F.astype(np.float64)
    F = F / np.linalg.norm(F, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", F[a], F[b])


@pytest.fixture(scope="module")
def catalogue():
    F = clustered_factors(N_ITEMS, K, 80)
    ids = np.arange(N_ITEMS, dtype=np.int64) * 7 + 3  # ids are not positions
    sample = np.sort(np.random.default_rng(1).choice(N_ITEMS, 500, replace=False))
    return ids, F, sample


@pytest.fixture(scope="module")
def approx_all(catalogue):
    ids, F, _ = catalogue
    with dask.config.set(scheduler="sync"):
        return approximate_similar_items(ids, F, n=N, items_per_partition=5_000).compute()


@pytest.fixture(scope="module")
def exact_sample(catalogue):
    ids, F, sample = catalogue
    return exact_similar_items(ids, F, n=N, queries=sample)


def test_recall_at_10_on_clustered_factors(approx_all, exact_sample):
    # measured 0.9996 with the defaults (M=32, ef_construction=100, ef_search=128)
    assert recall_at_k(approx_all, exact_sample, k=10) >= 0.99


def test_bad_index_has_low_recall(catalogue, exact_sample):
    """The measurement can fail: a starved graph (M=2, ef_search=1) misses most neighbours."""
    ids, F, sample = catalogue
    pos, _ = ItemIndex(M=2, ef_construction=8, ef_search=1).fit(F).query(sample, n=N)
    rows = np.repeat(np.arange(len(sample)), N)
    approx = pd.DataFrame(
        {
            "item_id": ids[sample[rows]],
            "similar_item_id": ids[pos.ravel()],
            "rank": np.tile(np.arange(1, N + 1), len(sample)),
        }
    )
    assert recall_at_k(approx, exact_sample, k=10) < 0.5  # measured 0.06-0.13


def test_output_format_ranks_scores(approx_all, catalogue):
    ids, F, _ = catalogue
    df = approx_all
    assert df.columns.tolist() == ["item_id", "similar_item_id", "score", "rank"]
    assert df.dtypes.tolist() == [np.int64, np.int64, np.float64, np.int64]
    assert len(df) == N_ITEMS * N and set(df["item_id"]) == set(ids)
    assert (df.groupby("item_id")["rank"].agg(list).map(lambda r: r == list(range(1, N + 1)))).all()
    assert not (df["item_id"] == df["similar_item_id"]).any()
    assert not df.duplicated(["item_id", "similar_item_id"]).any()
    # sorted by score within each item, and every score is the exact cosine of its pair
    assert (df.groupby("item_id")["score"].diff().dropna() <= 0).all()
    pos = pd.Index(ids)
    a, b = pos.get_indexer(df["item_id"]), pos.get_indexer(df["similar_item_id"])
    np.testing.assert_allclose(df["score"], _exact_cosine(F, a, b), rtol=1e-5)


def test_exact_reference_agrees_with_numpy(catalogue, exact_sample):
    ids, F, sample = catalogue
    Fn = F.astype(np.float64) / np.linalg.norm(F.astype(np.float64), axis=1, keepdims=True)
    s = Fn[sample[:3]] @ Fn.T
    s[np.arange(3), sample[:3]] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :N]
    got = exact_sample[exact_sample["item_id"].isin(ids[sample[:3]])]
    np.testing.assert_array_equal(got["similar_item_id"].to_numpy(), ids[top.ravel()])
    np.testing.assert_allclose(got["score"], np.take_along_axis(s, top, axis=1).ravel(), rtol=1e-12)
    pos32, _ = exact_top_n(F, sample[:3], N, dtype=np.float32)  # the benchmark's float32 baseline
    assert np.mean(pos32 == top) > 0.95


def test_query_vectors_and_pickle():
    F = clustered_factors(2_000, 8, 20, seed=3)
    index = ItemIndex(n_threads=1).fit(F)
    pos, score = index.query(F[:5], n=3)  # vectors: nothing excluded, each finds itself first
    np.testing.assert_array_equal(pos[:, 0], np.arange(5))
    np.testing.assert_allclose(score[:, 0], 1.0)
    again = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(again.query(np.arange(50), n=5)[0], index.query(np.arange(50), n=5)[0])
    # more neighbours asked than exist: padded with -1 / NaN
    small = ItemIndex().fit(F[:4])
    p, s = small.query(np.array([0]), n=5)
    assert sorted(p[0, :3]) == [1, 2, 3] and (p[0, 3:] == -1).all() and np.isnan(s[0, 3:]).all()


def test_zero_vector_row():
    F = clustered_factors(300, 4, 5, seed=2)
    F[7] = 0.0
    df = approximate_similar_items(np.arange(300), F, n=3).compute()
    assert np.isfinite(df["score"]).all()
    assert (df.loc[df["item_id"] == 7, "score"] == 0.0).all()


def test_index_built_once_in_process():
    from daskml_scale.recommend import _ann

    F = clustered_factors(3_000, 8, 20, seed=4)
    before = sum(_ann._builds.values())
    sims = approximate_similar_items(np.arange(3_000), F, n=5, items_per_partition=500)
    assert sims.npartitions == 6
    sims.compute()
    # same factors and build parameters: the cached index again, even for another n in the same graph
    a, b = dask.compute(sims, approximate_similar_items(np.arange(3_000), F, n=2, items_per_partition=500))
    assert sum(_ann._builds.values()) - before == 1
    assert len(a) == 5 * 3_000 and len(b) == 2 * 3_000


def test_recall_at_k_by_hand_and_on_dask():
    exact = pd.DataFrame(
        {
            "item_id": [1, 1, 2, 2, 3, 3],
            "similar_item_id": [2, 3, 1, 3, 1, 2],
            "score": 0.0,
            "rank": [1, 2] * 3,
        }
    )
    approx = pd.DataFrame(
        {"item_id": [1, 1, 2, 2], "similar_item_id": [3, 9, 1, 3], "score": 0.0, "rank": [1, 2, 1, 2]}
    )
    # item 1: 1/2, item 2: 2/2, item 3 missing from approx: 0
    assert recall_at_k(approx, exact, k=2) == pytest.approx(0.5)
    assert recall_at_k(approx, exact, k=1) == pytest.approx((0 + 1 + 0) / 3)
    lazy = recall_at_k(dd.from_pandas(approx, npartitions=2), exact, k=2, compute=False)
    assert lazy.compute() == pytest.approx(0.5)
    assert recall_at_k(
        dd.from_pandas(approx, npartitions=2), dd.from_pandas(exact, npartitions=2)
    ) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "'n' parameter of approximate_similar_items must be an int >= 1"),
        ({"M": 1}, "'M' parameter of approximate_similar_items must be an int >= 2. Got 1"),
        ({"ef_search": 0}, "'ef_search' parameter .* int >= 1"),
        ({"ef_construction": True}, "'ef_construction' parameter .* int >= 1. Got True"),
        ({"items_per_partition": 0}, "'items_per_partition'"),
        ({"item_ids": np.arange(5)}, "one id per row of item_factors: got shape \\(5,\\) for 50 rows"),
        ({"item_ids": np.zeros(50, dtype=int)}, "must not repeat an id"),
        ({"item_factors": np.ones(50)}, "2-D float array"),
        ({"item_factors": np.ones((50, 4), dtype=int)}, "2-D float array"),
        ({"item_factors": np.full((50, 4), np.nan)}, "must be finite: 50 row\\(s\\)"),
    ],
)
def test_bad_parameters(kwargs, match):
    args = {"item_ids": np.arange(50), "item_factors": np.ones((50, 4), dtype=np.float32)}
    args.update(kwargs)
    with pytest.raises(ParameterError, match=match):
        approximate_similar_items(**args)


def test_bad_index_use():
    with pytest.raises(NotFittedError, match="call fit first"):
        ItemIndex().query(np.array([0]))
    index = ItemIndex().fit(np.ones((10, 2), dtype=np.float32))
    with pytest.raises(ParameterError, match="positions must lie in \\[0, 10\\)"):
        index.query(np.array([10]))
    with pytest.raises(ParameterError, match="2-D float array with 2 columns"):
        index.query(np.ones((1, 3)))
    with pytest.raises(ParameterError, match="'k' parameter of recall_at_k"):
        recall_at_k(pd.DataFrame(), pd.DataFrame(), k=0)
    with pytest.raises(ParameterError, match="'exact' parameter of recall_at_k lacks column"):
        ok = pd.DataFrame({"item_id": [1], "similar_item_id": [2], "rank": [1]})
        recall_at_k(ok, ok.drop(columns="rank"))


def _builds_here():
    from daskml_scale.recommend import _ann

    return sum(_ann._builds.values())


def test_on_cluster_index_built_once_per_worker(client, spread):
    F = clustered_factors(4_000, 16, 40, seed=5)
    ids = np.arange(4_000) + 10**6
    before = client.run(_builds_here)
    sims = approximate_similar_items(ids, F, n=5, items_per_partition=400)
    assert sims.npartitions == 10
    with spread() as ts:
        df = sims.compute()
    ts.assert_spread(prefix="ann-similar-items")
    after = client.run(_builds_here)
    assert {w: after[w] - before[w] for w in after} == dict.fromkeys(after, 1)  # once on each worker
    assert len(df) == 4_000 * 5 and not (df["item_id"] == df["similar_item_id"]).any()
    sample = np.arange(0, 4_000, 40)
    assert recall_at_k(df, exact_similar_items(ids, F, n=5, queries=sample), k=5) >= 0.99


def test_similar_items_method_ann_against_exact():
    """similar_items(method='ann') on a fitted model: the exact path's lists, nearly."""
    import dask

    from daskml_scale.data import make_interactions
    from daskml_scale.recommend import ALSRecommender, recall_at_k, similar_items

    with dask.config.set(scheduler="sync"):
        model = ALSRecommender(factors=16, iterations=3).fit(make_interactions(60_000, 2_000, 3_000, seed=0))
        exact = similar_items(model, n=10).compute()
        approx = similar_items(model, n=10, method="ann").compute()
        some = similar_items(model, model.item_ids_[:50], n=10, method="ann")
    assert list(approx.columns) == list(exact.columns)
    recall = recall_at_k(approx, exact, k=10)
    assert recall >= 0.95, recall
    assert recall_at_k(some, exact[exact["item_id"].isin(model.item_ids_[:50])], k=10) >= 0.9
    with pytest.raises(ParameterError, match="method"):
        similar_items(model, n=3, method="hnsw")
