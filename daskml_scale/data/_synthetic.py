"""Synthetic transactions and interactions that scale to billions of rows.

Rows are made in fixed-size blocks of ``BLOCK_ROWS``; block ``b`` is generated from the seed sequence
``(seed, table, b)`` alone, and a partition is a run of whole blocks. So the same seed gives the same
rows whatever the number of partitions or workers, building the graph for 10**9 rows is instant (one
task per partition, nothing computed), and materialising a partition costs memory proportional to that
partition only. Per-entity traits (a card's usual amount and merchants, a user's and an item's latent
tastes) come from a stateless hash of the id, so no table of entities is ever held anywhere.
"""

from __future__ import annotations

import math

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import ParameterError

__all__ = ["BLOCK_ROWS", "make_interactions", "make_transactions"]

BLOCK_ROWS = 4096
DEFAULT_PARTITION_ROWS = 1 << 20
CATEGORIES = np.array(
    [
        "grocery",
        "fuel",
        "restaurant",
        "travel",
        "electronics",
        "fashion",
        "pharmacy",
        "entertainment",
        "utilities",
        "gaming",
        "jewelry",
        "digital_goods",
    ]
)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast stateless 64-bit hash, vectorised."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _hash(ids: np.ndarray, salt: int, seed: int) -> np.ndarray:
    key = np.uint64((seed * 0x632BE59BD9B4E019 + salt * 0x8CB92BA72F3D8DD7) % (1 << 64))
    return _mix(ids.astype(np.uint64) * _GOLD ^ key)


