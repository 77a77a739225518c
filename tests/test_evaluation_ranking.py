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
    for u, rel in relevant.items():
        hit_ranks = sorted(r for i, r in best_rank.get(u, {}).items() if i in rel)
        m = min(k, len(rel))
        totals["precision"] += len(hit_ranks) / k
        totals["recall"] += len(hit_ranks) / len(rel)
        dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, m + 1))
        totals["ndcg"] += dcg / idcg
        totals["map"] += sum((j + 1) / r for j, r in enumerate(hit_ranks)) / m
        totals["hit_rate"] += 1.0 if hit_ranks else 0.0
        totals["mrr"] += 1 / hit_ranks[0] if hit_ranks else 0.0
    n = len(relevant)
    out = {f"{key}@{k}": v / n for key, v in totals.items()}
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
        for col in ("precision", "recall", "ndcg", "map", "hit_rate", "mrr"):
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


def test_distributed_equals_oracle(client):
    recs, truth = make_case(seed=6)
    r, t = dd.from_pandas(recs, npartitions=5), dd.from_pandas(truth, npartitions=3)
    _check(ranking_metrics(r, t, k=10, client=client), oracle(recs, truth, 10))
