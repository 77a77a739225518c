"""Ranking metrics against an independent, straightforward implementation of the definitions."""

from __future__ import annotations

import math
from collections import defaultdict

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale import compute
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.evaluation import ranking_metrics, ranking_metrics_at

TOL = 1e-9


def oracle(recs: pd.DataFrame, truth: pd.DataFrame, k: int, catalog: int | None = None) -> dict:
    """The issue's definitions, written plainly with Python sets and loops."""
    relevant = defaultdict(set)
    for u, i in zip(truth["user_id"], truth["item_id"]):
        relevant[u].add(i)
    best_rank = defaultdict(dict)  # user -> item -> best rank within k
    for u, i, r in zip(recs["user_id"], recs["item_id"], recs["rank"]):
        if r <= k and r < best_rank[u].get(i, math.inf):
            best_rank[u][i] = r
    totals = dict.fromkeys(("precision", "recall", "ndcg", "map", "hit_rate", "mrr"), 0.0)
    pooled_hits = pooled_div = 0  # implicit's precision: a ratio of sums over the users
    for u, rel in relevant.items():
        hit_ranks = sorted(r for i, r in best_rank.get(u, {}).items() if i in rel)
        m = min(k, len(rel))
        totals["precision"] += len(hit_ranks) / k
        pooled_hits += len(hit_ranks)
        pooled_div += m
        totals["recall"] += len(hit_ranks) / len(rel)
        dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, m + 1))
        totals["ndcg"] += dcg / idcg
        totals["map"] += sum((j + 1) / r for j, r in enumerate(hit_ranks)) / m
        totals["hit_rate"] += 1.0 if hit_ranks else 0.0
        totals["mrr"] += 1 / hit_ranks[0] if hit_ranks else 0.0
    n = len(relevant)
    out = {f"{key}@{k}": v / n for key, v in totals.items()}
    out[f"precision_capped@{k}"] = pooled_hits / pooled_div
    recommended = {i for items in best_rank.values() for i in items}
    if catalog is None:
        catalog = len(
            set(truth["item_id"]) | set(recs["item_id"][recs["rank"] <= max(k, recs["rank"].max())])
        )
    out[f"coverage@{k}"] = len(recommended) / catalog
    out["n_users"] = n
    return out


def make_case(seed=0, n_items=40):
    """Truth users 0..59, recs users 20..89: truth users without recs and recs users without truth;
    lists of 1..12 items (k may exceed them); a few duplicate recommendations at later ranks."""
    rng = np.random.default_rng(seed)
    truth_rows, rec_rows = [], []
    for u in range(60):
        for i in rng.choice(n_items, rng.integers(1, 9), replace=False):
            truth_rows.append((u, int(i)))
    truth_rows += truth_rows[:5]  # duplicate truth rows count once
    for u in range(20, 90):
        n = int(rng.integers(1, 13))
        items = rng.choice(n_items + 15, n, replace=False)  # some items never relevant
        for r, i in enumerate(items, start=1):
            rec_rows.append((u, int(i), float(rng.random()), r))
        if rng.random() < 0.3:  # the best item again, lower down
            rec_rows.append((u, int(items[0]), 0.0, n + 1))
    recs = pd.DataFrame(rec_rows, columns=["user_id", "item_id", "score", "rank"])
    truth = pd.DataFrame(truth_rows, columns=["user_id", "item_id"])
    return recs.sample(frac=1, random_state=seed).reset_index(drop=True), truth


def _check(got, want):
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=TOL), key


@pytest.mark.parametrize("k", [1, 3, 10, 30])
def test_in_memory_equals_oracle(k):
    recs, truth = make_case(seed=k)
    _check(ranking_metrics(recs, truth, k=k), oracle(recs, truth, k))


@pytest.mark.parametrize("nparts", [(1, 1), (7, 3), (13, 20)])
def test_dask_many_partitions_equals_oracle(nparts):
    recs, truth = make_case(seed=sum(nparts))
    r = dd.from_pandas(recs, npartitions=nparts[0])
    t = dd.from_pandas(truth, npartitions=nparts[1])
    for k in (5, 20):
        _check(ranking_metrics(r, t, k=k, catalog=50), oracle(recs, truth, k, catalog=50))


