"""Artifacts (models, reports): verified directories of open formats, and the registry of model kinds."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import ArtifactError
from ._base import (
    FORMAT_VERSION,
    JOB_PREFIX,
    MANIFEST,
    _full_url,
    _is_local_fs,
    _json_default,
    atomic_dir,
    filesystem,
    library_versions,
    sha256_file,
)
from ._outputs import _remove_other_jobs


def write_artifact(
    url,
    write_files: Callable[[Path], None],
    *,
    kind: str,
    metadata: dict | None = None,
    storage_options: dict | None = None,
    parts: Callable[[str], dict] | None = None,
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
    parts : callable, optional
        Called with the staging location (a local directory, or the job prefix URL on an object
        store) after ``write_files``; writes further files there from elsewhere (for example model
        blocks written by the workers holding them) and returns ``{relative path: {"sha256",
        "bytes"}}`` for them, which the manifest lists with the others.

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
        job = uuid.uuid4().hex[:16]
        root = posixpath.join(path, f"{JOB_PREFIX}{job}")
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                rel = f.relative_to(tmp).as_posix()
                if rel == MANIFEST:
                    raise ArtifactError(f"{MANIFEST} is reserved for the artifact manifest")
                files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        remote = {}
        if parts is not None:
            try:
                remote = parts(str(tmp) if local else _full_url(fs, root))
            except BaseException:
                if not local:
                    with contextlib.suppress(Exception):
                        fs.rm(root, recursive=True)
                raise
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "metadata": metadata or {},
            "files": dict(sorted((files | remote).items())),
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
