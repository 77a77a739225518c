import json

import pandas as pd
import pytest

from daskml_scale import ArtifactError
from daskml_scale.data import make_transactions
from daskml_scale.storage import (
    atomic_dir,
    library_versions,
    read_artifact,
    sha256_file,
    write_artifact,
    write_json_atomic,
    write_parquet,
)


def _files(d):
    """sha256 of every part (the manifest records a job id and a time, so it differs per run)."""
    return {
        p.relative_to(d).as_posix(): sha256_file(p)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "_manifest.json"
    }


def test_atomic_dir_replaces_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError, match="crash"), atomic_dir(out) as tmp:
        (tmp / "a").write_text("half-written")
        raise RuntimeError("crash")
    assert (out / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_parquet_rerun_gives_identical_files(tmp_path):
    ddf = make_transactions(10_000, npartitions=3, seed=2)
    out = tmp_path / "txns"
    write_parquet(ddf, out)
    first = _files(out)
    write_parquet(ddf, out)
    assert _files(out) == first  # same names, same bytes: replaced, not appended
    back = pd.read_parquet(out)
    assert len(back) == 10_000 and back.transaction_id.is_unique


def test_write_parquet_delta_encodes_integers_and_times_and_reads_back_the_same(tmp_path):
    import glob

    import pyarrow.parquet as pq

    ddf = make_transactions(20_000, npartitions=2, seed=3)
    expected = ddf.compute().reset_index(drop=True)
    write_parquet(ddf, tmp_path / "t")
    back = pd.read_parquet(tmp_path / "t").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False, check_categorical=False)
    for c in expected.columns:  # same values and the same numpy kinds (int64 stays int64)
        assert back[c].dtype.kind == expected[c].dtype.kind, c
    meta = pq.ParquetFile(sorted(glob.glob(str(tmp_path / "t" / "*.parquet")))[0]).metadata.row_group(0)
    enc = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    for c in ("transaction_id", "card_id", "merchant_id", "timestamp", "is_fraud"):
        assert "DELTA_BINARY_PACKED" in enc[c], (c, enc[c])
    assert "DELTA_BINARY_PACKED" not in enc["amount"]  # floats stay plain
    # what the encoding is for: the ids that grow along a partition cost a few bits a value
    ids = meta.column(list(enc).index("transaction_id"))
    assert ids.total_compressed_size < 0.05 * 8 * meta.num_rows


def test_write_parquet_on_cluster(client, spread, tmp_path):
    ddf = make_transactions(9_000, npartitions=3, seed=2)
    with spread() as ts:
        write_parquet(ddf, tmp_path / "t", client=client)
    ts.assert_spread()
    assert len(pd.read_parquet(tmp_path / "t")) == 9_000


def test_artifact_roundtrip_and_tamper_detection(tmp_path):
    def write(d):
        (d / "params.json").write_text(json.dumps({"a": 1}))
        (d / "sub").mkdir()
        (d / "sub" / "w.bin").write_bytes(b"\x00\x01")

    path = write_artifact(tmp_path / "m", write, kind="Thing", metadata={"metrics": {"auc": 0.9}})
    manifest = read_artifact(path, kind="Thing")
    assert manifest["metadata"]["metrics"]["auc"] == 0.9
    assert set(manifest["files"]) == {"params.json", "sub/w.bin"}
    assert manifest["versions"]["dask"] == library_versions()["dask"]

    with pytest.raises(ArtifactError, match="'Thing' artifact, not a 'Other'"):
        read_artifact(path, kind="Other")
    (path / "sub" / "w.bin").write_bytes(b"\x00\x02")
    with pytest.raises(ArtifactError, match=r"sub/w.bin: sha256 mismatch"):
        read_artifact(path)
    (path / "sub" / "w.bin").write_bytes(b"\x00\x01")
    (path / "extra.txt").write_text("sneaked in")
    with pytest.raises(ArtifactError, match="extra.txt: not in the manifest"):
        read_artifact(path)
    (path / "extra.txt").unlink()
    (path / "params.json").unlink()
    with pytest.raises(ArtifactError, match="params.json: missing"):
        read_artifact(path)


def test_read_artifact_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        read_artifact(tmp_path)


def test_write_json_atomic(tmp_path):
    import numpy as np

    p = write_json_atomic(tmp_path / "m.json", {"x": np.float64(0.5), "n": np.int64(3)})
    assert json.loads(p.read_text()) == {"n": 3, "x": 0.5}
    assert [q.name for q in tmp_path.iterdir()] == ["m.json"]


def test_artifact_code_imports_no_model_and_kinds_are_registered():
    """Model classes register their kind with storage; the artifact modules import no model class
    (the import circles models <-> _artifacts of fraud/ and recommend/ are gone)."""
    import ast
    import importlib.util

    from daskml_scale import storage

    for mod in ("daskml_scale.fraud._artifacts", "daskml_scale.recommend._artifacts"):
        src = open(importlib.util.find_spec(mod).origin).read()
        imported = {
            n.module or "" for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.level > 0
        }
        assert not imported & {"_xgboost", "_sgd", "_als", "_popularity", "compression"}, (mod, imported)
    storage._import_model_packages()
    assert {
        "XGBoostFraudClassifier",
        "SGDFraudClassifier",
        "ALSRecommender",
        "PopularityRecommender",
        "QuantizedALSRecommender",
    } <= set(storage._KINDS)


def test_load_model_dispatches_on_kind(tmp_path):
    from daskml_scale.recommend import PopularityRecommender
    from daskml_scale.storage import load_model

    inter = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12], "weight": [1.0] * 4})
    model = PopularityRecommender().fit(inter)
    model.save(tmp_path / "pop")
    back = load_model(tmp_path / "pop")
    assert type(back) is PopularityRecommender
    assert back.item_scores_.tolist() == model.item_scores_.tolist()
    with pytest.raises(ArtifactError, match="not a 'XGBoostFraudClassifier'"):
        load_model(tmp_path / "pop", kinds=("XGBoostFraudClassifier",))
