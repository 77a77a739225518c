"""Sharding: write a table hash-partitioned by an entity key, read it back one bucket per partition.

Bucket of a row = ``hash(key) % buckets`` with pandas' stable ``hash_pandas_object`` (the same in
every process and version of this library). One shuffle routes each bucket to one task, which sorts
it by (key, timestamp) and writes ``bucket-00007.parquet`` (or, with ``by_day=True``, one file per
day: ``day=2025-01-03/bucket-00007.parquet``). :func:`read_sharded` builds partition ``b`` from bucket
``b``'s files only, so every entity lives in exactly one partition and per-entity work needs no
further shuffle: ``ddf.map_partitions(per_card_function)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import ArtifactError, ParameterError, SchemaError
from ..io import _is_local, atomic_dir

__all__ = ["bucket_of", "read_sharded", "sharding_info", "write_sharded"]

INFO = "_sharding.json"
SCHEMA_FILE = "_schema.parquet"
_BUCKET = "_dms_bucket"


def bucket_of(values, buckets: int) -> np.ndarray:
    """The bucket (0..buckets-1) of each key value; the function :func:`write_sharded` uses.

    Examples
    --------
    >>> bucket_of([1, 2, 3], 4).tolist() == bucket_of([1, 2, 3], 4).tolist()
    True
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    h = pd.util.hash_pandas_object(s, index=False).to_numpy()
    return (h % np.uint64(buckets)).astype(np.int64)


def _add_bucket(df, key, buckets):
    df = df.copy()
    df[_BUCKET] = bucket_of(df[key], buckets) if len(df) else np.zeros(0, dtype=np.int64)
    return df


def _write_bucket(df, root, sort_by, by_day, time_col, partition_info=None):
    b = int(partition_info["number"])
    df = df.reset_index(drop=True)
    df = df.drop(columns=[_BUCKET]) if _BUCKET in df.columns else df
    if sort_by and len(df):
        df = df.sort_values(sort_by, kind="stable", na_position="last").reset_index(drop=True)
    name = f"bucket-{b:05d}.parquet"
    root = Path(root)
    if not by_day:
        df.to_parquet(root / name, index=False)
    elif len(df):
        days = df[time_col].dt.strftime("%Y-%m-%d").fillna("none")
        for day, part in df.groupby(days.to_numpy(), sort=True):
            d = root / f"day={day}"
            d.mkdir(parents=True, exist_ok=True)
            part.to_parquet(d / name, index=False)
    return pd.DataFrame({"bucket": [b], "rows": [len(df)]})


