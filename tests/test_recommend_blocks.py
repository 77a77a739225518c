"""The distributed ALS engine's building blocks: factorize, block half-steps, checkpoints, auto engine."""

from __future__ import annotations

import threading
import time

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _resilience import on_checkpoint

from daskml_scale.data import make_interactions
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.recommend import ALSRecommender, _als, _sizing, recommend_all
from daskml_scale.recommend import _blocks as B
from daskml_scale.recommend import _kernels as K
from daskml_scale.recommend._factorize import block_of, factorize_blocks
from daskml_scale.recommend._runner import Runner


def _interactions(npartitions=3, rows=12_000, users=250, items=90, seed=0):
    return make_interactions(rows, n_users=users, n_items=items, seed=seed, npartitions=npartitions)


def test_factorize_matches_pandas():
    ddf = _interactions(npartitions=4)
    df = ddf.compute()
    bm = factorize_blocks(Runner(None), ddf, 3, 2, owner="t")
    assert len(bm.users) == 3 and len(bm.items) == 2
    users = np.concatenate(bm.user_ids)
    items = np.concatenate(bm.item_ids)
    # every distinct id once, each block sorted and holding the ids that hash to it
    assert sorted(users) == sorted(df["user_id"].unique()) and len(set(users)) == len(users)
    assert sorted(items) == sorted(df["item_id"].unique())
    for b, ids in enumerate(bm.user_ids):
        assert (np.diff(ids) > 0).all() and (block_of(ids, 3) == b).all()
    assert bm.user_offsets.tolist() == [0, *np.cumsum([len(x) for x in bm.user_ids]).tolist()]
    # the blocks hold exactly pandas' summed matrix, by global codes
    dense = df.groupby(["user_id", "item_id"])["weight"].sum()
    U = sp.vstack(bm.users).tocoo()
    got = pd.Series(U.data, index=pd.MultiIndex.from_arrays([users[U.row], items[U.col]])).sort_index()
    pd.testing.assert_series_equal(got, dense.astype(np.float32).sort_index(), check_names=False, rtol=1e-6)
    It = sp.vstack(bm.items)
    assert (It.T.tocsr() != sp.vstack(bm.users).tocsr()).nnz == 0
    assert bm.nnz == len(dense)


def test_factorize_refuses_bad_rows_with_counts():
    df = _interactions(npartitions=1).compute()
    df.loc[df.index[:3], "weight"] = -1.0
    df.loc[df.index[5], "weight"] = np.nan
    with pytest.raises(SchemaError, match=r"4 row\(s\).*NaN: 1.*negative: 3"):
        ALSRecommender(engine="distributed", iterations=1).fit(df)
    df = _interactions(npartitions=1).compute().astype({"user_id": "float64"})
    df.loc[df.index[:2], "user_id"] = np.nan
    with pytest.raises(SchemaError, match=r"2 row\(s\) have a missing 'user_id'"):
        ALSRecommender(engine="distributed", iterations=1).fit(df)


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_half_step_over_pieces_equals_whole_solve(kernel, monkeypatch):
    """Every block of one side solved from pieces held with the other side's blocks, as in one piece."""
    n_users, n_items, k = 300, 200, 8
    C = sp.random(n_users, n_items, density=0.05, random_state=1, format="csr", dtype=np.float32) * 5
    X = K.init_factors(np.arange(n_users), k, 0, 0) * 30
    Y = K.init_factors(np.arange(n_items), k, 0, 1) * 30
    u_off, i_off = np.array([0, 100, 101, 300]), np.array([0, 150, 200])
    # item blocks hold their confidences (items x users) cut by user block: pieces[j][b]
    pieces = [B.split_pieces(C.T.tocsr()[i_off[j] : i_off[j + 1]], u_off, k) for j in range(2)]
    assert all(pieces[j][b].shape == (u_off[b + 1] - u_off[b], i_off[j + 1] - i_off[j])
               for j in range(2) for b in range(3))  # fmt: skip
    assert sum(P.nnz for ps in pieces for P in ps) == C.nnz
    Yb = [Y[i_off[j] : i_off[j + 1]] for j in range(2)]
    Xb = [X[u_off[b] : u_off[b + 1]] for b in range(3)]
    nonempty = [K.nonempty_rows(C[u_off[b] : u_off[b + 1]]) for b in range(3)]
    got = B.half_step(Runner(None), pieces, Yb, Xb, nonempty, 0.1, 3, kernel)
    expected = K.solve_block(C, X, Y, 0.1, 3, kernel)
    # measured 2e-7 of the largest factor (partial sums added in another order)
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # the other mode: the item blocks brought whole to each user block's task, solved by row chunks
    monkeypatch.setattr(B, "WHOLE_CHUNK_BYTES", 4 * k * 7)  # 7 rows a chunk
    whole = [B.whole_piece(C[u_off[b] : u_off[b + 1]], k) for b in range(3)]
    assert [len(w) for w in whole] == [15, 1, 29]
    got = B.half_step_gathered(Runner(None), whole, Yb, Xb, nonempty, 0.1, 3, kernel)
    # measured up to 1.1e-5 of the largest factor: BLAS rounds x @ A0 differently for 7-row chunks
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=0, atol=5e-5 * np.abs(expected).max())
    assert B.gather_mode(200, 300, k, 1e9) and not B.gather_mode(300, 200, k, 1e9)
    # the Gram matrix by chunks of rows equals the whole product (float64)
    monkeypatch.setattr(K, "GRAM_CHUNK_ROWS", 7)
    np.testing.assert_allclose(K.gram(X), X.astype(np.float64).T @ X, rtol=1e-12)
    assert not B.gather_mode(200, 300, k, 4 * k * 199)  # over the memory budget


