"""Storage: every read and write of daskml-scale, on any fsspec filesystem, with a commit protocol.

Paths are fsspec URLs (a local path, ``file://``, ``s3://``, ``gs://``, ``abfs://``, ``hdfs://``) with
``storage_options`` passed to the filesystem. A reader never sees half an output:

* **Outputs** (scores, clean tables, quarantines, shards, recommendations) are written part by part
  by the tasks that compute them, into a staging place named by a job id. The job commits by
  writing ``_manifest.json`` last: every part with its row count, size and sha256. On a local disk
  the staging place is a temporary sibling directory renamed into place (the parts sit at the top
  of the output); on an object store it is the prefix ``OUT/job-<id>/`` and the manifest, one PUT,
  is the single visible step; the previous job's parts are deleted after it. Our readers read the
  parts the manifest lists and refuse a directory with staged parts but no manifest.
* **Artifacts** (models, reports) are directories of open formats with ``manifest.json`` (kind,
  library versions, sha256 of every file), committed the same way and verified on load. Model
  classes register their kind here (:func:`register_kind`), so :func:`load_model` loads any model
  without the artifact code importing the model classes. Nothing is ever pickled.

Examples
--------
>>> import json, tempfile, pathlib
>>> from daskml_scale.storage import write_artifact, read_artifact
>>> d = pathlib.Path(tempfile.mkdtemp()) / "model"
>>> def write(tmp):
...     (tmp / "params.json").write_text(json.dumps({"alpha": 1.0}))
>>> _ = write_artifact(d, write, kind="example", metadata={"alpha": 1.0})
>>> read_artifact(d, kind="example")["metadata"]
{'alpha': 1.0}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

from .errors import ArtifactError, DaskMLScaleError, InputError, ParameterError

__all__ = [
    "Staging",
    "atomic_dir",
    "check_input",
    "committed",
    "filesystem",
    "library_versions",
    "load_model",
    "open_artifact",
    "output_files",
    "parse_storage_options",
    "read_artifact",
    "read_manifest",
    "read_parquet",
    "register_kind",
    "sha256_file",
    "write_artifact",
    "write_json",
    "write_json_atomic",
    "write_parquet",
]

MANIFEST = "manifest.json"  # artifacts
OUTPUT_MANIFEST = "_manifest.json"  # outputs (the underscore keeps parquet readers from reading it)
FORMAT_VERSION = 1
JOB_PREFIX = "job-"
_LIBRARIES = (
    "daskml-scale",
    "dask",
    "distributed",
    "dask-ml",
    "xgboost",
    "scikit-learn",
    "implicit",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
)


def filesystem(url, storage_options: dict | None = None):
    """The fsspec filesystem and the path on it for ``url`` (a local path or any fsspec URL).

    Examples
    --------
    >>> fs, path = filesystem("/tmp/out")
    >>> path, _is_local_fs(fs)
    ('/tmp/out', True)
    """
    import fsspec

    if isinstance(url, Path):
        url = str(url)
    if not isinstance(url, str):
        raise ParameterError(f"Expected a path or URL string, got {type(url).__name__}: {url!r}.")
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/") or path


def _is_local_fs(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


def same_place(a, b) -> bool:
    """True when two output locations name the same directory (resolved locally, as text remotely)."""
    if _is_local(a) and _is_local(b):
        return (
            Path(str(a).removeprefix("file://")).resolve() == Path(str(b).removeprefix("file://")).resolve()
        )
    return str(a).rstrip("/") == str(b).rstrip("/")


def _full_url(fs, path: str) -> str:
    """A URL that names ``path`` on ``fs`` again (with its protocol) for readers such as dask's."""
    return path if _is_local_fs(fs) else fs.unstrip_protocol(path)