def test_metrics_at_several_k_in_one_pass():
    recs, truth = make_case(seed=3)
    at = ranking_metrics_at(dd.from_pandas(recs, npartitions=4), truth, ks=[10, 1, 5])
    assert list(at.index) == [1, 5, 10]
    for k in (1, 5, 10):
        want = oracle(recs, truth, k)
        for col in ("precision", "recall", "ndcg", "map", "hit_rate", "mrr", "precision_capped"):
            assert at.loc[k, col] == pytest.approx(want[f"{col}@{k}"], abs=TOL)


def test_string_ids_and_mixed_int_widths():
    recs, truth = make_case(seed=4)
    want = oracle(recs, truth, 10)
    srecs = recs.assign(user_id="u" + recs["user_id"].astype(str), item_id="i" + recs["item_id"].astype(str))
    struth = truth.assign(
        user_id="u" + truth["user_id"].astype(str), item_id="i" + truth["item_id"].astype(str)
    )
    _check(ranking_metrics(dd.from_pandas(srecs, npartitions=3), dd.from_pandas(struth, npartitions=2)), want)
    narrow = truth.astype({"user_id": "int32"})
    _check(ranking_metrics(dd.from_pandas(recs, npartitions=3), dd.from_pandas(narrow, npartitions=2)), want)


def test_user_without_recs_scores_zero_and_foreign_recs_are_ignored():
    truth = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20]})
    recs = pd.DataFrame({"user_id": [1, 3], "item_id": [10, 30], "rank": [1, 1]})
    m = ranking_metrics(recs, truth, k=1)
    assert m["precision@1"] == 0.5 and m["ndcg@1"] == 0.5 and m["n_users"] == 2
    assert m["coverage@1"] == pytest.approx(2 / 3)  # items 10 and 30 of {10, 20, 30}


def test_compute_false_and_bad_inputs():
    recs, truth = make_case(seed=5)
    r, t = dd.from_pandas(recs, npartitions=3), dd.from_pandas(truth, npartitions=2)
    lazy = ranking_metrics(r, t, k=5, compute=False)
    assert dask.is_dask_collection(lazy)
    (got,) = compute(lazy)
    _check(got, oracle(recs, truth, 5))
    with pytest.raises(SchemaError, match=r"recs lacks column\(s\) \['rank'\]"):
        ranking_metrics(recs.drop(columns="rank"), truth)
    with pytest.raises(SchemaError, match=r"truth lacks column\(s\) \['item_id'\]"):
        ranking_metrics(recs, truth.rename(columns={"item_id": "movie"}))
    with pytest.raises(ParameterError, match="k must be a positive integer"):
        ranking_metrics(recs, truth, k=0)
    bad = recs.assign(rank=recs["rank"].astype(float))
    bad.loc[:2, "rank"] = np.nan
    with pytest.raises(SchemaError, match="3 missing or < 1"):
        ranking_metrics(dd.from_pandas(bad, npartitions=2), t)
    with pytest.raises(SchemaError, match="same kind of ids"):
        ranking_metrics(recs, truth.assign(user_id=truth["user_id"].astype(str)))


def oracle_popularity(recs, train, k):
    users_of = defaultdict(set)
    for u, i in zip(train["user_id"], train["item_id"]):
        users_of[i].add(u)
    n_users = len(set(train["user_id"]))
    seen, surprise, share = set(), [], []
    for u, i, r in sorted(zip(recs["user_id"], recs["item_id"], recs["rank"]), key=lambda t: (t[0], t[2])):
        if r <= k and (u, i) not in seen:
            seen.add((u, i))
            p = len(users_of.get(i, ())) / n_users
            surprise.append(-math.log2(max(p, 1 / n_users)))
            share.append(p)
    return {f"novelty@{k}": sum(surprise) / len(surprise), f"popularity_bias@{k}": sum(share) / len(share)}


@pytest.mark.parametrize("lazy", [False, True])
def test_novelty_and_popularity_bias_equal_oracle(lazy):
    recs, truth = make_case(seed=8)
    rng = np.random.default_rng(8)
    train = pd.DataFrame({"user_id": rng.integers(0, 90, 800), "item_id": rng.integers(0, 45, 800)})
    if lazy:
        recs, train = dd.from_pandas(recs, npartitions=4), dd.from_pandas(train, npartitions=3)
    got = ranking_metrics(recs, truth, k=5, train=train)
    want = oracle(compute(recs)[0], truth, 5) | oracle_popularity(compute(recs)[0], compute(train)[0], 5)
    _check(got, want)


