"""Outputs and artifacts on an S3-compatible object store: moto's standalone server on 127.0.0.1.

Nothing is mocked: the library talks HTTP to a real S3 server through s3fs, from the client and
from the session LocalCluster's worker processes, exactly as against AWS or MinIO.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from daskml_scale.data import (  # noqa: E402
    clean,
    make_interactions,
    make_transactions,
    read_sharded,
    sharding_info,
    write_sharded,
)
from daskml_scale.errors import ArtifactError, InputError  # noqa: E402
from daskml_scale.fraud import XGBoostFraudClassifier, score  # noqa: E402
from daskml_scale.recommend import ALSRecommender  # noqa: E402
from daskml_scale.storage import (  # noqa: E402
    committed,
    filesystem,
    load_model,
    read_manifest,
    read_parquet,
    write_parquet,
)

pytestmark = pytest.mark.resilience

BUCKET = "dms-test"
FAST = {"learning_rate": 0.3, "n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 4, "n_jobs": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the storage options that reach it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    so = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)  # fmt: skip
    fs, _ = filesystem(f"s3://{BUCKET}", so)
    yield {"so": so, "endpoint": endpoint, "fs": fs}
    server.stop()


@pytest.fixture(scope="module")
def frames():
    with dask.config.set(scheduler="sync"):
        tx = make_transactions(8_000, days=10, npartitions=3, fraud_rate=0.03, seed=5).compute()
    cut = pd.Timestamp("2025-01-09")
    return tx[tx.timestamp < cut].reset_index(drop=True), tx[tx.timestamp >= cut].reset_index(drop=True)


@pytest.fixture(scope="module")
def xgb_model(frames):
    with dask.config.set(scheduler="sync"):
        return XGBoostFraudClassifier(**FAST).fit(frames[0])


def _jobs(fs, url):
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url, detail=False, refresh=True) if "/job-" in p)


def test_score_to_s3_on_cluster_commits_and_rerun_replaces(client, spread, s3, frames, xgb_model, tmp_path):
    train, new = frames
    bad = new.head(3).copy()
    bad["amount"] = np.nan  # planted: quarantined with a reason
    bad["transaction_id"] = bad["transaction_id"] + 10_000_000
    batch = dd.from_pandas(pd.concat([new, bad], ignore_index=True), npartitions=3, sort=False)
    hist = dd.from_pandas(train, npartitions=2, sort=False)
    out, q = f"s3://{BUCKET}/scores/day1", f"s3://{BUCKET}/quarantine/day1"
    with spread() as ts:
        summary = score(
            xgb_model, batch, out=out, quarantine=q, history=hist, storage_options=s3["so"], client=client
        )
    ts.assert_spread("_write_part")  # the parts were written by both workers, straight to S3
    assert summary["rows_scored"] == len(new) and summary["rows_quarantined"] == 3
    # against the same scoring written to a local directory
    local = tmp_path / "scores"
    score(xgb_model, batch, out=local, history=hist, client=client)
    got = read_parquet(out, storage_options=s3["so"]).compute().sort_values("transaction_id")
    exp = pd.read_parquet(local).sort_values("transaction_id")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), exp.reset_index(drop=True))
    quarantined = read_parquet(q, storage_options=s3["so"]).compute()
    assert sorted(quarantined.transaction_id) == sorted(bad.transaction_id)
    assert quarantined["reason"].notna().all()
    manifest = read_manifest(out, s3["so"])
    assert manifest["rows"] == len(new)
    assert [p["sha256"] for p in manifest["parts"]] == [p["sha256"] for p in read_manifest(local)["parts"]]
    first_job = _jobs(s3["fs"], out)
    assert first_job == [f"job-{manifest['job_id']}"]
    # the rerun's parts are identical, under a new job; the old job is gone after the commit
    score(xgb_model, batch, out=out, quarantine=q, history=hist, storage_options=s3["so"], client=client)
    again = read_manifest(out, s3["so"])
    assert again["job_id"] != manifest["job_id"]
    assert [p["sha256"] for p in again["parts"]] == [p["sha256"] for p in manifest["parts"]]
    assert _jobs(s3["fs"], out) == [f"job-{again['job_id']}"]


def test_failed_job_leaves_previous_output_and_readers_ignore_or_refuse_staged_parts(s3):
    so, fs = s3["so"], s3["fs"]
    out = f"s3://{BUCKET}/tables/t"
    ddf = dd.from_pandas(pd.DataFrame({"a": np.arange(100)}), npartitions=4)
    write_parquet(ddf, out, storage_options=so)
    before = read_manifest(out, so)

    class Crash(RuntimeError):
        pass

    with pytest.raises(Crash), committed(out, so) as st:
        st.add(st.writer.write_parquet(pd.DataFrame({"a": [-1]}), "part.000000.parquet"))
        raise Crash("worker lost")
    assert read_manifest(out, so) == before  # the previous output, untouched
    assert _jobs(fs, out) == [f"job-{before['job_id']}"]  # the staged parts were removed
    # a job killed before it could clean up: its parts stay staged, readers ignore them
    fs.pipe_file(f"{BUCKET}/tables/t/job-deadbeef/part.000000.parquet", b"not parquet")
    assert read_parquet(out, storage_options=so).a.sum().compute() == sum(range(100))
    # a prefix with staged parts and no manifest at all is refused, not read
    fs.pipe_file(f"{BUCKET}/tables/u/job-deadbeef/part.000000.parquet", b"not parquet")
    with pytest.raises(InputError, match="never committed"):
        read_parquet(f"s3://{BUCKET}/tables/u", storage_options=so)
    # the next commit clears the dead job's parts
    write_parquet(ddf, out, storage_options=so)
    assert len(_jobs(fs, out)) == 1


def test_clean_and_sharding_on_s3(client, s3):
    so = s3["so"]
    ddf = make_transactions(6_000, days=4, npartitions=3, seed=1)
    raw = ddf.compute()
    raw.loc[raw.index[:5], "amount"] = -1.0  # planted: negative amounts
    ddf = dd.from_pandas(raw, npartitions=3, sort=False)
    res = clean(
        ddf,
        "transactions",
        out=f"s3://{BUCKET}/clean/t",
        quarantine_out=f"s3://{BUCKET}/clean/q",
        storage_options=so,
        client=client,
    )
    assert res.report.rows_in == 6_000 == res.report.rows_out + res.report.rows_quarantined
    assert res.report.rows_quarantined >= 5
    assert len(res.clean.compute()) == res.report.rows_out
    assert read_manifest(f"s3://{BUCKET}/clean/t", so)["rows"] == res.report.rows_out

    url = f"s3://{BUCKET}/shards/tx"
    info = write_sharded(ddf, url, key="card_id", buckets=4, by_day=True, storage_options=so, client=client)
    assert sharding_info(url, storage_options=so) == info
    back = read_sharded(url, storage_options=so).compute()
    assert len(back) == 6_000 and back.transaction_id.is_unique
    per_bucket = read_sharded(url, storage_options=so).map_partitions(lambda d: d.card_id.nunique()).compute()
    assert per_bucket.sum() == raw.card_id.nunique()  # every card in exactly one bucket
    day = str(raw.timestamp.min().date())
    one_day = read_sharded(url, days=[day], storage_options=so).compute()
    assert len(one_day) == int((raw.timestamp.dt.strftime("%Y-%m-%d") == day).sum())


def test_models_save_and_load_on_s3_verified(s3, frames, xgb_model):
    so, fs = s3["so"], s3["fs"]
    url = f"s3://{BUCKET}/models/fraud"
    xgb_model.save(url, storage_options=so)
    loaded = load_model(url, storage_options=so)
    assert isinstance(loaded, XGBoostFraudClassifier)
    new = frames[1].head(500)
    np.testing.assert_array_equal(loaded.predict_proba(new), xgb_model.predict_proba(new))
    XGBoostFraudClassifier.load(url, storage_options=so)

    inter = make_interactions(3_000, 200, 80, seed=0).compute()
    als = ALSRecommender(factors=8, iterations=3, random_state=0).fit(inter)
    als_url = f"s3://{BUCKET}/models/als"
    als.save(als_url, storage_options=so)
    back = ALSRecommender.load(als_url, storage_options=so)
    np.testing.assert_array_equal(back.item_factors_, als.item_factors_)
    np.testing.assert_array_equal(back.user_ids_, als.user_ids_)
    als.save(als_url, storage_options=so)  # replaced: one job's files remain
    assert len(_jobs(fs, als_url)) == 1
    # a tampered file is found by its sha256
    root = json.loads(fs.cat_file(f"{BUCKET}/models/fraud/manifest.json"))["root"]
    fs.pipe_file(f"{BUCKET}/models/fraud/{root}model.ubj", b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_model(url, storage_options=so)
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_model(f"s3://{BUCKET}/models/nothing", storage_options=so)


def test_cli_with_storage_options_against_s3(client, s3, tmp_path):
    so = s3["so"]
    opts = [
        "--scheduler",
        client.scheduler.address,
        "--storage-option",
        "key=testing",
        "--storage-option",
        "secret=testing",
        "--storage-option",
        f"client_kwargs.endpoint_url={s3['endpoint']}",
        "--storage-option",
        "client_kwargs.region_name=us-east-1",
    ]

    def cli(*args):
        r = subprocess.run(
            [sys.executable, "-m", "daskml_scale.cli", *args, *opts], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        return json.loads(r.stdout)

    tx = f"s3://{BUCKET}/cli/tx"
    cli("generate", "transactions", "--rows", "6000", "--out", tx, "--partitions", "2")
    cli("train", "fraud", tx, "--model", f"s3://{BUCKET}/cli/model", "--no-features")
    out = cli(
        "score",
        tx,
        "--model",
        f"s3://{BUCKET}/cli/model",
        "--out",
        f"s3://{BUCKET}/cli/scores",
        "--quarantine",
        f"s3://{BUCKET}/cli/q",
    )
    assert out["rows_in"] == 6000 == out["rows_scored"] + out["rows_quarantined"]
    assert read_manifest(f"s3://{BUCKET}/cli/scores", so)["rows"] == out["rows_scored"]