def _hash_uniform(ids: np.ndarray, salt: int, seed: int) -> np.ndarray:
    """Uniform in (0, 1), a deterministic function of (id, salt, seed)."""
    return ((_hash(ids, salt, seed) >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _hash_vectors(ids: np.ndarray, salt: int, seed: int, dim: int) -> np.ndarray:
    """``len(ids) x dim`` values of mean 0 and variance 1, a deterministic function of (id, salt, seed).

    Each 64-bit hash gives 8 bytes, read as int8 (uniform on [-128, 127]) and scaled: one hash per
    8 dimensions, so latent vectors for millions of ids cost almost nothing.
    """
    ids = np.ascontiguousarray(ids.ravel())
    words = (dim + 7) // 8
    h = np.empty((len(ids), words), dtype=np.uint64)
    for w in range(words):
        h[:, w] = _hash(ids, salt + w, seed)
    v = h.view(np.int8).reshape(len(ids), words * 8)[:, :dim]
    return (v.astype(np.float64) + 0.5) / 73.9


def _check_positive(name, value, owner, minimum=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be an int >= {minimum}. Got {value!r} instead."
        )


def _partition_specs(n_rows, npartitions, partition_rows, owner):
    """Split ``n_rows`` into partitions made of whole blocks: a list of (first_block, n_blocks)."""
    _check_positive("n_rows", n_rows, owner, minimum=0)
    n_blocks = max(1, math.ceil(n_rows / BLOCK_ROWS))
    if npartitions is not None and partition_rows is not None:
        raise ParameterError(f"{owner}: give npartitions or partition_rows, not both.")
    if npartitions is None:
        rows = DEFAULT_PARTITION_ROWS if partition_rows is None else partition_rows
        _check_positive("partition_rows", rows, owner)
        per = max(1, math.ceil(rows / BLOCK_ROWS))
    else:
        _check_positive("npartitions", npartitions, owner)
        per = max(1, math.ceil(n_blocks / npartitions))
    return [(b, min(per, n_blocks - b)) for b in range(0, n_blocks, per)]


def _block_sizes(n_rows, first, count):
    return [(b, max(0, min(BLOCK_ROWS, n_rows - b * BLOCK_ROWS))) for b in range(first, first + count)]


# --------------------------------------------------------------------------------------- transactions
def _seconds_of_day(rng, n, night_prob):
    """Seconds after midnight: daytime (around 14h) mostly, night (0-5h) with ``night_prob``."""
    day = np.mod(rng.normal(14 * 3600, 3.5 * 3600, n), 86400)
    night = rng.uniform(0, 5 * 3600, n)
    return np.where(rng.random(n) < night_prob, night, day)


def _card_mu(cards, seed):
    """Log of a card's usual amount: between log(5) and log(200), fixed per card."""
    return 1.6 + 3.7 * _hash_uniform(cards, 1, seed)


def _transactions_block(b, m, p):
    seed = p["seed"]
    rng = np.random.default_rng([seed, 1, b])
    n_cards, n_merchants, period = p["n_cards"], p["n_merchants"], p["days"] * 86400.0
    # fraud: bursts of card use at many merchants within minutes, unusual amounts, often at night
    target = int(rng.binomial(m, p["fraud_rate"])) if m else 0
    lengths = []
    while sum(lengths) < target:
        lengths.append(3 + int(rng.poisson(3)))
    if lengths:
        lengths[-1] -= sum(lengths) - target
        lengths = [k for k in lengths if k > 0]
    n_fraud = sum(lengths)
    n_legit = m - n_fraud
    # legitimate use: a card's own merchants and amounts, daytime mostly
    cards = (n_cards * rng.random(n_legit) ** 1.3).astype(np.int64)
    day = rng.integers(0, p["days"], n_legit).astype(np.float64)
    secs = day * 86400.0 + _seconds_of_day(rng, n_legit, 0.07)
    home = rng.random(n_legit) < 0.85
    slot = rng.integers(0, 6, n_legit)
    home_merchant = (_hash(cards * 8 + slot, 2, seed) % np.uint64(n_merchants)).astype(np.int64)
    popular = (n_merchants * rng.random(n_legit) ** 3).astype(np.int64)
    merchants = np.where(home, home_merchant, popular)
    amounts = np.exp(_card_mu(cards, seed) + 0.5 * rng.standard_normal(n_legit))
    online = rng.random(n_legit) < 0.3
    fraud = np.zeros(n_legit, dtype=np.int8)
    if n_fraud:
        k = np.asarray(lengths)
        burst_cards = (n_cards * rng.random(len(k)) ** 1.3).astype(np.int64)
        start = rng.integers(0, p["days"], len(k)) * 86400.0 + _seconds_of_day(rng, len(k), 0.6)
        fcards = np.repeat(burst_cards, k)
        gaps = rng.exponential(90.0, n_fraud)
        first = np.repeat(np.cumsum(k) - k, k)
        csum = np.cumsum(gaps)
        offsets = csum - np.repeat(csum[np.cumsum(k) - k], k)  # 0 for the first of each burst
        fsecs = np.repeat(start, k) + offsets
        fmerchants = rng.integers(0, n_merchants, n_fraud)
        famounts = np.exp(
            _card_mu(fcards, seed)
            + np.log(rng.uniform(2.0, 5.0, n_fraud))
            + 0.3 * rng.standard_normal(n_fraud)
        )
        del first
        cards = np.concatenate([cards, fcards])
        secs = np.concatenate([secs, np.minimum(fsecs, period - 1.0)])
        merchants = np.concatenate([merchants, fmerchants])
        amounts = np.concatenate([amounts, famounts])
        online = np.concatenate([online, rng.random(n_fraud) < 0.7])
        fraud = np.concatenate([fraud, np.ones(n_fraud, dtype=np.int8)])
    order = np.argsort(secs, kind="stable")
    ts = p["start"] + pd.to_timedelta(np.round(secs[order] * 1e6).astype(np.int64), unit="us")
    merchants = merchants[order]
    category = CATEGORIES[(_hash(merchants, 3, seed) % np.uint64(len(CATEGORIES))).astype(np.int64)]
    return pd.DataFrame(
        {
            S.TRANSACTION_ID: np.arange(b * BLOCK_ROWS, b * BLOCK_ROWS + m, dtype=np.int64),
            S.TIMESTAMP: ts.astype("datetime64[ns]"),
            S.CARD_ID: cards[order],
            S.MERCHANT_ID: merchants,
            S.AMOUNT: np.round(amounts[order], 2).astype(np.float64),
            S.MERCHANT_CATEGORY: pd.array(category, dtype="str"),
            S.CHANNEL: pd.array(np.where(online[order], "online", "pos"), dtype="str"),
            S.IS_FRAUD: fraud[order].astype(np.int64),
        }
    )


def _transactions_partition(spec, params):
    first, count = spec
    frames = [_transactions_block(b, m, params) for b, m in _block_sizes(params["n_rows"], first, count)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def make_transactions(
    n_rows: int,
    *,
    n_cards: int | None = None,
    n_merchants: int | None = None,
    fraud_rate: float = 0.005,
    days: int = 60,
    start: str = "2025-01-01",
    npartitions: int | None = None,
    partition_rows: int | None = None,
    seed: int = 0,
) -> dd.DataFrame:
    """Lazy synthetic card transactions with fraud that only behaviour reveals.

    Legitimate use follows each card's habits: a handful of home merchants, amounts around the card's
    own usual level, mostly in daytime. Fraud comes in bursts: a compromised card is used 3 or more
    times within minutes at merchants it never used, for 3-8 times its usual amount, often at night
    and online. Amount, hour and channel alone overlap between the classes; per-card history
    separates them.

    Parameters
    ----------
    n_rows : int
        Number of transactions.
    n_cards, n_merchants : int, optional
        Number of distinct cards (default ``max(100, n_rows // 50)``) and merchants
        (default ``max(50, n_rows // 200)``). Card activity is skewed: low ids are busier.
    fraud_rate : float
        Fraction of rows that are fraud (default 0.005).
    days : int
        Span of the timestamps, from ``start``.
    start : str
        First day, ISO format.
    npartitions, partition_rows : int, optional
        Partitioning (whole blocks of 4096 rows); default about 1M rows per partition. The rows do
        not depend on it.
    seed : int

    Returns
    -------
    dask.dataframe.DataFrame
        Columns ``transaction_id, timestamp, card_id, merchant_id, amount, merchant_category, channel,
        is_fraud``; rows sorted by time within each block of 4096.

    Examples
    --------
    >>> from daskml_scale.data import make_transactions
    >>> ddf = make_transactions(10_000, npartitions=2, seed=1)
    >>> ddf.npartitions
    2
    >>> len(ddf.partitions[0].compute())  # small: one partition of a tiny example
    8192
    """
    owner = "make_transactions"
    specs = _partition_specs(n_rows, npartitions, partition_rows, owner)
    if not 0.0 <= fraud_rate < 0.5:
        raise ParameterError(
            f"The 'fraud_rate' parameter of {owner} must be in [0, 0.5). Got {fraud_rate!r}."
        )
    _check_positive("days", days, owner)
    params = {
        "n_rows": int(n_rows),
        "n_cards": int(n_cards or max(100, n_rows // 50)),
        "n_merchants": int(n_merchants or max(50, n_rows // 200)),
        "fraud_rate": float(fraud_rate),
        "days": int(days),
        "start": pd.Timestamp(start),
        "seed": int(seed),
    }
    _check_positive("n_cards", params["n_cards"], owner)
    _check_positive("n_merchants", params["n_merchants"], owner)
    meta = _transactions_block(0, 0, params)
    return dd.from_map(
        _transactions_partition,
        specs,
        params=params,
        meta=meta,
        enforce_metadata=False,
        label="make-transactions",
    )


# --------------------------------------------------------------------------------------- interactions
def _interactions_block(b, m, p):
    seed, n_users, n_items, rank = p["seed"], p["n_users"], p["n_items"], p["rank"]
    rng = np.random.default_rng([seed, 2, b])
    c = p["candidates"]
    users = (n_users * rng.random(m) ** 1.2).astype(np.int64)
    # candidates drawn by power-law popularity, then chosen by the user's latent taste (softmax)
    cand = (n_items * rng.random((m, c)) ** p["popularity_exponent"]).astype(np.int64)
    u = _hash_vectors(users, 100, seed, rank)
    v = _hash_vectors(cand, 200, seed, rank).reshape(m, c, rank)
    logits = p["taste"] * np.einsum("mk,mck->mc", u, v) / math.sqrt(rank)
    gumbel = -np.log(-np.log(rng.random((m, c))))
    items = cand[np.arange(m), np.argmax(logits + gumbel, axis=1)] if m else cand[:, 0]
    secs = rng.uniform(0, p["days"] * 86400.0, m)
    order = np.argsort(secs, kind="stable")
    ts = p["start"] + pd.to_timedelta(np.round(secs[order] * 1e6).astype(np.int64), unit="us")
    return pd.DataFrame(
        {
            S.USER_ID: users[order],
            S.ITEM_ID: items[order],
            S.TIMESTAMP: ts.astype("datetime64[ns]"),
            S.WEIGHT: np.ones(m, dtype=np.float64),
        }
    )


def _interactions_partition(spec, params):
    first, count = spec
    frames = [_interactions_block(b, m, params) for b, m in _block_sizes(params["n_rows"], first, count)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def make_interactions(
    n_rows: int,
    n_users: int | None = None,
    n_items: int | None = None,
    *,
    rank: int = 8,
    taste: float = 3.0,
    popularity_exponent: float = 2.5,
    candidates: int = 32,
    days: int = 60,
    start: str = "2025-01-01",
    npartitions: int | None = None,
    partition_rows: int | None = None,
    seed: int = 0,
) -> dd.DataFrame:
    """Lazy synthetic user-item interactions from low-rank tastes and power-law item popularity.

    Each interaction draws ``candidates`` items with probability falling as a power of the item id
    (popular items first), then picks one by the user's latent taste: a softmax over the dot products
    of hashed ``rank``-dimensional user and item vectors, sharpened by ``taste``.

    Parameters
    ----------
    n_rows : int
        Number of interactions (duplicates of a (user, item) pair may occur).
    n_users, n_items : int, optional
        Defaults ``max(50, n_rows // 40)`` and ``max(50, n_rows // 200)``.
    rank : int
        Dimension of the latent tastes.
    taste : float
        How strongly tastes beat popularity (0 gives popularity only).
    popularity_exponent : float
        Item ``i`` is a candidate with density proportional to ``i ** (1/popularity_exponent - 1)``.
    candidates : int
        Items considered per interaction.
    days, start, npartitions, partition_rows, seed
        As in :func:`make_transactions`.

    Returns
    -------
    dask.dataframe.DataFrame
        Columns ``user_id, item_id, timestamp, weight``.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> ddf = make_interactions(5_000, n_users=100, n_items=50, seed=3)
    >>> list(ddf.columns)
    ['user_id', 'item_id', 'timestamp', 'weight']
    """
    owner = "make_interactions"
    specs = _partition_specs(n_rows, npartitions, partition_rows, owner)
    for name, value in (("rank", rank), ("candidates", candidates), ("days", days)):
        _check_positive(name, value, owner)
    params = {
        "n_rows": int(n_rows),
        "n_users": int(n_users or max(50, n_rows // 40)),
        "n_items": int(n_items or max(50, n_rows // 200)),
        "rank": int(rank),
        "taste": float(taste),
        "popularity_exponent": float(popularity_exponent),
        "candidates": int(candidates),
        "days": int(days),
        "start": pd.Timestamp(start),
        "seed": int(seed),
    }
    _check_positive("n_users", params["n_users"], owner)
    _check_positive("n_items", params["n_items"], owner)
    meta = _interactions_block(0, 0, params)
    return dd.from_map(
        _interactions_partition,
        specs,
        params=params,
        meta=meta,
        enforce_metadata=False,
        label="make-interactions",
    )
