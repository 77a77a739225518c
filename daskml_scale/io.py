"""Atomic outputs and artifact directories.

Outputs are written to a temporary sibling directory, then renamed into place, so a reader never
sees half an output and a rerun after a crash replaces, never duplicates. Artifacts (models, feature
specifications, id maps) are directories of open formats with a ``manifest.json`` that records the
library versions and the sha256 of every file; loading verifies them. Nothing is ever pickled.

Examples
--------
>>> import json, tempfile, pathlib
>>> from daskml_scale.io import write_artifact, read_artifact
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
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

from .errors import ArtifactError, DaskMLScaleError, InputError

__all__ = [
    "atomic_dir",
    "check_input",
    "library_versions",
    "read_artifact",
    "read_parquet",
    "sha256_file",
    "write_artifact",
    "write_json_atomic",
    "write_parquet",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
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


def _is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path`` in one rename.

    On error the temporary directory is removed and ``path`` is left as it was. An existing
    ``path`` is moved aside first and deleted only after the new one is in place.

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
            raise InputError(f"Input {url} matches no files. Check the pattern, or give the directory itself.")
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

    A missing path, a directory without parquet files or a file that is not parquet raises
    :class:`InputError` naming the path and the fix, before any task runs. Reads the footers only
    (one listing and one metadata read); the data are read lazily, partition by partition.

    Examples
    --------
    >>> from daskml_scale.io import read_parquet
    >>> ddf = read_parquet("transactions/")  # doctest: +SKIP
    """
    import dask.dataframe as dd

    check_input(url, format="parquet", storage_options=storage_options)
    try:
        return dd.read_parquet(url, storage_options=storage_options or {}, **kwargs)
    except DaskMLScaleError:
        raise
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(
            f"Cannot read {os.fspath(url) if not isinstance(url, list | tuple) else url} as parquet: "
            f"{_original_message(e)} Check that the path holds parquet files (not CSV, not a partial "
            "copy); read CSV with format='csv'."
        ) from e


def write_parquet(ddf, path, *, client=None, name_function=None, **kwargs) -> Path:
    """Write a Dask DataFrame as parquet atomically: to a temporary sibling, then renamed.

    A rerun into the same ``path`` replaces the previous output with identical content (the index is
    not written; file names are ``part.N.parquet`` by partition number), never appending.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    path : str or path-like
        Local directory.
    client : distributed.Client, optional
        Client to compute on; None uses the default.
    **kwargs
        Passed to ``dask.dataframe.to_parquet``.
    """
    from .cluster import compute

    if not _is_local(path):
        raise ArtifactError(
            f"write_parquet writes atomically to local directories only; got {path!r}. Write locally "
            "and copy, or use ddf.to_parquet for object stores (which are not atomic)."
        )
    with atomic_dir(path) as tmp:
        task = ddf.to_parquet(
            str(tmp), write_index=False, compute=False, name_function=name_function, **kwargs
        )
        compute(task, client=client)
    return Path(path)


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
    path: str | os.PathLike,
    write_files: Callable[[Path], None],
    *,
    kind: str,
    metadata: dict | None = None,
) -> Path:
    """Write an artifact directory atomically, with a manifest of versions and sha256 of each file.

    Parameters
    ----------
    path : path-like
        Destination directory; replaced if it exists.
    write_files : callable
        Called with the temporary directory; writes the artifact's files (open formats only).
    kind : str
        What the artifact is (``"XGBoostFraudClassifier"``, ``"ALSRecommender"``, ...); checked on load.
    metadata : dict, optional
        JSON-serialisable parameters, schema, metrics.

    Returns
    -------
    pathlib.Path
    """
    with atomic_dir(path) as tmp:
        write_files(tmp)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                rel = f.relative_to(tmp).as_posix()
                if rel == MANIFEST:
                    raise ArtifactError(f"{MANIFEST} is reserved for the artifact manifest")
                files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "metadata": metadata or {},
            "files": files,
        }
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n"
        )
    return Path(path)


def read_artifact(path: str | os.PathLike, *, kind: str | None = None, verify: bool = True) -> dict:
    """Read an artifact's manifest, verifying the sha256 of every file it lists.

    Parameters
    ----------
    path : path-like
    kind : str, optional
        Expected kind; a different one raises :class:`~daskml_scale.errors.ArtifactError`.
    verify : bool
        Check each file's sha256 (default True).

    Returns
    -------
    dict
        The manifest: ``kind``, ``versions``, ``metadata``, ``files``.

    Raises
    ------
    ArtifactError
        Missing directory or manifest, wrong kind, missing file, checksum mismatch, or an
        unexpected file beside the listed ones.
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not a daskml-scale artifact: {MANIFEST} is missing.")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath} is not valid JSON: {e}") from None
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(
            f"{path} holds a {manifest.get('kind')!r} artifact, not a {kind!r}. Load it with the "
            "matching class."
        )
    if verify:
        bad = []
        for rel, info in manifest.get("files", {}).items():
            f = path / rel
            if not f.is_file():
                bad.append(f"{rel}: missing")
            elif sha256_file(f) != info["sha256"]:
                bad.append(f"{rel}: sha256 mismatch")
        listed = set(manifest.get("files", {})) | {MANIFEST}
        extra = [
            f.relative_to(path).as_posix()
            for f in path.rglob("*")
            if f.is_file() and f.relative_to(path).as_posix() not in listed
        ]
        bad += [f"{rel}: not in the manifest" for rel in sorted(extra)]
        if bad:
            raise ArtifactError(
                f"{path} failed verification ({len(bad)} file(s)): "
                + "; ".join(bad[:10])
                + ". The artifact was modified or is incomplete: save it again."
            )
    return manifest
