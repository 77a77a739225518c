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

from ._artifacts import (
    _KINDS,
    _import_model_packages,
    kind_class,
    load_model,
    open_artifact,
    read_artifact,
    register_kind,
    write_artifact,
)
from ._base import (
    MANIFEST,
    OUTPUT_MANIFEST,
    _is_local,
    _is_local_fs,
    _json_default,
    atomic_dir,
    filesystem,
    library_versions,
    parse_storage_options,
    same_place,
    sha256_file,
    write_json_atomic,
)
from ._outputs import (
    PartWriter,
    Staging,
    _original_message,
    check_input,
    committed,
    output_files,
    read_manifest,
    read_parquet,
    record_meta,
    write_json,
    write_parquet,
    write_parts,
)

__all__ = [
    "MANIFEST",
    "OUTPUT_MANIFEST",
    "PartWriter",
    "kind_class",
    "record_meta",
    "same_place",
    "write_parts",
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