@pytest.mark.parametrize("tile_bytes", [64, 2 << 20])
def test_pieces_cut_from_the_csr_equal_tiled_slices(tile_bytes, monkeypatch):
    # the direct cut (a counting sort per tile of rows) against as_piece on CSC column slices
    monkeypatch.setattr(K, "TILE_BYTES", tile_bytes)
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, 1_000, 20_000), rng.integers(0, 300, 20_000)
    C = sp.csr_matrix((rng.random(20_000).astype(np.float32) + 0.5, (r, c)), shape=(1_000, 300))
    C.sum_duplicates()
    offsets = np.array([0, 100, 100, 300])  # an empty range too
    Cc = sp.csc_matrix(C)
    for got, (lo, hi) in zip(K.cut_pieces(C, offsets, 8), zip(offsets[:-1], offsets[1:]), strict=True):
        want = K.as_piece(Cc[:, lo:hi].T, 8)
        assert got.shape == want.shape and got.nnz == want.nnz
        for a, b in zip(got[:3], want[:3], strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype


def test_non_finite_rows_counted_by_chunks():
    F = np.ones((50, 4), dtype=np.float32)
    F[[0, 6, 7, 49], [1, 0, 3, 2]] = [np.nan, np.inf, -np.inf, np.nan]
    F[7, 0] = np.nan  # two bad values in one row count once
    assert B.n_nonfinite(F) == B.n_nonfinite(F, chunk=7) == 4


def test_sparse_fit_matches_implicit_engine():
    # many users with a handful of items among many: most pieces between blocks are nearly empty
    ddf = make_interactions(6_000, n_users=3_000, n_items=4_000, seed=3, npartitions=3)
    a = ALSRecommender(factors=8, iterations=4, engine="distributed", n_blocks=4, compute_loss=True).fit(ddf)
    b = ALSRecommender(factors=8, iterations=4, engine="implicit", n_blocks=4, compute_loss=True).fit(ddf)
    # float32 sums in another order: implicit itself moves by ~3e-5 when its rows are permuted
    np.testing.assert_allclose(a.loss_history_, b.loss_history_, rtol=1e-5)


def _seen_fixture(zeros=False):
    """Interactions with repeated pairs (and zero weights), as pandas (the oracle) and Dask."""
    df = make_interactions(4_000, n_users=300, n_items=120, seed=5, npartitions=1).compute()
    df = pd.concat([df, df.iloc[::7]], ignore_index=True)  # repeated (user, item) pairs
    if zeros:
        df.loc[::11, "weight"] = 0.0
    return df, dd.from_pandas(df, npartitions=3)


def _routed(recs):
    """Tasks of a recommend_all graph that read and route seen interactions to the user blocks."""
    return [k for k in recs.__dask_graph__() if "_seen_by_block" in str(k)]


def _never_seen(recs, df):
    hit = recs.merge(df[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"])
    return len(hit) == 0


@pytest.mark.parametrize(
    ("engine", "shape", "gather"),
    [
        ("distributed", (300, 120), True),  # more users: items gathered to the user blocks
        ("distributed", (120, 300), True),  # more items: users gathered, pairs from the item blocks
        ("distributed", (300, 120), False),  # both steps partial
        ("implicit", (300, 120), True),
    ],
)
def test_recommend_all_excludes_the_kept_training_pairs(engine, shape, gather, monkeypatch):
    if not gather:
        monkeypatch.setattr(_als, "GATHER_MEMORY_SHARE", 0.0)
    df, ddf = _seen_fixture()
    if shape[0] < shape[1]:  # swap the roles of users and items
        df = df.rename(columns={"user_id": "item_id", "item_id": "user_id"})
        ddf = dd.from_pandas(df, npartitions=3)
    model = ALSRecommender(factors=6, iterations=2, engine=engine, n_blocks=3).fit(ddf)
    if engine == "distributed":
        assert model.half_steps_ == {
            "users": "gather" if gather and shape[0] > shape[1] else "partial",
            "items": "gather" if gather and shape[0] < shape[1] else "partial",
        }
    kept = recommend_all(model, n=15)  # the training pairs the fit kept by user block
    # nothing of the training data's graph is in it: the interactions are not read again
    assert not set(ddf.__dask_graph__()) & set(kept.__dask_graph__()) and not _routed(kept)
    assert not _routed(recommend_all(model, n=15, exclude_seen=ddf))  # the same collection
    # the same exclusion read from another collection of the same rows
    other = dd.from_pandas(df.sample(frac=1.0, random_state=1), npartitions=2)
    read = recommend_all(model, n=15, exclude_seen=other)
    assert len(_routed(read)) == 2
    kept, read = kept.compute(), read.compute()
    key = ["user_id", "rank"]
    pd.testing.assert_frame_equal(
        kept.sort_values(key).reset_index(drop=True), read.sort_values(key).reset_index(drop=True)
    )
    assert _never_seen(kept, df) and len(kept) == 15 * df["user_id"].nunique()
    # without the exclusion, training pairs are recommended (the test can fail)
    assert not _never_seen(recommend_all(model, n=15, exclude_seen=False).compute(), df)


@pytest.mark.parametrize("engine", ["distributed", "implicit"])
def test_pairs_of_zero_weight_are_seen(engine):
    # the distributed engine's pieces drop zero confidences: the fit keeps no pairs then, and
    # recommend_all reads the interactions again, so that a zero-weight pair is still seen
    df, ddf = _seen_fixture(zeros=True)
    model = ALSRecommender(factors=6, iterations=2, engine=engine, n_blocks=3).fit(ddf)
    recs = recommend_all(model, n=15)
    assert bool(_routed(recs)) == (engine == "distributed")
    recs = recs.compute()
    assert _never_seen(recs, df) and len(recs) == 15 * df["user_id"].nunique()


def test_checkpoint_resume_equals_uninterrupted_fit(tmp_path):
    ddf = _interactions()
    kw = dict(factors=6, regularization=0.1, engine="distributed", n_blocks=3, compute_loss=True)
    whole = ALSRecommender(iterations=6, **kw).fit(ddf)
    # a fit that stopped after its 4th iteration (the checkpoint at 4 is committed) ...
    ALSRecommender(iterations=4, checkpoint=tmp_path / "ck", checkpoint_every=2, **kw).fit(ddf)
    state = _als.latest(tmp_path / "ck")
    assert state["iteration"] == 4 and len(state["files"]) == 6
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["iter-000004", "latest.json"]
    # ... resumed to 6 iterations: the same factors and the same loss history as the whole fit
    resumed = ALSRecommender(iterations=6, **kw).fit(ddf, resume=tmp_path / "ck")
    assert resumed.resumed_from_ == 4
    np.testing.assert_array_equal(resumed.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(resumed.item_factors_, whole.item_factors_)
    np.testing.assert_allclose(resumed.loss_history_, whole.loss_history_, rtol=1e-12)
    # another fit's checkpoint is refused, with what differs
    with pytest.raises(ParameterError, match="regularization|params"):
        ALSRecommender(iterations=6, **(kw | {"regularization": 0.2})).fit(ddf, resume=tmp_path / "ck")
    with pytest.raises(ParameterError, match="different fit"):
        ALSRecommender(iterations=6, **kw).fit(_interactions(seed=1), resume=tmp_path / "ck")
    with pytest.raises(ParameterError, match="no checkpoint there"):
        ALSRecommender(iterations=6, **kw).fit(ddf, resume=tmp_path / "nothing")
    # a tampered block is refused
    (tmp_path / "ck" / "iter-000006" / "user-00000.npy").write_bytes(b"x")
    with pytest.raises(ParameterError, match="sha256"):
        ALSRecommender(iterations=8, **kw).fit(ddf, resume=tmp_path / "ck")


def test_engine_auto_by_memory(monkeypatch):
    ddf = _interactions()
    assert ALSRecommender(iterations=1).fit(ddf).engine_ == "implicit"
    monkeypatch.setattr(_als, "AUTO_MEMORY_SHARE", 1e-12)
    assert ALSRecommender(iterations=1).fit(ddf).engine_ == "distributed"
    assert (
        _als.implicit_memory(10**8, 10**7, 10**10, 64) > 4 * 10**11
    )  # 100M users: ~400 GB, never one worker


def _client_rss_growth(client, ddf, **kw):
    """Peak growth of this process's RSS while fitting (sampled every 5 ms)."""
    import gc

    import psutil

    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        model = ALSRecommender(engine="distributed", **kw).fit(ddf, client=client)
    finally:
        done.set()
        t.join()
    return (peak[0] - base) / 2**20, model


def test_client_memory_does_not_grow_with_users(client, spread):
    kw = dict(factors=32, iterations=2, n_blocks=4)
    small = make_interactions(300_000, n_users=20_000, n_items=2_000, seed=0, npartitions=4)
    large = make_interactions(1_200_000, n_users=400_000, n_items=2_000, seed=0, npartitions=8)
    _client_rss_growth(client, small, **kw)  # warm-up: imports, compiled kernels, connections
    grow_small, _ = _client_rss_growth(client, small, **kw)
    with spread() as ts:
        grow_large, model = _client_rss_growth(client, large, **kw)
    ts.assert_spread(prefix="partial_products")
    print(f"client RSS growth: {grow_small:.1f} MiB (20k users), {grow_large:.1f} MiB (378k users)")
    assert model.user_blocks_.n_rows > 350_000  # distinct users drawn of 400k
    # 400k users x 32 float32 factors are 49 MiB per copy: a client that gathered one side's factors
    # (the old engine gathered and broadcast both every half-iteration) would grow by more than that
    assert grow_large < 15, (grow_small, grow_large)  # measured 3.0 MiB (2.4 at 20k users)
    assert grow_large < grow_small + 10, (grow_small, grow_large)


@pytest.mark.parametrize("confidence", ["linear", "bm25"])
def test_fold_in_of_a_cluster_model_reads_its_blocks_on_the_workers(client, spread, confidence):
    from daskml_scale.recommend import PopularityRecommender, recommend_new_users

    ddf = _interactions(npartitions=4)
    m = ALSRecommender(factors=6, iterations=3, engine="distributed", confidence=confidence, n_blocks=3)
    m.fit(ddf, client=client)
    rng = np.random.default_rng(1)
    new = pd.DataFrame({"user_id": 10**6 + rng.integers(0, 40, 400), "item_id": rng.integers(0, 95, 400)})
    new.loc[new["user_id"] == 10**6, "item_id"] = 10**5  # one user with only unknown items: fallback
    new = dd.from_pandas(new, npartitions=3)
    pop = PopularityRecommender().fit(ddf)
    with spread() as ts:
        got = recommend_new_users(m, new, n=7, fallback=pop).compute()
    ts.assert_spread(prefix="_fold_in_partition")
    assert "_local" not in m.__dict__  # the item side never came to this process
    # oracle: the same model in this process (its own fold-in: Gram matrix of the whole item side)
    want = recommend_new_users(m.to_local(), new, n=7, fallback=pop).compute()
    key = ["user_id", "rank"]
    got, want = got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["user_id", "item_id", "rank"]], want[["user_id", "item_id", "rank"]])
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5)
    assert got["user_id"].nunique() == 40 and (got.groupby("user_id").size() == 7).all()


def test_cluster_model_saves_without_credentials_and_folds_in(client, tmp_path):
    """Regressions: credentials were written into params.json, a Path checkpoint broke save, fold-in
    tasks received futures they could not gather, resume with engine='implicit' was ignored."""
    ddf = _interactions()
    m = ALSRecommender(
        factors=4,
        iterations=2,
        engine="distributed",
        checkpoint=tmp_path / "ck",
        storage_options={"key": "SECRET"},
    ).fit(ddf, client=client)
    new = pd.DataFrame({"user_id": [10**6] * 2, "item_id": [0, 1]})
    from daskml_scale.recommend import recommend_new_users

    assert len(recommend_new_users(m, new, n=5).compute()) == 5
    m.save(tmp_path / "m")
    assert "SECRET" not in (tmp_path / "m" / "params.json").read_text()
    assert "SECRET" not in (tmp_path / "m" / "manifest.json").read_text()
    with pytest.raises(ParameterError, match="needs engine='distributed'"):
        ALSRecommender(engine="implicit").fit(ddf, client=client, resume=tmp_path / "ck")


def test_cluster_model_saved_by_its_workers_and_loaded_by_block(client, spread, tmp_path):
    from daskml_scale.errors import ArtifactError
    from daskml_scale.recommend import load_model, recommend_all

    ddf = _interactions(npartitions=4)
    m = ALSRecommender(factors=4, iterations=2, engine="distributed", n_blocks=2).fit(ddf, client=client)
    with spread() as ts:
        m.save(tmp_path / "m")
    ts.assert_spread(prefix="_write_npy")  # each block written where it lives
    files = sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.npy"))
    assert files == [f"{s}_factors/part-0000{b}.npy" for s in ("item", "user") for b in (0, 1)]
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.user_blocks_.factors[0], np.memmap)  # mapped block by block
    np.testing.assert_array_equal(loaded.user_factors_, m.user_factors_)
    np.testing.assert_array_equal(loaded.item_ids_, m.item_ids_)
    a = recommend_all(m, n=3, exclude_seen=ddf).compute().reset_index(drop=True)
    b = recommend_all(loaded, n=3, exclude_seen=ddf, client=client).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    (tmp_path / "m" / "user_factors" / "part-00001.npy").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_model(tmp_path / "m")