def test_distributed_equals_oracle(client, spread):
    recs, truth = make_case(seed=6)
    r, t = dd.from_pandas(recs, npartitions=5), dd.from_pandas(truth, npartitions=3)
    with spread() as ts:
        got = ranking_metrics(r, t, k=10, client=client)
    _check(got, oracle(recs, truth, 10))
    ts.assert_spread(prefix="_rank_sums")  # the per-user pass ran on both workers
    # the rule checks run in those tasks too; their error arrives from a worker, counts summed
    bad = recs.copy()
    first = bad.groupby("user_id")["rank"].idxmin()  # every user's rank-1 row
    bad.loc[first.iloc[:7], "rank"] = 2  # 7 users now have rank 2 twice
    with spread() as ts, pytest.raises(SchemaError, match=r"14 row\(s\) of 7 user\(s\)") as err:
        ranking_metrics(dd.from_pandas(bad, npartitions=5), t, k=10, client=client)
    assert err.value.column == "rank"
    ts.assert_spread(prefix="_rank_sums")


# ----------------------------------------------------------- issue 11, defect 5: refused ranks and ids
def _lists(users=range(6), n=4):
    """Users 0..5 with items u*10 + 1..n at ranks 1..n; truth: items u*10 + 1 and u*10 + 3."""
    recs = pd.DataFrame(
        [(u, u * 10 + r, float(r)) for u in users for r in range(1, n + 1)],
        columns=["user_id", "item_id", "rank"],
    )
    truth = pd.DataFrame([(u, u * 10 + i) for u in users for i in (1, 3)], columns=["user_id", "item_id"])
    return recs, truth


def _both_ways(recs, truth, **kw):
    """In memory, and on Dask with several partitions each (the check runs partition by partition)."""
    yield lambda: ranking_metrics(recs, truth, **kw)
    yield lambda: ranking_metrics(
        dd.from_pandas(recs, npartitions=3), dd.from_pandas(truth, npartitions=2), **kw
    )
    yield lambda: ranking_metrics_at(dd.from_pandas(recs, npartitions=4), truth, ks=(1, kw.get("k", 10)))


def test_duplicate_ranks_are_refused():
    recs, truth = _lists()
    # user 2: three items at rank 1 (the case: precision@1 3.0); user 4: rank 2 twice
    recs.loc[(recs["user_id"] == 2) & (recs["rank"] <= 3), "rank"] = 1.0
    recs.loc[(recs["user_id"] == 4) & (recs["rank"] == 3), "rank"] = 2.0
    msg = r"'rank' column repeats a rank for the same user: {} row\(s\) of {} user\(s\)"
    for run in _both_ways(recs, truth, k=3):
        with pytest.raises(SchemaError, match=msg.format(5, 2)):
            run()
    for run in _both_ways(recs, truth, k=1):  # rows of rank <= k are read per user: user 2's
        with pytest.raises(SchemaError, match=msg.format(3, 1)):
            run()
    # a repeated rank beyond every cut-off asked for is not read (only the top k travel)
    ok = ranking_metrics(recs[recs["user_id"] != 2], truth, k=1)
    assert ok["precision@1"] == pytest.approx(5 / 6)  # all but user 2 (no recs left) hit at rank 1
    # the same item twice at different ranks is allowed (counts once, at its best rank)
    again = pd.concat([_lists()[0], pd.DataFrame({"user_id": [0], "item_id": [1], "rank": [5.0]})])
    assert ranking_metrics(again, truth, k=5)["precision@5"] == pytest.approx(2 / 5)


def test_fractional_ranks_are_refused():
    recs, truth = _lists()
    recs.loc[[0, 5], "rank"] = [1.5, 2.25]  # users 0 and 1
    recs.loc[22, "rank"] = 40.5  # user 5, beyond k: still refused (the rule holds for every row)
    for run in _both_ways(recs, truth, k=2):
        with pytest.raises(SchemaError, match=r"'rank' column has 3 non-integer value\(s\) for 3 user"):
            run()
    recs, truth = _lists()
    recs.loc[3, "rank"] = np.inf
    with pytest.raises(SchemaError, match=r"1 non-integer value"):
        ranking_metrics(recs, truth, k=2)
    integral = _lists()[0]
    assert ranking_metrics(integral, truth, k=2) == ranking_metrics(
        integral.astype({"rank": int}), truth, k=2
    )


