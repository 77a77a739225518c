"""Interactions to model matrix: id maps, duplicates, confidence weighting, blocks."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight

from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.recommend import ALSRecommender, PopularityRecommender
from daskml_scale.recommend._matrix import (
    apply_confidence,
    block_bounds,
    bm25_factors,
    bm25_stats_rows,
    build_block,
    build_id_maps,
    check_interactions,
    index_partition,
    split_pieces,
)


def _frame(n=400, n_users=30, n_items=20, seed=0, string_ids=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n) * 7 + 3,
            "item_id": rng.integers(0, n_items, n) * 11 + 5,
            "weight": rng.integers(1, 4, n).astype("float64"),
        }
    )
    if string_ids:
        df["user_id"] = "u" + df["user_id"].astype(str)
        df["item_id"] = "i" + df["item_id"].astype(str)
    return df


def _dense_oracle(df, users, items):
    """pandas: summed weights per (user, item) as a dense matrix."""
    agg = df.groupby(["user_id", "item_id"])["weight"].sum()
    m = np.zeros((len(users), len(items)), dtype=np.float32)
    ui = pd.Index(users).get_indexer(agg.index.get_level_values(0))
    ii = pd.Index(items).get_indexer(agg.index.get_level_values(1))
    m[ui, ii] = agg.to_numpy()
    return m


@pytest.mark.parametrize("string_ids", [False, True])
def test_id_maps_sorted_distinct(string_ids):
    df = _frame(string_ids=string_ids)
    ddf = check_interactions(dd.from_pandas(df, npartitions=4), "t")
    users, items = build_id_maps(ddf, owner="t")
    assert users.tolist() == sorted(df["user_id"].unique().tolist())
    assert items.tolist() == sorted(df["item_id"].unique().tolist())


def test_blocks_sum_duplicates_and_match_pandas():
    df = _frame()
    ddf = check_interactions(dd.from_pandas(df, npartitions=3), "t")
    users, items = build_id_maps(ddf, owner="t")
    coo = [index_partition(p.compute(), users, items) for p in ddf.to_delayed()]
    bounds = block_bounds(len(users), 4)
    blocks = [build_block([split_pieces(c, bounds, by="row")[b] for c in coo], bounds[b + 1] - bounds[b],
                          len(items)) for b in range(4)]  # fmt: skip
    whole = sp.vstack(blocks).toarray()
    np.testing.assert_allclose(whole, _dense_oracle(df, users, items))
    ib = block_bounds(len(items), 3)
    iblocks = [build_block([split_pieces(c, ib, by="col")[b] for c in coo], ib[b + 1] - ib[b],
                           len(users)) for b in range(3)]  # fmt: skip
    np.testing.assert_allclose(sp.vstack(iblocks).toarray(), whole.T)


def test_split_with_empty_partition_and_more_blocks_than_rows():
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    bounds = block_bounds(3, 10)
    assert len(bounds) == 4  # capped at one row per block
    pieces = split_pieces(empty, bounds, by="row")
    assert len(pieces) == 3 and all(len(p[0]) == 0 for p in pieces)
    assert build_block(list(pieces), 1, 5).nnz == 0


def test_unknown_ids_dropped_by_index_partition():
    users, items = np.array([1, 2]), np.array([10])
    df = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [10, 11, 10]})
    r, c, w = index_partition(df, users, items)
    assert r.tolist() == [0] and c.tolist() == [0] and w.tolist() == [1.0]


def test_confidence_linear_log():
    m = sp.csr_matrix(np.array([[0, 2.0], [3.0, 0]], dtype=np.float32))
    np.testing.assert_allclose(apply_confidence(m, confidence="linear", alpha=4.0).toarray(), 4 * m.toarray())
    np.testing.assert_allclose(
        apply_confidence(m, confidence="log", alpha=2.0).toarray(), 2 * np.log1p(m.toarray()), rtol=1e-6
    )


def test_confidence_bm25_matches_implicit_from_block_stats():
    """Oracle: implicit's bm25_weight on the items x users matrix, transposed back."""
    rng = np.random.default_rng(1)
    dense = (rng.random((40, 25)) < 0.2) * rng.integers(1, 5, (40, 25))
    C = sp.csr_matrix(dense.astype(np.float32))  # users x items
    expected = bm25_weight(C.T.tocsr(), K1=100, B=0.8).T.toarray()
    ub, ib = block_bounds(40, 3), block_bounds(25, 2)
    user_blocks = [C[ub[b] : ub[b + 1]] for b in range(3)]
    item_blocks = [C.T.tocsr()[ib[b] : ib[b + 1]] for b in range(2)]
    nnz = np.concatenate([bm25_stats_rows(b)[0] for b in user_blocks])
    sums = np.concatenate([bm25_stats_rows(b)[1] for b in item_blocks])
    f = bm25_factors(nnz, sums, 100.0, 0.8)
    got_u = sp.vstack([apply_confidence(b, confidence="bm25", alpha=1.0, offset=ub[i], bm25=f)
                       for i, b in enumerate(user_blocks)]).toarray()  # fmt: skip
    got_i = sp.vstack([apply_confidence(b, confidence="bm25", alpha=1.0, offset=ib[i], bm25=f,
                                        orientation="item") for i, b in enumerate(item_blocks)])  # fmt: skip
    np.testing.assert_allclose(got_u, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_i.T.toarray(), expected, rtol=1e-5, atol=1e-6)


