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
import posixpath

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import ArtifactError, ParameterError, SchemaError
from ..storage import committed, filesystem, read_manifest, record_meta

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


def _write_bucket(df, writer, sort_by, by_day, time_col, partition_info=None):
    b = int(partition_info["number"])
    df = df.reset_index(drop=True)
    df = df.drop(columns=[_BUCKET]) if _BUCKET in df.columns else df
    if sort_by and len(df):
        df = df.sort_values(sort_by, kind="stable", na_position="last").reset_index(drop=True)
    name = f"bucket-{b:05d}.parquet"
    recs = []
    if not by_day:
        recs.append(writer.write_parquet(df, name))
    elif len(df):
        days = df[time_col].dt.strftime("%Y-%m-%d").fillna("none")
        for day, part in df.groupby(days.to_numpy(), sort=True):
            recs.append(writer.write_parquet(part.reset_index(drop=True), f"day={day}/{name}"))
    out = pd.DataFrame(recs, columns=["path", "rows", "bytes", "sha256"]).astype(
        {"rows": "int64", "bytes": "int64"}
    )
    return out.assign(bucket=np.int64(b), bucket_rows=np.int64(len(df)))


def write_sharded(
    ddf: dd.DataFrame,
    path,
    *,
    key: str,
    buckets: int,
    by_day: bool = False,
    time_col: str = S.TIMESTAMP,
    sort_by: list[str] | None = None,
    storage_options: dict | None = None,
    client=None,
) -> dict:
    """Write ``ddf`` hash-partitioned by ``key`` into ``buckets`` buckets, atomically.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    path : str or path-like
        Directory or fsspec URL, replaced with the commit protocol of :mod:`daskml_scale.storage`.
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
    storage_options : dict, optional
        Passed to the filesystem.
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
    if sort_by is None:
        sort_by = [key] + ([time_col] if time_col in ddf.columns else [])
    buckets = int(buckets)
    with_b = ddf.map_partitions(_add_bucket, key, buckets, meta=ddf._meta.assign(**{_BUCKET: np.int64(0)}))
    # explicit divisions 0, 1, ..., buckets route bucket b to output partition b; no quantiles computed
    routed = with_b.set_index(_BUCKET, divisions=list(range(buckets + 1)), sorted=False)
    wmeta = record_meta().assign(
        bucket=pd.Series([], dtype="int64"), bucket_rows=pd.Series([], dtype="int64")
    )
    with committed(path, storage_options) as st:
        written = routed.map_partitions(
            _write_bucket, st.writer, sort_by, by_day, time_col, meta=wmeta, align_dataframes=False
        )
        (recs,) = compute(written, client=client)  # small: one record per file
        st.add(recs)
        rows = recs.groupby("bucket")["bucket_rows"].first().reindex(range(buckets), fill_value=0)
        info = {
            "format": "daskml-scale-sharded",
            "version": 1,
            "key": key,
            "buckets": buckets,
            "hash": "pandas.util.hash_pandas_object(index=False) % buckets",
            "by_day": bool(by_day),
            "time_col": time_col if by_day else None,
            "sort_by": list(sort_by),
            "rows": int(rows.sum()),
            "rows_per_bucket": [int(r) for r in rows],
            "columns": [str(c) for c in ddf.columns],
        }
        st.add(st.writer.write_parquet(ddf._meta, SCHEMA_FILE))
        st.add(st.writer.write_bytes((json.dumps(info, indent=2) + "\n").encode(), INFO))
        st.metadata["sharding"] = info
    return info


def _manifest(path, storage_options) -> dict:
    m = read_manifest(path, storage_options)
    if m is None or "sharding" not in m.get("metadata", {}):
        raise ArtifactError(f"{path} was not written by write_sharded: it has no sharding manifest.")
    return m


def sharding_info(path, *, storage_options: dict | None = None) -> dict:
    """The sharding description of a directory written by :func:`write_sharded`."""
    return _manifest(path, storage_options)["metadata"]["sharding"]


def _read_bucket(files, fs, columns, meta_arg):
    frames = []
    for f in files:
        with fs.open(f, "rb") as fh:
            frames.append(pd.read_parquet(fh, columns=columns))
    frames = [f for f in frames if len(f)]
    if not frames:
        return meta_arg
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.astype(meta_arg.dtypes.to_dict())


def read_sharded(
    path,
    *,
    columns: list[str] | None = None,
    days: list[str] | None = None,
    storage_options: dict | None = None,
) -> dd.DataFrame:
    """Read a sharded directory: partition ``b`` is bucket ``b``, so every entity is in one partition.

    Parameters
    ----------
    path : str or path-like
        Directory written by :func:`write_sharded`.
    columns : list of str, optional
        Columns to read.
    days : list of str, optional
        With ``by_day`` sharding, only these days (``"2025-01-03"``).
    storage_options : dict, optional
        Passed to the filesystem.

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
    m = _manifest(path, storage_options)
    info = m["metadata"]["sharding"]
    if days is not None and not info["by_day"]:
        raise ParameterError(f"days= needs a table sharded with by_day=True; {path} was not.")
    fs, root = filesystem(path, storage_options)
    prefix = posixpath.dirname(next(p["path"] for p in m["parts"] if p["path"].endswith(SCHEMA_FILE)))
    with fs.open(posixpath.join(root, prefix, SCHEMA_FILE), "rb") as fh:
        meta = pd.read_parquet(fh, columns=columns)
    days = None if days is None else {str(pd.Timestamp(d).date()) for d in days}
    per_bucket: list[list[str]] = [[] for _ in range(info["buckets"])]
    for p in sorted(m["parts"], key=lambda p: p["path"]):  # day=YYYY-MM-DD sorts by date
        rel = p["path"][len(prefix) + 1 if prefix else 0 :]
        name = posixpath.basename(rel)
        if not name.startswith("bucket-"):
            continue
        if days is not None and posixpath.dirname(rel)[4:] not in days:
            continue
        per_bucket[int(name[7:12])].append(posixpath.join(root, p["path"]))
    return dd.from_map(
        _read_bucket,
        per_bucket,
        fs=fs,
        columns=columns,
        meta=meta,
        meta_arg=meta,
        label="read-sharded",
        enforce_metadata=False,
    )