@pytest.mark.parametrize("where", ["recs", "truth", "both"])
def test_fractional_user_ids_are_refused(where):
    recs, truth = _lists()
    if where in ("recs", "both"):
        recs["user_id"] = recs["user_id"].astype(float)
        recs.loc[recs["user_id"] == 1, "user_id"] = 1.7  # would be truncated to 1 and match user 1
    if where in ("truth", "both"):
        truth["user_id"] = truth["user_id"].astype(float)
        truth.loc[truth["user_id"] == 3, "user_id"] = 3.5
    n = {"recs": (4, 1), "truth": (2, 1), "both": (6, 2)}[where]
    msg = rf"'user_id' column has {n[0]} fractional value\(s\) \({n[1]} distinct user id"
    for run in _both_ways(recs, truth, k=2):
        with pytest.raises(SchemaError, match=msg):
            run()


def test_integral_float_user_ids_match_integer_ids():
    recs, truth = make_case(seed=9)
    want = oracle(recs, truth, 5)
    f_recs = recs.astype({"user_id": float})
    _check(ranking_metrics(f_recs, truth, k=5), want)
    _check(
        ranking_metrics(dd.from_pandas(f_recs, npartitions=3), dd.from_pandas(truth, npartitions=2), k=5),
        want,
    )
    _check(ranking_metrics(recs, truth.astype({"user_id": "float32"}), k=5), want)


# ------------------------------------------- issue 11, defect 7: implicit's precision, under its own name
def _implicit_case(seed=0, n_users=60, n_items=40, K=5):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(seed)
    liked = rng.random((n_users, n_items)) < 0.2
    test = np.zeros_like(liked)
    for u in range(n_users):
        items = np.flatnonzero(liked[u])
        n_test = int(rng.integers(0, min(8, len(items)) + 1))  # 0..7 test items: some fewer than K
        test[u, rng.choice(items, n_test, replace=False)] = True
    train = sp.csr_matrix((liked & ~test).astype(np.float32))
    test = sp.csr_matrix(test.astype(np.float32))
    model = AlternatingLeastSquares(factors=4, iterations=2, random_state=seed)
    model.fit(train, show_progress=False)
    users = np.arange(n_users)
    ids, scores = model.recommend(users, train[users], N=K)  # what implicit's evaluation asks for
    assert (ids >= 0).all()
    recs = pd.DataFrame(
        {
            "user_id": np.repeat(users, K),
            "item_id": ids.ravel(),
            "rank": np.tile(np.arange(1, K + 1), n_users),
        }
    )
    tu, ti = test.nonzero()
    truth = pd.DataFrame({"user_id": tu, "item_id": ti})
    return model, train, test, recs, truth


@pytest.mark.parametrize("K", [3, 5, 10])
def test_precision_capped_equals_implicit(K):
    from implicit.evaluation import precision_at_k as implicit_precision_at_k

    model, train, test, recs, truth = _implicit_case(seed=K, K=K)
    want = implicit_precision_at_k(model, train, test, K=K, show_progress=False)
    got = ranking_metrics(recs, truth, k=K)
    assert got[f"precision_capped@{K}"] == pytest.approx(want, abs=TOL)
    lazy = ranking_metrics(dd.from_pandas(recs, npartitions=4), dd.from_pandas(truth, npartitions=3), k=K)
    assert lazy[f"precision_capped@{K}"] == pytest.approx(want, abs=TOL)
    at = ranking_metrics_at(recs, truth, ks=(1, K))
    assert at.loc[K, "precision_capped"] == pytest.approx(want, abs=TOL)
    # ours divides every user's hits by k: a different number whenever a user has fewer than k items
    assert (np.bincount(truth["user_id"]) < K).any()
    assert got[f"precision@{K}"] == pytest.approx(oracle(recs, truth, K)[f"precision@{K}"], abs=TOL)
    assert got[f"precision@{K}"] < want
