"""Train/test splitters on Dask DataFrames that never leak future rows into training.

* :func:`time_split`: one global cutoff; train strictly before it, test at or after it.
* :func:`leave_last_n_split` and :func:`ratio_split`: per user, chronological; the user's latest
  rows go to the test set. Rows are co-located by user with one shuffle, then each partition splits
  its users with pandas; within a user every training row is no later than every test row.
* :func:`random_split`: seeded, row-independent (for i.i.d. data only: it ignores time).

The per-user splitters return two lazy frames that share one shuffle: compute or persist them
together (``daskml_scale.compute(train, test)`` or ``client.persist``) to shuffle once.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd

from ..errors import ParameterError, SchemaError
from ..schema import ITEM_ID, TIMESTAMP, USER_ID

__all__ = ["leave_last_n_split", "random_split", "ratio_split", "time_split"]

_TEST = "__is_test__"


def _need(ddf, cols, owner):
    missing = [c for c in cols if c not in ddf.columns]
    if missing:
        raise SchemaError(
            f"{owner} needs column(s) {missing}; the table has {list(ddf.columns)}. Pass the right names "
            "(time_col=, user_col=).",
            column=missing[0],
        )


def time_split(ddf, cutoff, *, time_col: str = TIMESTAMP):
    """Split at a time cutoff: train has ``time < cutoff``, test has ``time >= cutoff``.

    Parameters
    ----------
    ddf : dask or pandas DataFrame
    cutoff : str, datetime-like or number
        Compared with ``time_col``; strings are parsed as timestamps for datetime columns.
    time_col : str

    Returns
    -------
    (train, test)
        Lazy frames (rows with a missing time are in neither).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"timestamp": pd.to_datetime(["2025-01-01", "2025-02-01"]), "x": [1, 2]})
    >>> train, test = time_split(df, "2025-01-15")
    >>> len(train), len(test)
    (1, 1)
    """
    _need(ddf, [time_col], "time_split")
    if pd.api.types.is_datetime64_any_dtype(ddf[time_col].dtype):
        try:
            cutoff = pd.Timestamp(cutoff)
        except (TypeError, ValueError):
            raise ParameterError(f"cutoff {cutoff!r} is not a timestamp; pass e.g. '2025-03-01'.") from None
        tz = getattr(ddf[time_col].dtype, "tz", None)
        if tz is not None and cutoff.tzinfo is None:
            cutoff = cutoff.tz_localize(tz)
    return ddf[ddf[time_col] < cutoff], ddf[ddf[time_col] >= cutoff]


def random_split(ddf, test_size: float = 0.2, *, seed: int = 0):
    """Seeded random split of rows (independent of time: use only for i.i.d. rows).

    Each partition draws from a generator seeded by ``(seed, partition number)``, so the split is
    reproducible for the same partitioning and train/test never overlap.

    Examples
    --------
    >>> import pandas as pd
    >>> train, test = random_split(pd.DataFrame({"x": range(1000)}), 0.25, seed=1)
    >>> len(train) + len(test)
    1000
    """
    if not 0 < test_size < 1:
        raise ParameterError(f"test_size must be in (0, 1); got {test_size!r}.")
    if not dask.is_dask_collection(ddf):
        mask = np.random.default_rng([seed, 0]).random(len(ddf)) < test_size
        return ddf[~mask], ddf[mask]
    flagged = ddf.map_partitions(_random_flag, test_size, seed, meta=_flag_meta(ddf))
    return _halves(flagged)


def _flag_meta(ddf):
    meta = ddf._meta.copy()
    meta[_TEST] = np.zeros(0, dtype=bool)
    return meta


def _random_flag(df, test_size, seed, partition_info=None):
    i = 0 if partition_info is None else partition_info["number"]
    out = df.copy()
    out[_TEST] = np.random.default_rng([seed, i]).random(len(df)) < test_size
    return out


def _halves(flagged):
    train = flagged[~flagged[_TEST]].drop(columns=_TEST)
    test = flagged[flagged[_TEST]].drop(columns=_TEST)
    return train, test


def _order_cols(df, user_col, time_col, item_col):
    return [user_col, time_col] + ([item_col] if item_col in df.columns else [])


def _per_user_flag(df, n_test_fn, user_col, time_col, item_col):
    out = df.sort_values(_order_cols(df, user_col, time_col, item_col), kind="stable")
    g = out.groupby(user_col, sort=False)
    size = g[time_col].transform("size").to_numpy()
    from_end = g.cumcount(ascending=False).to_numpy()
    out[_TEST] = from_end < n_test_fn(size)
    return out


def _per_user(ddf, n_test_fn, user_col, time_col, item_col, owner):
    _need(ddf, [user_col, time_col], owner)
    if not dask.is_dask_collection(ddf):
        flagged = _per_user_flag(ddf, n_test_fn, user_col, time_col, item_col)
        return flagged[~flagged[_TEST]].drop(columns=_TEST), flagged[flagged[_TEST]].drop(columns=_TEST)
    shuffled = ddf.shuffle(user_col)
    flagged = shuffled.map_partitions(
        _per_user_flag, n_test_fn, user_col, time_col, item_col, meta=_flag_meta(shuffled)
    )
    return _halves(flagged)


class _LastN:
    def __init__(self, n: int, min_train: int):
        self.n, self.min_train = n, min_train

    def __call__(self, size):
        return np.where(size >= self.n + self.min_train, self.n, 0)


class _Ratio:
    def __init__(self, ratio: float, min_train: int):
        self.ratio, self.min_train = ratio, min_train

    def __call__(self, size):
        return np.minimum(np.floor(size * self.ratio + 1e-9), np.maximum(size - self.min_train, 0))


def leave_last_n_split(
    ddf,
    n: int = 1,
    *,
    user_col: str = USER_ID,
    time_col: str = TIMESTAMP,
    item_col: str = ITEM_ID,
    min_train: int = 1,
):
    """Per user, the ``n`` latest rows go to test, the rest to train.

    Users with fewer than ``n + min_train`` rows stay entirely in train. Ties in time are broken by
    ``item_col`` (when present) then by input order, so the split is deterministic.

    Returns
    -------
    (train, test)
        Lazy frames sharing one shuffle by user (compute them together).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [1, 2, 3, 1], "timestamp": [3, 1, 2, 1]})
    >>> train, test = leave_last_n_split(df, 1)
    >>> test[["user_id", "item_id"]].values.tolist()
    [[1, 1]]
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"n must be a positive integer; got {n!r}.")
    if not isinstance(min_train, (int, np.integer)) or min_train < 0:
        raise ParameterError(f"min_train must be an integer >= 0; got {min_train!r}.")
    return _per_user(ddf, _LastN(int(n), int(min_train)), user_col, time_col, item_col, "leave_last_n_split")


def ratio_split(
    ddf,
    test_ratio: float = 0.2,
    *,
    user_col: str = USER_ID,
    time_col: str = TIMESTAMP,
    item_col: str = ITEM_ID,
    min_train: int = 1,
):
    """Per user, the latest ``floor(test_ratio * n_user)`` rows go to test (chronological).

    At least ``min_train`` rows of every user stay in train.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1] * 5, "item_id": range(5), "timestamp": range(5)})
    >>> train, test = ratio_split(df, 0.4)
    >>> test["item_id"].tolist()
    [3, 4]
    """
    if not 0 < test_ratio < 1:
        raise ParameterError(f"test_ratio must be in (0, 1); got {test_ratio!r}.")
    return _per_user(
        ddf, _Ratio(float(test_ratio), int(min_train)), user_col, time_col, item_col, "ratio_split"
    )
