"""Exact top-k ranking metrics on long-format tables, computed per user inside partitions.

Recommendations (user, item, score, rank 1..n) and truth (user, item) are co-partitioned by user with
one shuffle each (same hash, same number of partitions), then every partition computes its users'
metrics with pandas and returns a handful of sums; the sums are added in a tree reduction. Only the
per-item minimum rank (for catalog coverage, bounded by the catalog size) travels beyond that.

Definitions, for each user u present in the truth, T_u its distinct truth items, and hits the
distinct recommended items of rank <= k that are in T_u:

* precision@k = |hits| / k;  recall@k = |hits| / |T_u|;  hit_rate@k = 1 if any hit
* precision_capped@k = (sum over users of |hits|) / (sum over users of min(k, |T_u|)): implicit's
  ``precision_at_k``, pooled over the users (a ratio of sums, not a mean of per-user values)
* NDCG@k = sum over hits of 1/log2(rank+1), divided by sum over r = 1..min(k, |T_u|) of 1/log2(r+1)
* AP@k = (sum over hit ranks r <= k of (hits at rank <= r) / r) / min(k, |T_u|)
* MRR@k = 1 / rank of the first hit (0 without a hit within k)

MAP@k, mean NDCG@k etc. are means over the users of the truth; a user with no recommendations
scores 0. Recommendations of users absent from the truth do not enter those means, but count for
catalog coverage@k = distinct items recommended at rank <= k / catalog size. A (user, item) pair
recommended twice counts once, at its best rank.

Rules checked on the way (counts summed across partitions, :class:`SchemaError` on the client):
ranks are whole numbers >= 1 on every row; no user has the same rank twice among the rows of rank
<= k (the largest k asked: only those rows are read per user); float user ids are whole numbers
(1.0 matches integer id 1, 1.7 is refused rather than truncated).
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
from dask import delayed

from ..errors import ParameterError, SchemaError
from ..schema import ITEM_ID, RANK, USER_ID

__all__ = ["ranking_metrics", "ranking_metrics_at"]

_PER_K = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr")  # means over truth users
_POOLED = ("hits", "capped_div")  # precision_capped@k = hits / capped_div (implicit's precision)
_NK = len(_PER_K) + len(_POOLED)  # sums per k
_POP = ("novelty", "popularity_bias", "rows")
# counts after the per-k and popularity sums, in this order
_TAIL = (
    "n_users",
    "bad_rank_rows",
    "bad_rank_users",
    "nonint_rank_rows",
    "nonint_rank_users",
    "dup_rank_rows",
    "dup_rank_users",
    "frac_user_rows",
    "frac_user_users",
)
_T = {name: i - len(_TAIL) for i, name in enumerate(_TAIL)}  # negative offsets into the sums


def _check_frame(df, name: str, cols: list[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{name} lacks column(s) {missing}; it has {list(df.columns)}. Pass the right names "
            "(user_col=, item_col=, rank_col=) or rename the columns.",
            column=missing[0],
        )


def _rank_sums(
    recs: pd.DataFrame, truth: pd.DataFrame, ks, user: str, item: str, rank: str, pop=None
) -> np.ndarray:
    """Per-partition sums: for each k the per-user metric sums and the pooled hit counts, then for
    each k the novelty, popularity and row sums (with ``pop``), then the counts in ``_TAIL`` (truth
    users and rows/users breaking a rule). Every user's rows are in this partition (co-partitioned
    by user), so per-user counts add up across partitions."""
    kmax = max(ks)
    nk = len(ks)
    out = np.zeros(nk * (_NK + len(_POP)) + len(_TAIL))
    r = pd.to_numeric(recs[rank], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    users = recs[user].to_numpy()
    bad = np.isnan(r) | (r < 1)
    nonint = ~bad & (~np.isfinite(r) | (r != np.floor(r)))
    out[_T["bad_rank_rows"]] = bad.sum()
    out[_T["bad_rank_users"]] = pd.unique(users[bad]).size
    out[_T["nonint_rank_rows"]] = nonint.sum()
    out[_T["nonint_rank_users"]] = pd.unique(users[nonint]).size
    rec = pd.DataFrame({user: users, item: recs[item].to_numpy(), "_r": r})
    rec = rec[~(bad | nonint) & (r <= kmax)]
    dup = (rec.duplicated([user, "_r"], keep=False) & rec[user].notna()).to_numpy()
    out[_T["dup_rank_rows"]] = dup.sum()
    out[_T["dup_rank_users"]] = pd.unique(rec[user].to_numpy()[dup]).size
    frac = [_fractional(df[user]) for df in (recs, truth)]
    out[_T["frac_user_rows"]] = sum(len(f) for f in frac)
    out[_T["frac_user_users"]] = pd.unique(np.concatenate(frac)).size
    rec = rec.sort_values([user, "_r"], kind="stable").drop_duplicates([user, item], keep="first")
    if pop is not None:
        share, n_pop_users = pop
        p = rec[item].map(share).to_numpy(dtype=float, na_value=0.0)
        surprise = -np.log2(np.maximum(p, 1.0 / n_pop_users))
        rr = rec["_r"].to_numpy()
        for j, k in enumerate(ks):
            sel = rr <= k
            base = nk * _NK + j * len(_POP)
            out[base : base + 3] = surprise[sel].sum(), p[sel].sum(), sel.sum()
    truth = truth[[user, item]].dropna().drop_duplicates()
    n_true = truth.groupby(user, sort=False).size()
    out[_T["n_users"]] = len(n_true)
    if len(n_true) == 0:
        return out
    for j, k in enumerate(ks):
        out[j * _NK + len(_PER_K) + 1] = np.minimum(n_true.to_numpy(), k).sum()
    hits = rec.merge(truth, on=[user, item], how="inner").sort_values([user, "_r"], kind="stable")
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    idcg_table = np.concatenate([[0.0], np.cumsum(discount)])
    for j, k in enumerate(ks):
        h = hits[hits["_r"] <= k]
        if len(h) == 0:
            continue
        g = h.groupby(user, sort=False)
        nth = g.cumcount().to_numpy() + 1
        rr = h["_r"].to_numpy()
        per = (
            pd.DataFrame(
                {
                    "n": 1.0,
                    "dcg": 1.0 / np.log2(rr + 1.0),
                    "ap": nth / rr,
                    "rr": np.where(nth == 1, 1.0 / rr, 0.0),
                    user: h[user].to_numpy(),
                }
            )
            .groupby(user, sort=False)[["n", "dcg", "ap", "rr"]]
            .sum()
        )
        nt = n_true.reindex(per.index).to_numpy().astype(float)
        m = np.minimum(nt, k)
        base = j * _NK
        out[base + len(_PER_K)] = per["n"].sum()  # hits, pooled
        out[base + 0] = per["n"].sum() / k
        out[base + 1] = np.sum(per["n"].to_numpy() / nt)
        out[base + 2] = np.sum(per["dcg"].to_numpy() / idcg_table[m.astype(int)])
        out[base + 3] = np.sum(per["ap"].to_numpy() / m)
        out[base + 4] = len(per)
        out[base + 5] = per["rr"].sum()
    return out


def _fractional(ids: pd.Series) -> np.ndarray:
    """The float ids of ``ids`` that are not whole numbers (NaN ids are missing, not fractional)."""
    if not pd.api.types.is_float_dtype(ids.dtype):
        return np.empty(0)
    v = ids.to_numpy(dtype=float, na_value=np.nan)
    return v[~np.isnan(v) & (~np.isfinite(v) | (v != np.floor(v)))]


def _item_min_rank(recs: pd.DataFrame, item: str, rank: str) -> pd.Series:
    """Best rank of every recommended item (bounded by the catalog size)."""
    r = pd.to_numeric(recs[rank], errors="coerce")
    return pd.Series(r.to_numpy(), index=recs[item].to_numpy()).groupby(level=0).min()


def _merge_min(*series):
    series = [s for s in series if len(s)]
    if not series:
        return pd.Series(dtype=float)
    return pd.concat(series).groupby(level=0).min()


def _items(df: pd.DataFrame, item: str) -> pd.Series:
    return pd.Series(1, index=pd.unique(df[item].dropna().to_numpy()))


def _merge_items(*series):
    series = [s for s in series if len(s)]
    if not series:
        return pd.Series(dtype=int)
    s = pd.concat(series)
    return s[~s.index.duplicated()]


def _add(*arrays):
    return np.sum(arrays, axis=0)


def _check_rules(sums, user: str, rank: str) -> None:
    """Raise :class:`SchemaError` for the first rule the (summed) counts show broken."""
    c = {name: int(sums[i]) for name, i in _T.items()}
    fix = "Recompute the ranks as each user's order of score, descending: 1, 2, 3, ..."
    if c["bad_rank_rows"]:
        raise SchemaError(
            f"The {rank!r} column has {c['bad_rank_rows']} missing or < 1 value(s) for "
            f"{c['bad_rank_users']} user(s): ranks must be integers 1..n per user. {fix}",
            column=rank,
        )
    if c["nonint_rank_rows"]:
        raise SchemaError(
            f"The {rank!r} column has {c['nonint_rank_rows']} non-integer value(s) for "
            f"{c['nonint_rank_users']} user(s): ranks must be whole numbers (1, 2, 3, ...), not "
            f"fractions or infinity. {fix}",
            column=rank,
        )
    if c["dup_rank_rows"]:
        raise SchemaError(
            f"The {rank!r} column repeats a rank for the same user: {c['dup_rank_rows']} row(s) of "
            f"{c['dup_rank_users']} user(s) share their rank with another row of that user (among "
            f"the rows of rank <= k): each user's ranks must be distinct. {fix} (ties broken by item "
            "id, e.g. groupby(user).cumcount() + 1 after sorting).",
            column=rank,
        )
    if c["frac_user_rows"]:
        raise SchemaError(
            f"The {user!r} column has {c['frac_user_rows']} fractional value(s) "
            f"({c['frac_user_users']} distinct user id(s)) in recs and truth: float user ids must be "
            "whole numbers (1.0 is user 1; 1.7 is no user and is not truncated). Fix the ids, or "
            "store them as integers or strings.",
            column=user,
        )


def _finalize(sums, min_rank, catalog_items, ks, catalog, with_pop=False, user=USER_ID, rank=RANK):
    _check_rules(sums, user, rank)
    n_users = sums[_T["n_users"]]
    if catalog is None:
        n_cat = len(catalog_items.index.union(min_rank.index)) if catalog_items is not None else len(min_rank)
    else:
        n_cat = catalog
    rows = {}
    for j, k in enumerate(ks):
        base = j * _NK
        row = {
            name: float(sums[base + i] / n_users) if n_users else float("nan")
            for i, name in enumerate(_PER_K)
        }
        hits, div = sums[base + len(_PER_K)], sums[base + len(_PER_K) + 1]
        row["precision_capped"] = float(hits / div) if div else float("nan")
        row["coverage"] = float((min_rank <= k).sum() / n_cat) if n_cat else float("nan")
        if with_pop:
            b = len(ks) * _NK + j * len(_POP)
            n_rows = sums[b + 2]
            row["novelty"] = float(sums[b] / n_rows) if n_rows else float("nan")
            row["popularity_bias"] = float(sums[b + 1] / n_rows) if n_rows else float("nan")
        rows[k] = row
    return rows, int(n_users)


def _common_dtype(recs, truth, user):
    """One dtype for the user column of both frames (so that the shuffles hash alike).

    Integers of any width become int64. When either side is float, both become float64, so that an
    integral float id (1.0) matches integer id 1 while a fractional one (1.7) matches nothing and is
    refused with its count in the per-user pass, instead of being truncated to 1.
    """
    a, b = recs[user].dtype, truth[user].dtype
    if a == b:
        return recs, truth
    num = pd.api.types.is_numeric_dtype
    if num(a) and num(b):
        flt = pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b)
        to = "float64" if flt else "int64"
        return recs.astype({user: to}), truth.astype({user: to})
    if not num(a) and not num(b):
        return recs.astype({user: "str"}), truth.astype({user: "str"})
    raise SchemaError(
        f"The {user!r} column is {a} in recs but {b} in truth: use the same kind of ids in both.", column=user
    )


def _share(counts: pd.Series, n_users) -> tuple[pd.Series, int]:
    return counts / max(int(n_users), 1), max(int(n_users), 1)


def _popularity(train, user: str, item: str):
    """Share of training users who interacted with each item (n_items values), and the user count."""
    _check_frame(train, "train", [user, item])
    pairs = train[[user, item]].dropna().drop_duplicates()
    counts = pairs.groupby(item).size()
    n_users = train[user].nunique()
    if dask.is_dask_collection(train):
        counts_d = counts.repartition(npartitions=1).to_delayed()[0]  # small: one value per item
        return delayed(_share, pure=True)(counts_d, n_users)
    return _share(counts, n_users)


def _travels(recs, kmax: int, user: str, rank: str):
    """Rows of ``recs`` that the per-user pass reads: rank <= kmax, missing or non-integer ranks, and
    fractional user ids (the last three so that every offending row is counted, whatever k)."""
    r = recs[rank]
    keep = (r <= kmax) | r.isna()
    if pd.api.types.is_float_dtype(r.dtype):
        keep = keep | (r % 1 != 0)  # inf % 1 is NaN: travels too
    u = recs[user]
    if pd.api.types.is_float_dtype(u.dtype):
        keep = keep | (~u.isna() & (u % 1 != 0))
    return keep


def _graph(recs, truth, ks, user, item, rank, catalog, train=None):
    from ._ranges import tree as _tree

    kmax = max(ks)
    lazy = any(dask.is_dask_collection(x) for x in (recs, truth, train))
    pop = None if train is None else _popularity(train, user, item)
    if lazy:
        import dask.dataframe as dd

        if not dask.is_dask_collection(recs):
            recs = dd.from_pandas(recs, npartitions=1)
        if not dask.is_dask_collection(truth):
            truth = dd.from_pandas(truth, npartitions=1)
        recs, truth = _common_dtype(recs[[user, item, rank]], truth[[user, item]], user)
        # best rank of every recommended item (coverage, catalog) from the unshuffled rows
        min_rank = _tree(
            [delayed(_item_min_rank, pure=True)(r, item, rank) for r in recs.to_delayed()], _merge_min
        )
        cat = None
        if catalog is None:
            cat = _tree([delayed(_items, pure=True)(t, item) for t in truth.to_delayed()], _merge_items)
        # only the top k travel, and the rows that break a row rule (to be counted and reported)
        top = recs[_travels(recs, kmax, user, rank)]
        n = max(recs.npartitions, truth.npartitions)
        r_parts = top.shuffle(user, npartitions=n).to_delayed()
        t_parts = truth.shuffle(user, npartitions=n).to_delayed()
        sums = _tree(
            [
                delayed(_rank_sums, pure=True)(r, t, ks, user, item, rank, pop)
                for r, t in zip(r_parts, t_parts)
            ],
            _add,
        )
        value = delayed(_finalize, pure=True)(sums, min_rank, cat, ks, catalog, pop is not None, user, rank)
        return value, True
    recs, truth = _common_dtype(recs[[user, item, rank]], truth[[user, item]], user)
    sums = _rank_sums(recs, truth, ks, user, item, rank, pop)
    min_rank = _item_min_rank(recs, item, rank)
    cat = _items(truth, item) if catalog is None else None
    return delayed(_finalize)(sums, min_rank, cat, ks, catalog, pop is not None, user, rank), False


def _prepare(recs, truth, ks, user_col, item_col, rank_col, catalog):
    _check_frame(recs, "recs", [user_col, item_col, rank_col])
    _check_frame(truth, "truth", [user_col, item_col])
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ParameterError(f"k must be a positive integer; got {ks}.")
    if catalog is not None:
        if not isinstance(catalog, (int, np.integer)):
            catalog = len(catalog)
        if catalog < 1:
            raise ParameterError(
                f"catalog must be a positive number of items (or a collection); got {catalog}."
            )
    return ks, catalog


def _finish(value, lazy, compute, client):
    from ..cluster import compute as _compute

    if not compute:
        return value
    if not lazy:
        return dask.compute(value, scheduler="sync")[0]
    return _compute(value, client=client)[0]


def _to_dict(res, k):
    rows, n_users = res
    out = {f"{name}@{k}": v for name, v in rows[k].items()}
    out["n_users"] = n_users
    return out


def ranking_metrics(
    recs,
    truth,
    *,
    k: int = 10,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rank_col: str = RANK,
    catalog=None,
    train=None,
    compute: bool = True,
    client=None,
) -> dict:
    """Exact top-k ranking metrics of long-format recommendations against truth.

    Parameters
    ----------
    recs : dask or pandas DataFrame
        One row per (user, item) recommendation with its ``rank`` (1 = best).
    truth : dask or pandas DataFrame
        One row per relevant (user, item) pair (duplicates count once).
    k : int
        Cut-off.
    user_col, item_col, rank_col : str
        Column names.
    catalog : int or collection, optional
        Catalog size (or the items) for coverage; default: the distinct items of the truth and of
        the recommendations.
    train : dask or pandas DataFrame, optional
        Training interactions (user, item). When given, adds ``novelty@k`` (mean of
        ``-log2 p(item)`` over the recommended rows of rank <= k, ``p`` = share of training users who
        interacted with the item, at least ``1 / training users``) and ``popularity_bias@k`` (mean
        ``p(item)`` of those rows: the average recommendation popularity), over all users' lists.
    compute : bool
        If False, return a ``dask.delayed`` dict.
    client : distributed.Client, optional

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``hit_rate@k``, ``mrr@k``,
        ``precision_capped@k``, ``coverage@k``, ``n_users`` (users in the truth) [, ``novelty@k``,
        ``popularity_bias@k``]. Definitions in the module notes: ``precision@k`` divides each
        user's hits by k; ``precision_capped@k`` is implicit's ``precision_at_k`` (hits pooled over
        users, divided by the pooled ``min(k, |T_u|)``).

    Raises
    ------
    SchemaError
        Missing columns; ranks missing, < 1 or not whole numbers; a rank repeated for one user
        (among ranks <= k); float user ids that are not whole numbers. Messages give the counts.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "rank": [1, 2]})
    >>> truth = pd.DataFrame({"user_id": [1, 2], "item_id": [11, 10]})
    >>> ranking_metrics(recs, truth, k=2)["recall@2"]
    0.5
    """
    ks, catalog = _prepare(recs, truth, [k], user_col, item_col, rank_col, catalog)
    value, lazy = _graph(recs, truth, ks, user_col, item_col, rank_col, catalog, train)
    value = delayed(_to_dict)(value, ks[0])
    return _finish(value, lazy, compute, client)


def ranking_metrics_at(
    recs,
    truth,
    *,
    ks=(1, 5, 10, 20),
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rank_col: str = RANK,
    catalog=None,
    train=None,
    compute: bool = True,
    client=None,
) -> pd.DataFrame:
    """Ranking metrics at several cut-offs in one pass: a DataFrame indexed by k (metric@k curves).

    Columns ``precision``, ``recall``, ``ndcg``, ``map``, ``hit_rate``, ``mrr``,
    ``precision_capped``, ``coverage``
    [, ``novelty``, ``popularity_bias``], ``n_users``. Parameters as :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "rank": [1, 2]})
    >>> truth = pd.DataFrame({"user_id": [1], "item_id": [11]})
    >>> ranking_metrics_at(recs, truth, ks=[1, 2])["hit_rate"].tolist()
    [0.0, 1.0]
    """
    ks, catalog = _prepare(recs, truth, ks, user_col, item_col, rank_col, catalog)
    value, lazy = _graph(recs, truth, ks, user_col, item_col, rank_col, catalog, train)
    value = delayed(_to_frame)(value)
    return _finish(value, lazy, compute, client)


def _to_frame(res):
    rows, n_users = res
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "k"
    df["n_users"] = n_users
    return df