def parse_storage_options(pairs: list[str] | None) -> dict:
    """``["key=value", ...]`` (the CLI's repeated ``--storage-option``) as a dict for fsspec.

    Values are parsed as JSON when they are JSON (numbers, booleans, objects), else kept as text;
    dotted keys nest (``client_kwargs.endpoint_url=http://...``).

    Examples
    --------
    >>> parse_storage_options(["anon=false", "client_kwargs.endpoint_url=http://127.0.0.1:9000"])
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
    """
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParameterError(f"--storage-option takes KEY=VALUE; got {pair!r}.")
        key, value = pair.split("=", 1)
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        d = out
        *parents, leaf = key.strip().split(".")
        for k in parents:
            d = d.setdefault(k, {})
        d[leaf] = v
    return out


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path`` in one rename.

    On error the temporary directory is removed and ``path`` is left as it was. An existing
    ``path`` is moved aside first and deleted only after the new one is in place. Local disks only:
    :func:`committed` does the same on any filesystem.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with atomic_dir(out) as tmp:
    ...     _ = (tmp / "a.txt").write_text("hello")
    >>> (out / "a.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = path.parent / f".{path.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{token}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The commit protocol


def _parquet_bytes(df, schema=None) -> tuple[bytes, int]:
    """One frame as parquet bytes (pyarrow, snappy); dictionary encoding only for strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    strings = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
    ]
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, use_dictionary=strings or False)
    return buf.getvalue().to_pybytes(), table.num_rows


@dataclass(frozen=True)
class PartWriter:
    """What a task needs to write parts of a staged output: small, serialisable, shipped to workers.

    ``write_parquet(df, name)`` and ``write_bytes(data, name)`` write one part under the staging
    place and return its manifest record (``path``, ``rows``, ``bytes``, ``sha256``), computed from
    the bytes in memory: no second read.
    """

    fs: object
    root: str  # where the parts go on fs (the staging place)
    prefix: str  # their path relative to the output, as recorded in the manifest

    def write_bytes(self, data: bytes, name: str, rows: int | None = None) -> dict:
        path = posixpath.join(self.root, name)
        if _is_local_fs(self.fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        else:
            self.fs.pipe_file(path, data)
        return {
            "path": self.prefix + name,
            "rows": rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def write_parquet(self, df, name: str, schema=None) -> dict:
        data, rows = _parquet_bytes(df, schema)
        return self.write_bytes(data, name, rows)


@dataclass
class Staging:
    """A staged output (from :func:`committed`): write parts with ``writer``, record them with
    ``add``; the manifest that commits them is written when the ``with`` block ends without error."""

    url: str
    fs: object
    path: str
    job_id: str
    writer: PartWriter
    local_tmp: Path | None = None
    records: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def add(self, records) -> None:
        """Record written parts: dicts, or a DataFrame of them (as returned by tasks)."""
        import pandas as pd

        if isinstance(records, pd.DataFrame):
            records = records.to_dict("records")
        elif isinstance(records, dict):
            records = [records]
        for r in records:
            rows = r.get("rows")
            self.records.append(
                {
                    "path": str(r["path"]),
                    "rows": None if rows is None or rows != rows else int(rows),
                    "bytes": int(r["bytes"]),
                    "sha256": str(r["sha256"]),
                }
            )

    @property
    def rows(self) -> int:
        """Rows in the parquet parts recorded so far."""
        return sum(r["rows"] or 0 for r in self.records if r["path"].endswith(".parquet"))

    def rows_in(self, startswith: str) -> int:
        """Rows in the recorded parquet parts whose name (after the job prefix) starts with ``startswith``."""
        n = len(self.writer.prefix)
        return sum(
            r["rows"] or 0
            for r in self.records
            if r["path"].endswith(".parquet") and r["path"][n:].startswith(startswith)
        )

    def _manifest(self) -> dict:
        return {
            "format": "daskml-scale-output",
            "format_version": FORMAT_VERSION,
            "job_id": self.job_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "metadata": self.metadata,
            "rows": self.rows,
            "parts": sorted(self.records, key=lambda r: r["path"]),
        }


@contextlib.contextmanager
def committed(url, storage_options: dict | None = None) -> Iterator[Staging]:
    """Stage an output at ``url`` and commit it when the block ends: the commit protocol.

    Tasks write parts with ``staging.writer`` (a :class:`PartWriter`) and their records are added
    with ``staging.add``. On success ``_manifest.json`` is written last; on a local disk the staged
    directory then replaces ``url`` in one rename, on an object store the manifest PUT is the one
    visible step and the previous job's parts are deleted after it. On error the staged parts are
    removed (best effort) and the previous output is left exactly as it was.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> out = tempfile.mkdtemp() + "/out"
    >>> with committed(out) as st:
    ...     st.add(st.writer.write_parquet(pd.DataFrame({"a": [1, 2]}), "part.000000.parquet"))
    >>> read_manifest(out)["rows"]
    2
    """
    url = os.fspath(url) if isinstance(url, os.PathLike) else url
    fs, path = filesystem(url, storage_options)
    job = uuid.uuid4().hex[:16]
    if _is_local_fs(fs):
        with atomic_dir(path) as tmp:
            st = Staging(url, fs, path, job, PartWriter(fs, str(tmp), ""), local_tmp=tmp)
            yield st
            (tmp / OUTPUT_MANIFEST).write_text(
                json.dumps(st._manifest(), indent=2, sort_keys=True, default=_json_default) + "\n"
            )
        return
    prefix = f"{JOB_PREFIX}{job}/"
    st = Staging(url, fs, path, job, PartWriter(fs, posixpath.join(path, prefix.rstrip("/")), prefix))
    try:
        yield st
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(posixpath.join(path, prefix.rstrip("/")), recursive=True)
        raise
    manifest = json.dumps(st._manifest(), indent=2, sort_keys=True, default=_json_default) + "\n"
    fs.pipe_file(posixpath.join(path, OUTPUT_MANIFEST), manifest.encode())
    _remove_other_jobs(fs, path, keep=prefix.rstrip("/"))


def _remove_other_jobs(fs, path: str, keep: str) -> None:
    """After a commit: delete earlier jobs' parts (committed before, or abandoned by a crash)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in fs.ls(path, detail=False, refresh=True):
            name = posixpath.basename(entry.rstrip("/"))
            if name.startswith(JOB_PREFIX) and name != keep:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(entry, recursive=True)


def read_manifest(url, storage_options: dict | None = None) -> dict | None:
    """The ``_manifest.json`` of a committed output, or None when ``url`` holds none.

    Raises :class:`InputError` for staged parts without a manifest (a job that never committed).
    """
    fs, path = filesystem(url, storage_options)
    try:
        raw = fs.cat_file(posixpath.join(path, OUTPUT_MANIFEST))
    except (FileNotFoundError, NotADirectoryError):
        if fs.isdir(path) and any(
            posixpath.basename(p.rstrip("/")).startswith(JOB_PREFIX) for p in fs.ls(path, detail=False)
        ):
            raise InputError(
                f"{url} holds staged parts of a job that never committed (no {OUTPUT_MANIFEST}): the "
                "job failed or is still running. Rerun it, or wait for it to finish."
            ) from None
        return None
    return json.loads(raw)


def output_files(url, storage_options: dict | None = None, *, startswith: str = "") -> list[str] | None:
    """URLs of the parquet parts of the committed output at ``url`` (None when not our output)."""
    m = read_manifest(url, storage_options)
    if m is None:
        return None
    fs, path = filesystem(url, storage_options)
    return [
        _full_url(fs, posixpath.join(path, p["path"]))
        for p in m["parts"]
        if p["path"].endswith(".parquet") and posixpath.basename(p["path"]).startswith(startswith)
    ]


def write_parquet(ddf, url, *, storage_options: dict | None = None, client=None, metadata=None) -> str:
    """Write a Dask DataFrame as parquet with the commit protocol; one pass, one task per partition.

    Each task writes ``part.NNNNNN.parquet`` (partition number, rows in partition order) and
    returns its record; the manifest with every part's rows and sha256 commits the output. A rerun
    into the same ``url`` replaces the previous output with identical parts, never appending.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    url : str or path-like
        Local directory or fsspec URL (``s3://bucket/scores/2025-02-01``).
    storage_options : dict, optional
        Passed to the filesystem (credentials, endpoint).
    client : distributed.Client, optional
        Client to compute on; None uses the default.
    metadata : dict, optional
        JSON-serialisable facts stored in the manifest.

    Returns
    -------
    str
        ``url``.

    Examples
    --------
    >>> import tempfile, pandas as pd, dask.dataframe as dd
    >>> out = tempfile.mkdtemp() + "/out"
    >>> _ = write_parquet(dd.from_pandas(pd.DataFrame({"a": range(10)}), npartitions=2), out)
    >>> read_parquet(out).a.sum().compute()
    np.int64(45)
    """
    from .cluster import compute

    url = os.fspath(url) if isinstance(url, os.PathLike) else url
    with committed(url, storage_options) as st:
        st.metadata.update(metadata or {})
        records = write_parts(ddf, st.writer, "part")
        (recs,) = compute(records, client=client)  # small: one record per partition
        st.add(recs)
    return url


def record_meta():
    """The (empty) frame of part records that writer tasks return."""
    import pandas as pd

    return pd.DataFrame(
        {
            "path": pd.Series([], dtype=object),
            "rows": pd.Series([], dtype="int64"),
            "bytes": pd.Series([], dtype="int64"),
            "sha256": pd.Series([], dtype=object),
        }
    )


def _schema_of(meta):
    """The pyarrow schema of a frame's meta, or None when a column's type is only known from data."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(meta, preserve_index=False)
    return None if any(pa.types.is_null(f.type) for f in schema) else schema


def _write_part(df, writer: PartWriter, stem: str, schema, partition_info=None):
    import pandas as pd

    i = 0 if partition_info is None else int(partition_info["number"])
    rec = writer.write_parquet(df.reset_index(drop=True), f"{stem}.{i:06d}.parquet", schema)
    return pd.DataFrame([rec]).astype({"rows": "int64", "bytes": "int64"})


def write_parts(ddf, writer: PartWriter, stem: str = "part"):
    """Lazy: every partition of ``ddf`` written as ``STEM.NNNNNN.parquet``; a frame of records."""
    return ddf.map_partitions(_write_part, writer, stem, _schema_of(ddf._meta), meta=record_meta())


def write_json(url, obj, *, storage_options: dict | None = None) -> str:
    """Write ``obj`` as JSON to the file ``url`` in one step (a rename locally, one PUT remotely)."""
    fs, path = filesystem(url, storage_options)
    data = (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()
    if _is_local_fs(fs):
        write_json_atomic(path, obj)
    else:
        fs.pipe_file(path, data)
    return url


_DATA_EXTENSIONS = {
    "parquet": (".parquet", ".parq", ".pq"),
    "csv": (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst"),
}


def _original_message(e: BaseException) -> str:
    """The useful line of an exception: dask wraps reader errors in 'Original Message: ...'."""
    msg = str(e)
    if "Original Message:" in msg:
        msg = msg.split("Original Message:", 1)[1]
    return " ".join(msg.split())


def check_input(url, *, format: str = "parquet", storage_options: dict | None = None) -> None:
    """Raise :class:`InputError` unless ``url`` names readable data files; costs one listing, no reads.

    ``url`` is a file, a directory (searched recursively for ``format``'s file extensions) or a glob,
    on any fsspec filesystem, or a list of those. Nothing is read: a corrupt file is reported by
    :func:`read_parquet` when its footer is read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> missing = pathlib.Path(tempfile.mkdtemp()) / "absent"
    >>> check_input(missing)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    daskml_scale.errors.InputError: Input ...absent does not exist. ...
    """
    import fsspec

    if isinstance(url, list | tuple):
        for u in url:
            check_input(u, format=format, storage_options=storage_options)
        return
    url = os.fspath(url)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    exts = _DATA_EXTENSIONS[format]
    if any(ch in path for ch in "*?["):
        files = fs.glob(path)
        if not files:
            raise InputError(
                f"Input {url} matches no files. Check the pattern, or give the directory itself."
            )
    elif not fs.exists(path):
        raise InputError(
            f"Input {url} does not exist. Check the path: give a {format} file, a directory of {format} "
            "files, or a glob such as DIR/*.parquet."
        )
    elif fs.isdir(path):
        files = [f for f in fs.find(path) if f.lower().endswith(exts)]
        if not files:
            raise InputError(
                f"Input {url} is a directory with no {format} files (names ending in {', '.join(exts)}). "
                "Point to the directory that holds the data files, or write them there first."
            )
    else:
        files = [path]
    if format == "parquet":
        _check_parquet_footers(fs, files, url)


def _check_parquet_footers(fs, files: list[str], url) -> None:
    """Every parquet file ends with the magic bytes ``PAR1``: one 4-byte range read per file (batched
    by fsspec on object stores) finds a truncated or foreign file by name before any task runs."""
    tails = fs.cat_ranges(files, [-4] * len(files), [None] * len(files), on_error="return")
    bad = [f for f, t in zip(files, tails, strict=True) if not isinstance(t, bytes) or t != b"PAR1"]
    if bad:
        raise InputError(
            f"Cannot read {len(bad)} file(s) of input {url} as parquet (no parquet footer), first: {bad[0]}. "
            "The file is truncated, still being written, or not parquet: remove or replace it (read CSV "
            "with format='csv')."
        )


def read_parquet(url, *, storage_options: dict | None = None, **kwargs):
    """``dask.dataframe.read_parquet`` with the input checked first and read errors named by path.

    An output of this library (a directory with ``_manifest.json``) is read from exactly the parts
    its manifest lists, so parts of a job that has not committed are never seen; staged parts with
    no manifest are refused. A missing path, a directory without parquet files or a file that is not
    parquet raises :class:`InputError` naming the path and the fix, before any task runs. Reads the
    footers only (one listing and one metadata read); the data are read lazily, partition by
    partition.

    Examples
    --------
    >>> from daskml_scale.storage import read_parquet
    >>> ddf = read_parquet("s3://bucket/transactions/", storage_options={"anon": False})  # doctest: +SKIP
    """
    import dask.dataframe as dd

    target = url
    if not isinstance(url, list | tuple):
        files = output_files(url, storage_options)
        if files is not None:
            if not files:
                raise InputError(f"{url} is a committed output with no parquet parts.")
            target = files
    if target is url:
        check_input(url, format="parquet", storage_options=storage_options)
    try:
        return dd.read_parquet(target, storage_options=storage_options or {}, **kwargs)
    except DaskMLScaleError:
        raise
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(
            f"Cannot read {os.fspath(url) if not isinstance(url, list | tuple) else url} as parquet: "
            f"{_original_message(e)} Check that the path holds parquet files (not CSV, not a partial "
            "copy); read CSV with format='csv'."
        ) from e


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries an artifact depends on (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_artifact(
    url,
    write_files: Callable[[Path], None],
    *,
    kind: str,
    metadata: dict | None = None,
    storage_options: dict | None = None,
) -> str:
    """Write an artifact directory with the commit protocol and a manifest of versions and sha256.

    The files are written into a local temporary directory by ``write_files``, then committed: on a
    local disk the directory replaces ``url`` in one rename; on an object store the files are uploaded
    under ``URL/job-<id>/`` and ``manifest.json``, uploaded last, commits them.

    Parameters
    ----------
    url : str or path-like
        Destination directory or fsspec URL; replaced if it exists.
    write_files : callable
        Called with the temporary directory; writes the artifact's files (open formats only).
    kind : str
        What the artifact is (``"XGBoostFraudClassifier"``, ``"ALSRecommender"``, ...); checked on load.
    metadata : dict, optional
        JSON-serialisable parameters, schema, metrics.
    storage_options : dict, optional
        Passed to the filesystem.

    Returns
    -------
    str or pathlib.Path
        ``url`` (a Path for a local path).
    """
    fs, path = filesystem(os.fspath(url) if isinstance(url, os.PathLike) else url, storage_options)
    local = _is_local_fs(fs)
    with atomic_dir(path) if local else tempfile.TemporaryDirectory(prefix="dms-artifact-") as tmp:
        tmp = Path(tmp)
        write_files(tmp)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                rel = f.relative_to(tmp).as_posix()
                if rel == MANIFEST:
                    raise ArtifactError(f"{MANIFEST} is reserved for the artifact manifest")
                files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        job = uuid.uuid4().hex[:16]
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "metadata": metadata or {},
            "files": files,
        }
        text = (
            json.dumps(
                manifest | ({} if local else {"root": f"{JOB_PREFIX}{job}/"}),
                indent=2,
                sort_keys=True,
                default=_json_default,
            )
            + "\n"
        )
        if local:
            (tmp / MANIFEST).write_text(text)
        else:
            root = posixpath.join(path, f"{JOB_PREFIX}{job}")
            try:
                fs.put([str(tmp / rel) for rel in files], [posixpath.join(root, rel) for rel in files])
            except BaseException:
                with contextlib.suppress(Exception):
                    fs.rm(root, recursive=True)
                raise
            fs.pipe_file(posixpath.join(path, MANIFEST), text.encode())
            _remove_other_jobs(fs, path, keep=f"{JOB_PREFIX}{job}")
    return Path(path) if local and not str(url).startswith("file://") else url


def _load_manifest(fs, path: str, url) -> dict:
    try:
        raw = fs.cat_file(posixpath.join(path, MANIFEST))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ArtifactError(f"{url} is not a daskml-scale artifact: {MANIFEST} is missing.") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{posixpath.join(str(url), MANIFEST)} is not valid JSON: {e}") from None


def _check_kind(manifest, kind, url) -> None:
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(
            f"{url} holds a {manifest.get('kind')!r} artifact, not a {kind!r}. Load it with the "
            "matching class."
        )


def _verify_dir(local: Path, manifest: dict, url, *, extra_check: bool) -> None:
    bad = []
    for rel, info in manifest.get("files", {}).items():
        f = local / rel
        if not f.is_file():
            bad.append(f"{rel}: missing")
        elif sha256_file(f) != info["sha256"]:
            bad.append(f"{rel}: sha256 mismatch")
    if extra_check:
        listed = set(manifest.get("files", {})) | {MANIFEST}
        extra = [
            f.relative_to(local).as_posix()
            for f in local.rglob("*")
            if f.is_file() and f.relative_to(local).as_posix() not in listed
        ]
        bad += [f"{rel}: not in the manifest" for rel in sorted(extra)]
    if bad:
        raise ArtifactError(
            f"{url} failed verification ({len(bad)} file(s)): "
            + "; ".join(bad[:10])
            + ". The artifact was modified or is incomplete: save it again."
        )


def read_artifact(url, *, kind: str | None = None, verify: bool = True, storage_options=None) -> dict:
    """Read an artifact's manifest, verifying the sha256 of every file it lists.

    Parameters
    ----------
    url : str or path-like
        Local directory or fsspec URL.
    kind : str, optional
        Expected kind; a different one raises :class:`~daskml_scale.errors.ArtifactError`.
    verify : bool
        Check each file's sha256 (default True). On an object store this downloads the files:
        use :func:`open_artifact` to read them too.
    storage_options : dict, optional

    Returns
    -------
    dict
        The manifest: ``kind``, ``versions``, ``metadata``, ``files``.

    Raises
    ------
    ArtifactError
        Missing directory or manifest, wrong kind, missing file, checksum mismatch, or (locally) an
        unexpected file beside the listed ones.
    """
    if verify:
        with open_artifact(url, kind=kind, storage_options=storage_options) as (manifest, _):
            return manifest
    fs, path = filesystem(os.fspath(url) if isinstance(url, os.PathLike) else url, storage_options)
    manifest = _load_manifest(fs, path, url)
    _check_kind(manifest, kind, url)
    return manifest


@contextlib.contextmanager
def open_artifact(url, *, kind: str | None = None, storage_options=None) -> Iterator[tuple[dict, Path]]:
    """Yield ``(manifest, local_dir)`` of a verified artifact; remote ones are downloaded to a
    temporary directory (removed after the block), every file checked against its sha256."""
    fs, path = filesystem(os.fspath(url) if isinstance(url, os.PathLike) else url, storage_options)
    manifest = _load_manifest(fs, path, url)
    _check_kind(manifest, kind, url)
    if _is_local_fs(fs):
        local = Path(path) / manifest.get("root", "")
        _verify_dir(local, manifest, url, extra_check=not manifest.get("root"))
        yield manifest, local
        return
    root = posixpath.join(path, manifest.get("root", ""))
    with tempfile.TemporaryDirectory(prefix="dms-artifact-") as tmp:
        rels = list(manifest.get("files", {}))
        try:
            fs.get([posixpath.join(root, r) for r in rels], [os.path.join(tmp, r) for r in rels])
        except FileNotFoundError as e:
            raise ArtifactError(f"{url}: a file of the artifact is missing ({e}). Save it again.") from None
        _verify_dir(Path(tmp), manifest, url, extra_check=False)
        yield manifest, Path(tmp)


# ------------------------------------------------------------------------------------------------
# Model kinds

_KINDS: dict[str, tuple[type, Callable]] = {}
# packages whose import registers the library's model kinds (imported on first load_model)
_MODEL_PACKAGES = ("daskml_scale.fraud", "daskml_scale.recommend", "daskml_scale.compression")


def register_kind(cls: type, load: Callable[[type, dict, Path], object], *, kind: str | None = None) -> None:
    """Register a model class so that :func:`load_model` can load its artifacts.

    ``load(cls, manifest, local_dir)`` builds the model from a verified artifact's files. The kind
    is the class name unless given.

    Examples
    --------
    >>> class Echo:
    ...     pass
    >>> register_kind(Echo, lambda cls, manifest, d: cls())
    >>> sorted(k for k in _KINDS if k == "Echo")
    ['Echo']
    """
    _KINDS[kind or cls.__name__] = (cls, load)


def kind_class(kind: str) -> type:
    """The registered class of ``kind``."""
    if kind not in _KINDS:
        _import_model_packages()
    if kind not in _KINDS:
        raise ArtifactError(f"No model class is registered for artifacts of kind {kind!r}.")
    return _KINDS[kind][0]


def _import_model_packages() -> None:
    import importlib

    for name in _MODEL_PACKAGES:
        importlib.import_module(name)


def load_model(url, *, kinds=None, storage_options: dict | None = None):
    """Load any model saved by this library from a directory or URL (files verified first).

    Parameters
    ----------
    url : str or path-like
    kinds : collection of str, optional
        Accept only these kinds (a fraud scoring job accepts fraud classifiers only).
    storage_options : dict, optional

    Examples
    --------
    >>> from daskml_scale.storage import load_model
    >>> model = load_model("s3://models/fraud/2025-02", storage_options={"anon": False})  # doctest: +SKIP
    """
    with open_artifact(url, storage_options=storage_options) as (manifest, local):
        kind = manifest.get("kind")
        if kind not in _KINDS:
            _import_model_packages()
        if kind not in _KINDS or (kinds is not None and kind not in kinds):
            accepted = sorted(kinds) if kinds is not None else sorted(_KINDS)
            wanted = repr(accepted[0]) if len(accepted) == 1 else f"one of {accepted}"
            raise ArtifactError(
                f"{url} holds a {kind!r} artifact, not a {wanted}. Load it with the matching class."
            )
        cls, load = _KINDS[kind]
        return load(cls, manifest, local)
