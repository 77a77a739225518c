"""Readers: parquet or CSV from any fsspec URL, mapped to the canonical schema, dtypes coerced.

The kind of every canonical column is checked on the collection's metadata (no data read) before
any work starts; values are coerced partition by partition. A value that cannot be parsed becomes
missing (NA/NaT/NaN), which :func:`~daskml_scale.data.validate` then counts under the column's rule
(``missing_<id>``, ``invalid_timestamp``, ``nonfinite_amount``, ...), so nothing is silently dropped.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import ParameterError, SchemaError
from ..storage import check_input, read_parquet

__all__ = ["coerce", "read_interactions", "read_table", "read_transactions"]

# target dtype of each kind once coerced; "id" is int when the source is numeric, else str
_NUMERIC_KINDS = {"int", "float", "label"}


def _is_str_like(dtype) -> bool:
    return pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)


def _is_number(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _wrong_kind(column: str, kind: str, dtype, fix: str) -> SchemaError:
    return SchemaError(
        f"Column {column!r} has dtype {dtype}, which cannot hold a {kind!r} value ({_KIND_TEXT[kind]}). "
        f"{fix}",
        column=column,
    )


_KIND_TEXT = {
    "int": "an integer",
    "id": "an integer or string id",
    "float": "a number",
    "datetime": "a timestamp",
    "label": "0 or 1",
    "category": "a string category",
}


def plan_coercion(dtypes: pd.Series | dict, schema: S.TableSchema, *, time_unit: str | None = None) -> dict:
    """Decide, from dtypes alone, the target of each canonical column; raise SchemaError if impossible.

    Returns ``{column: target}`` with targets ``"int"`` (nullable Int64 when the source may hold
    missing values, else int64), ``"str"``, ``"float"``, ``"datetime"``, ``"epoch"`` (numbers in
    ``time_unit``) and ``"label"`` (float64 holding 0/1, checked later).
    """
    dtypes = dict(dtypes)
    missing = [c for c in schema.required if c not in dtypes]
    if missing:
        raise SchemaError(
            f"Required column(s) {missing} of the {schema.name} schema are missing; found {sorted(dtypes)}. "
            f"Map yours with columns={{'your_name': {missing[0]!r}}} when reading (CLI: --map your_name={missing[0]}).",
            column=missing[0],
        )
    plan = {}
    for col in schema.columns:
        if col not in dtypes:
            continue
        kind, dt = schema.kind(col), dtypes[col]
        is_dt = pd.api.types.is_datetime64_any_dtype(dt)
        if kind == "datetime":
            if is_dt or _is_str_like(dt):
                plan[col] = "datetime"
            elif _is_number(dt) and time_unit is not None:
                plan[col] = "epoch"
            else:
                raise _wrong_kind(
                    col,
                    kind,
                    dt,
                    "Give ISO strings or datetimes; for numbers since 1970 pass time_unit='s' (or 'ms').",
                )
        elif kind in ("int", "float", "label"):
            if _is_number(dt) or _is_str_like(dt) or (kind == "label" and pd.api.types.is_bool_dtype(dt)):
                plan[col] = {"int": "int", "float": "float", "label": "label"}[kind]
            else:
                raise _wrong_kind(col, kind, dt, f"Map a numeric column to {col!r} with columns={{...}}.")
        elif kind == "id":
            if _is_number(dt):
                plan[col] = "int"
            elif _is_str_like(dt):
                plan[col] = "str"
            else:
                raise _wrong_kind(col, kind, dt, f"Map an integer or string column to {col!r}.")
        elif kind == "category":
            if is_dt:
                raise _wrong_kind(col, kind, dt, f"Map a string column to {col!r}.")
            plan[col] = "str"
    return plan


def _to_int(s: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(s.dtype) and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        return s.astype("int64")  # numpy integers hold no missing values: stay int64
    x = pd.to_numeric(s, errors="coerce") if not _is_number(s.dtype) else s
    x = (
        pd.Series(np.asarray(x, dtype="float64"), index=s.index)
        if not pd.api.types.is_integer_dtype(x)
        else x
    )
    if pd.api.types.is_float_dtype(x.dtype):
        v = x.to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2.0**63)
        out = np.zeros(len(v), dtype=np.int64)
        out[ok] = v[ok].astype(np.int64)
        return pd.Series(pd.arrays.IntegerArray(out, ~ok), index=s.index)
    return x.astype("Int64")


def _to_float(s: pd.Series) -> pd.Series:
    x = s if _is_number(s.dtype) or pd.api.types.is_bool_dtype(s.dtype) else pd.to_numeric(s, errors="coerce")
    if isinstance(x.dtype, pd.api.extensions.ExtensionDtype):
        x = x.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        return pd.Series(x, index=s.index)
    return x.astype("float64")


def _to_datetime(s: pd.Series, target: str, time_unit: str | None) -> pd.Series:
    if target == "epoch":
        v = _to_float(s)
        ok = np.isfinite(v.to_numpy()) & (
            np.abs(v.to_numpy()) < 9e18 / {"s": 1e9, "ms": 1e6}.get(time_unit, 1)
        )
        out = pd.to_datetime(v.where(ok), unit=time_unit, errors="coerce")
    elif pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = s
        if getattr(s.dtype, "tz", None) is not None:
            out = s.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        try:
            out = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError):
            out = pd.Series([_parse_one(v) for v in s], index=s.index, dtype="datetime64[ns, UTC]")
        out = out.dt.tz_localize(None)
    return _as_ns(out)


_NS_MIN, _NS_MAX = pd.Timestamp.min, pd.Timestamp.max


def _as_ns(out: pd.Series) -> pd.Series:
    """datetime64[ns], values outside its range (years before 1677 or after 2262) made NaT."""
    if out.dtype != "datetime64[ns]":
        ok = ((out >= _NS_MIN) & (out <= _NS_MAX)).to_numpy(dtype=bool, na_value=False)
        out = out.where(ok)
    return out.astype("datetime64[ns]")


def _parse_one(v):
    try:
        return pd.to_datetime(v, utc=True)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _to_str(s: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return s  # already a string dtype (pandas' str or dask's string[pyarrow]): keep it
    return s.astype("str").where(s.notna())  # keep missing values missing


def coerce_frame(df: pd.DataFrame, plan: dict, time_unit: str | None = None) -> pd.DataFrame:
    """Coerce one pandas partition to the targets of :func:`plan_coercion` (unparseable -> missing)."""
    out = {}
    for col in df.columns:
        s, target = df[col], plan.get(col)
        if target == "int":
            s = _to_int(s)
        elif target == "label" and (
            pd.api.types.is_bool_dtype(s.dtype)
            or (
                pd.api.types.is_integer_dtype(s.dtype)
                and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype)
            )
        ):
            s = s.astype("int64")  # 0/1 checked by validate
        elif target in ("float", "label"):
            s = _to_float(s)
        elif target in ("datetime", "epoch"):
            s = _to_datetime(s, target, time_unit)
        elif target == "str":
            s = _to_str(s)
        out[col] = s
    return pd.DataFrame(out, index=df.index)


def _meta_for(meta: pd.DataFrame, plan: dict, time_unit) -> pd.DataFrame:
    return coerce_frame(meta.iloc[:0], plan, time_unit)


def coerce(ddf: dd.DataFrame, schema: S.TableSchema, *, time_unit: str | None = None) -> dd.DataFrame:
    """Coerce the canonical columns of ``ddf`` to their kinds, lazily, partition by partition.

    Integer ids stay int64 when stored as numpy integers and become nullable ``Int64`` when the source
    may hold missing or unparseable values (floats, strings),
    numbers ``float64``, timestamps ``datetime64[ns]`` (timezone-aware ones converted to UTC), labels
    int64 when stored as integers or booleans, else ``float64`` (0/1 checked by :func:`validate`),
    categories a string dtype. Values that cannot be parsed
    become missing. Other columns pass through unchanged.

    Raises
    ------
    SchemaError
        Before any work, when a required column is missing or a column has the wrong kind.

    Examples
    --------
    >>> import pandas as pd, dask.dataframe as dd
    >>> from daskml_scale.schema import INTERACTIONS
    >>> df = pd.DataFrame({"user_id": [1, 2], "item_id": [3.0, None], "weight": ["0.5", "x"]})
    >>> coerce(dd.from_pandas(df, npartitions=1), INTERACTIONS).compute()  # small: example rows
       user_id  item_id  weight
    0        1        3     0.5
    1        2     <NA>     NaN
    """
    plan = plan_coercion(ddf.dtypes, schema, time_unit=time_unit)
    meta = _meta_for(ddf._meta, plan, time_unit)
    return ddf.map_partitions(coerce_frame, plan, time_unit, meta=meta, enforce_metadata=False)


def _infer_format(url: str, format: str | None) -> str:
    if format is not None:
        if format not in ("parquet", "csv"):
            raise ParameterError(
                f"The 'format' parameter must be one of {{'parquet', 'csv'}}. Got {format!r}."
            )
        return format
    u = str(url).lower().rstrip("/")
    if any(u.endswith(x) for x in (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst", ".tsv")):
        return "csv"
    return "parquet"


def _check_mapping(columns, present, url):
    if columns is None:
        return {}
    if not isinstance(columns, dict):
        raise ParameterError(
            f"The 'columns' parameter must be a dict from your column names to canonical names. Got {columns!r}."
        )
    absent = [k for k in columns if k not in present]
    if absent:
        raise SchemaError(
            f"Column(s) {absent} named in columns= are not in {url}; it has {sorted(present)}. "
            "Fix the mapping's keys (your names) to match the file.",
            column=absent[0],
        )
    return dict(columns)


def read_table(
    url,
    schema: S.TableSchema,
    *,
    format: str | None = None,
    columns: dict | None = None,
    storage_options: dict | None = None,
    time_unit: str | None = None,
    blocksize: str | int | None = "64MiB",
    **read_kwargs,
) -> dd.DataFrame:
    """Read parquet or CSV from any fsspec URL into a canonical, coerced Dask DataFrame.

    See :func:`read_transactions`; ``schema`` picks the table.
    """
    fmt = _infer_format(url, format)
    so = storage_options or {}
    if fmt == "parquet":
        ddf = read_parquet(url, storage_options=so, **read_kwargs)
        mapping = _check_mapping(columns, list(ddf.columns), url)
        ddf = ddf.rename(columns=mapping) if mapping else ddf
        return coerce(ddf, schema, time_unit=time_unit)
    # CSV: infer dtypes from dask's sample, then read the canonical columns as strings and coerce them
    # per partition, so a stray value later in the file becomes a counted missing value, not a crash.
    kw = {"blocksize": blocksize, "storage_options": so, **read_kwargs}
    check_input(url, format="csv", storage_options=so)
    probe = dd.read_csv(url, **kw)
    mapping = _check_mapping(columns, list(probe.columns), url)
    inv = {v: k for k, v in mapping.items()}
    dtypes = {mapping.get(c, c): probe.dtypes[c] for c in probe.columns}
    plan = plan_coercion(dtypes, schema, time_unit=time_unit)
    as_str = {inv.get(c, c): "str" for c in plan}
    user_dtype = kw.pop("dtype", None) or {}
    ddf = dd.read_csv(url, dtype={**as_str, **user_dtype}, **kw)
    ddf = ddf.rename(columns=mapping) if mapping else ddf
    meta = _meta_for(ddf._meta, plan, time_unit)
    return ddf.map_partitions(coerce_frame, plan, time_unit, meta=meta, enforce_metadata=False)


def read_transactions(
    url,
    *,
    format: str | None = None,
    columns: dict | None = None,
    storage_options: dict | None = None,
    time_unit: str | None = None,
    **read_kwargs,
) -> dd.DataFrame:
    """Read transactions (parquet or CSV) from a local path or any fsspec URL, in the canonical schema.

    Parameters
    ----------
    url : str or path-like
        File, directory or glob: ``data/tx.csv``, ``s3://bucket/tx/``, ``gs://b/tx/*.parquet``.
    format : {"parquet", "csv"}, optional
        Default: CSV when the name ends in ``.csv`` (optionally compressed), else parquet.
    columns : dict, optional
        Your column names -> canonical names, e.g. ``{"txn": "transaction_id", "ts": "timestamp"}``.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint).
    time_unit : {"s", "ms", "us", "ns"}, optional
        Read a numeric ``timestamp`` as that unit since 1970 (refused without it).
    **read_kwargs
        Passed to ``dask.dataframe.read_parquet`` / ``read_csv``.

    Returns
    -------
    dask.dataframe.DataFrame
        Canonical names and dtypes (see :func:`coerce`); other columns pass through. Lazy.

    Raises
    ------
    SchemaError
        Before reading any data: a mapped column absent, a required column missing, a wrong kind.

    Examples
    --------
    >>> from daskml_scale.data import read_transactions
    >>> ddf = read_transactions("s3://bank/tx/", columns={"txn": "transaction_id"},
    ...                         storage_options={"anon": False})  # doctest: +SKIP
    """
    return read_table(
        url,
        S.TRANSACTIONS,
        format=format,
        columns=columns,
        storage_options=storage_options,
        time_unit=time_unit,
        **read_kwargs,
    )


def read_interactions(
    url,
    *,
    format: str | None = None,
    columns: dict | None = None,
    storage_options: dict | None = None,
    time_unit: str | None = None,
    **read_kwargs,
) -> dd.DataFrame:
    """Read interactions (user_id, item_id, optional timestamp and weight); as :func:`read_transactions`.

    Examples
    --------
    >>> from daskml_scale.data import read_interactions
    >>> ddf = read_interactions("ratings.csv", columns={"userId": "user_id", "movieId": "item_id",
    ...                         "rating": "weight"}, time_unit="s")  # doctest: +SKIP
    """
    return read_table(
        url,
        S.INTERACTIONS,
        format=format,
        columns=columns,
        storage_options=storage_options,
        time_unit=time_unit,
        **read_kwargs,
    )