def test_missing_column_names_it():
    with pytest.raises(SchemaError, match="no 'item_id' column.*Rename"):
        ALSRecommender().fit(pd.DataFrame({"user_id": [1], "movieId": [2]}))


def test_nan_ids_refused_with_count():
    df = pd.DataFrame({"user_id": [1.0, np.nan, np.nan], "item_id": [1, 2, 3]})
    with pytest.raises(SchemaError, match="2 row\\(s\\) have a missing 'user_id'"):
        ALSRecommender(iterations=1).fit(df)


def _bad_weight_frame():
    """30 good rows, then 2 NaN, 1 +inf, 1 -inf and 3 negative weights (and a zero, which is fine)."""
    df = _frame(n=38)
    df["weight"] = np.r_[np.ones(30), [0.0, np.nan, np.nan, np.inf, -np.inf, -1.0, -0.5, -3.0]]
    return df


def test_bad_weights_refused_with_counts_by_both_engines():
    """Both engines (and the popularity baseline) share the check: one message, every kind counted."""
    ddf = dd.from_pandas(_bad_weight_frame(), npartitions=3)
    rule = (
        r"ALSRecommender: column 'weight' must hold finite values >= 0; 7 row\(s\) break that rule "
        r"\(NaN: 2, \+inf: 1, -inf: 1, negative: 3\)\. Drop or fix them"
    )
    messages = []
    for engine in ("implicit", "distributed"):
        with pytest.raises(SchemaError, match=rule) as err:
            ALSRecommender(engine=engine, iterations=1).fit(ddf)
        assert err.value.column == "weight"
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    with pytest.raises(SchemaError, match="PopularityRecommender: column 'weight' must hold finite"):
        PopularityRecommender(by="weight").fit(ddf)


@pytest.mark.parametrize(
    ("bad", "kind"), [(np.inf, "\\+inf: 1"), (-np.inf, "-inf: 1"), (-0.25, "negative: 1")]
)
@pytest.mark.parametrize("engine", ["implicit", "distributed"])
def test_each_kind_of_bad_weight_refused(engine, bad, kind):
    df = _frame(n=50)
    df.loc[7, "weight"] = bad
    with pytest.raises(SchemaError, match=f"1 row\\(s\\) break that rule \\(.*{kind}"):
        ALSRecommender(engine=engine, iterations=1).fit(dd.from_pandas(df, npartitions=2))


def test_zero_weights_accepted():
    df = _frame(n=50)
    df.loc[:9, "weight"] = 0.0
    model = ALSRecommender(engine="distributed", factors=2, iterations=1).fit(df)
    assert np.isfinite(model.user_factors_).all()


def test_non_numeric_weight_refused():
    df = pd.DataFrame({"user_id": [1], "item_id": [1], "weight": ["a"]})
    with pytest.raises(SchemaError, match="'weight' must be numeric"):
        ALSRecommender(iterations=1).fit(df)


def test_empty_interactions_refused():
    df = pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "item_id": pd.Series([], dtype="int64")})
    with pytest.raises(SchemaError, match="empty"):
        ALSRecommender(iterations=1).fit(df)


def test_not_a_dataframe_refused():
    with pytest.raises(SchemaError, match="expects a Dask or pandas DataFrame"):
        ALSRecommender().fit(np.zeros((3, 2)))


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("confidence", "sqrt", "'confidence' parameter"),
        ("alpha", 0.0, "'alpha' parameter"),
        ("engine", "spark", "'engine' parameter"),
        ("factors", 0, "'factors' parameter .* int >= 1"),
        ("regularization", -1.0, "'regularization'"),
        ("device", "tpu", "'device' parameter"),
        ("n_blocks", 0, "'n_blocks'"),
    ],
)
def test_bad_params(param, value, match):
    with pytest.raises(ParameterError, match=match):
        ALSRecommender(**{param: value}).fit(_frame())


def test_cuda_with_distributed_engine_refused():
    with pytest.raises(ParameterError, match="engine='implicit' only"):
        ALSRecommender(engine="distributed", device="cuda").fit(_frame())