def test_similar_items_of_a_cluster_model_from_its_blocks(client, spread):
    from daskml_scale.recommend import similar_items

    ddf = _interactions(npartitions=4)
    m = ALSRecommender(factors=6, iterations=2, engine="distributed", n_blocks=2).fit(ddf, client=client)
    with spread() as ts:
        got = similar_items(m, n=4).compute()
    ts.assert_spread(prefix="_similar_block")
    # a list of query items: answered on a worker
    queries = m.item_blocks_.ids[1].result()[:5]
    got_q = similar_items(m, queries, n=4)
    with pytest.raises(SchemaError, match="not in the model"):
        similar_items(m, [10**9], n=4)
    assert "_local" not in m.__dict__  # the item side never came to this process
    local = similar_items(m.to_local(), n=4).compute()  # the in-process path on the same factors
    pd.testing.assert_frame_equal(got_q, similar_items(m.to_local(), queries, n=4))
    key = ["item_id", "rank"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True)
    )
    assert len(got) == 4 * m.item_blocks_.n_rows


def test_ann_similar_items_of_a_cluster_model_from_its_blocks(client, spread):
    pytest.importorskip("faiss")
    from daskml_scale.recommend import similar_items

    ddf = _interactions(npartitions=4, users=400, items=300, rows=20_000)
    m = ALSRecommender(factors=8, iterations=3, engine="distributed", n_blocks=2).fit(ddf, client=client)
    with spread() as ts:
        approx = similar_items(m, n=5, method="ann").compute()
    ts.assert_spread(prefix="ann-similar-items")
    queries = approx["item_id"].unique()[:4]
    q = similar_items(m, queries, n=5, method="ann")
    assert "_local" not in m.__dict__  # the item side never came to this process
    exact = similar_items(m.to_local(), n=5).compute()
    merged = approx.merge(exact, on=["item_id", "similar_item_id"])
    assert len(approx) == len(exact) == 5 * m.item_blocks_.n_rows
    assert len(merged) / len(exact) > 0.95  # recall@5 of HNSW on 300 items (measured 1.0)
    # scores of the pairs found are exact cosines
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], rtol=1e-5)
    assert sorted(q["item_id"].unique()) == sorted(queries) and (q.groupby("item_id").size() == 5).all()
    assert len(q.merge(exact, on=["item_id", "similar_item_id"])) >= 0.95 * len(q)