def write_sharded(
    ddf: dd.DataFrame,
    path,
    *,
    key: str,
    buckets: int,
    by_day: bool = False,
    time_col: str = S.TIMESTAMP,
    sort_by: list[str] | None = None,
    client=None,
) -> dict:
    """Write ``ddf`` hash-partitioned by ``key`` into ``buckets`` buckets, atomically.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    path : str or path-like
        Local directory, replaced atomically.
    key : str
        Entity column (``"card_id"``, ``"user_id"``): all rows of an entity land in one bucket.
    buckets : int
        Number of buckets (= partitions when read back). Aim for 100 MB-1 GB per bucket.
    by_day : bool
        Also split each bucket into one file per day of ``time_col`` (hive-style ``day=YYYY-MM-DD``
        directories), so a date range can be read without the rest.
    time_col : str
        Timestamp column for ``by_day`` and the default sort.
    sort_by : list of str, optional
        Order of rows inside a bucket; default ``[key, time_col]`` (when present).
    client : distributed.Client, optional

    Returns
    -------
    dict
        The sharding description also saved as ``_sharding.json`` (key, buckets, rows per bucket).

    Examples
    --------
    >>> import tempfile
    >>> from daskml_scale.data import make_transactions, write_sharded, read_sharded
    >>> d = tempfile.mkdtemp() + "/tx"
    >>> info = write_sharded(make_transactions(5_000, seed=0), d, key="card_id", buckets=4)
    >>> read_sharded(d).npartitions
    4
    """
    if key not in ddf.columns:
        raise SchemaError(f"key={key!r} is not a column; columns: {list(ddf.columns)}.", column=key)
    if not isinstance(buckets, (int, np.integer)) or isinstance(buckets, bool) or buckets < 1:
        raise ParameterError(
            f"The 'buckets' parameter of write_sharded must be an int >= 1. Got {buckets!r}."
        )
    if by_day and (
        time_col not in ddf.columns or not pd.api.types.is_datetime64_any_dtype(ddf.dtypes[time_col])
    ):
        raise SchemaError(
            f"by_day=True needs a datetime column {time_col!r}; coerce it first (read_transactions does).",
            column=time_col,
        )
    if not _is_local(path):
        raise ParameterError(f"write_sharded writes atomically to local directories only; got {path!r}.")
    if sort_by is None:
        sort_by = [key] + ([time_col] if time_col in ddf.columns else [])
    buckets = int(buckets)
    with_b = ddf.map_partitions(_add_bucket, key, buckets, meta=ddf._meta.assign(**{_BUCKET: np.int64(0)}))
    # explicit divisions 0, 1, ..., buckets route bucket b to output partition b; no quantiles computed
    routed = with_b.set_index(_BUCKET, divisions=list(range(buckets + 1)), sorted=False)
    with atomic_dir(path) as tmp:
        ddf._meta.to_parquet(tmp / SCHEMA_FILE, index=False)
        written = routed.map_partitions(
            _write_bucket,
            str(tmp),
            sort_by,
            by_day,
            time_col,
            meta=pd.DataFrame({"bucket": pd.Series([], dtype="int64"), "rows": pd.Series([], dtype="int64")}),
            align_dataframes=False,
        )
        (rows,) = compute(written, client=client)  # small: one row per bucket
        rows = rows.sort_values("bucket")
        info = {
            "format": "daskml-scale-sharded",
            "version": 1,
            "key": key,
            "buckets": buckets,
            "hash": "pandas.util.hash_pandas_object(index=False) % buckets",
            "by_day": bool(by_day),
            "time_col": time_col if by_day else None,
            "sort_by": list(sort_by),
            "rows": int(rows["rows"].sum()),
            "rows_per_bucket": [int(r) for r in rows["rows"]],
            "columns": [str(c) for c in ddf.columns],
        }
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def sharding_info(path) -> dict:
    """The ``_sharding.json`` of a directory written by :func:`write_sharded`."""
    f = Path(path) / INFO
    if not f.is_file():
        raise ArtifactError(f"{path} was not written by write_sharded: {INFO} is missing.")
    return json.loads(f.read_text())


def _read_bucket(b, root, by_day, columns, days, meta_arg):
    root = Path(root)
    name = f"bucket-{b:05d}.parquet"
    if not by_day:
        files = [root / name]
    else:
        files = sorted(root.glob(f"day=*/{name}"))
        if days is not None:
            files = [f for f in files if f.parent.name[4:] in days]
    frames = [pd.read_parquet(f, columns=columns) for f in files if f.exists()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return meta_arg
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.astype(meta_arg.dtypes.to_dict())


def read_sharded(path, *, columns: list[str] | None = None, days: list[str] | None = None) -> dd.DataFrame:
    """Read a sharded directory: partition ``b`` is bucket ``b``, so every entity is in one partition.

    Parameters
    ----------
    path : str or path-like
        Directory written by :func:`write_sharded`.
    columns : list of str, optional
        Columns to read.
    days : list of str, optional
        With ``by_day`` sharding, only these days (``"2025-01-03"``).

    Returns
    -------
    dask.dataframe.DataFrame
        ``buckets`` partitions, in bucket order; rows sorted by the write's ``sort_by`` within a day
        file (days concatenated in date order). Use :func:`bucket_of` to find a key's partition.

    Examples
    --------
    >>> ddf = read_sharded("shards/tx")  # doctest: +SKIP
    >>> ddf.map_partitions(lambda df: df.groupby("card_id").amount.mean())  # doctest: +SKIP
    """
    info = sharding_info(path)
    if days is not None and not info["by_day"]:
        raise ParameterError(f"days= needs a table sharded with by_day=True; {path} was not.")
    meta = pd.read_parquet(Path(path) / SCHEMA_FILE, columns=columns)
    days = None if days is None else {str(pd.Timestamp(d).date()) for d in days}
    return dd.from_map(
        _read_bucket,
        list(range(info["buckets"])),
        root=str(path),
        by_day=info["by_day"],
        columns=columns,
        days=days,
        meta=meta,
        meta_arg=meta,
        label="read-sharded",
        enforce_metadata=False,
    )
