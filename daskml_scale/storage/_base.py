"""Filesystems from URLs, local atomic directories, JSON, checksums and library versions."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path

from ..errors import ParameterError

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
    >>> fs, path = filesystem("s3://bucket/scores/", {"anon": True})  # doctest: +SKIP
    >>> fs.protocol, path  # doctest: +SKIP
    (('s3', 's3a'), 'bucket/scores')
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