def test_auto_blocks_bounded_by_worker_memory(client, monkeypatch):
    ddf = _interactions(npartitions=4)  # 12,000 rows
    runner = Runner(client)
    assert _sizing.auto_blocks(runner, ddf) == 2  # one per worker thread
    # a block may hold 12,000 rows x 1 MiB / 8 of a worker's memory: 2 GiB workers in the suite
    monkeypatch.setattr(_sizing, "BLOCK_ROW_BYTES", 2**20)
    limit = _sizing.smallest_worker_memory(runner)
    expected = -(-12_000 // int(limit / 8 / 2**20))
    got = _sizing.auto_blocks(runner, ddf)
    assert got >= expected and got % 2 == 0 and got - expected < 2
    m = ALSRecommender(iterations=1, engine="distributed").fit(ddf, client=client)
    assert m.user_blocks_.n_blocks == got and m.item_blocks_.n_blocks == got


def test_fit_holds_no_raw_or_confidence_blocks_while_it_iterates(client, tmp_path):
    # during the iterations the workers hold factors, pieces and ids: the factorize's raw blocks and
    # the confidence blocks the pieces were cut from are released (a loop variable once kept both,
    # 246 MiB a worker at 9.4M users)
    ddf = _interactions()
    ck = tmp_path / "ck"
    held = []

    def names(dask_scheduler):
        return sorted({str(k).split("-")[0] for k, ts in dask_scheduler.tasks.items() if ts.state == "memory"})

    t = on_checkpoint(ck, 2, lambda state: held.append(client.run_on_scheduler(names)))
    kw = dict(factors=6, engine="distributed", n_blocks=2, iterations=30, checkpoint=ck, checkpoint_every=1)
    model = ALSRecommender(**kw).fit(ddf, client=client)
    t.join()
    assert model.half_steps_ == {"users": "gather", "items": "partial"}
    held = set(held[0])
    assert {"whole_piece", "split_pieces", "solve_gathered"} <= held, held  # the fit was running
    setup = {"confidence_block", "_user_block", "_item_block", "_user_side", "_item_side"}
    assert not held & setup, held


def test_fit_restarts_from_checkpoint_when_an_attempt_fails(client, tmp_path):
    """The restart path itself: the running fit's iteration tasks are cancelled (for every client,
    as when their data is lost for good) after its 3rd checkpoint; the attempt fails with a
    cancelled future, and the fit factorizes the input again and continues from the checkpoint."""
    from distributed import Future

    ddf = _interactions()
    kw = dict(factors=6, regularization=0.1, engine="distributed", n_blocks=2, iterations=30)
    ck = tmp_path / "ck"
    cancelled = []

    def iteration_keys(dask_scheduler):
        stages = ("cg_", "solve_gathered", "partial_products", "gram", "n_nonfinite", "write_block")
        return [str(k) for k, ts in dask_scheduler.tasks.items()
                if ts.state in ("memory", "processing", "waiting", "queued")
                and any(s in str(k) for s in stages)]  # fmt: skip

    def cancel(state):
        keys = client.run_on_scheduler(iteration_keys)
        client.cancel([Future(k, client) for k in keys], force=True)
        cancelled.append((state["iteration"], len(keys)))

    t = on_checkpoint(ck, 3, cancel)
    model = ALSRecommender(checkpoint=ck, checkpoint_every=1, **kw).fit(ddf, client=client)
    t.join()
    assert cancelled and cancelled[0][1] > 0 and cancelled[0][0] < 30, cancelled
    assert 3 <= model.resumed_from_ <= cancelled[0][0] + 1, (model.resumed_from_, cancelled)
    assert len(model.iteration_times_) == 30
    whole = ALSRecommender(**kw).fit(ddf, client=client)
    np.testing.assert_array_equal(model.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(model.item_factors_, whole.item_factors_)
