"""Benchmark: a merchant with a large share of the rows, split (hot keys) against unsplit.

Synthetic transactions (``make_transactions``) with ``--share`` of the rows moved to one merchant,
on a fresh LocalCluster (2 workers x 1 thread, tasks shuffle). For ``hot_key_rows="auto"`` (split)
and ``hot_key_rows=None`` (unsplit): ``fit`` + ``transform`` of the default features, written as
parquet (``transaction_id`` + features). Reported: seconds and rows/s of fit + transform, and the
largest number of the hot merchant's rows one task of the merchant stage receives (context rows
included), measured by a separate count of the partitions the stage's tasks get.

Usage::

    python benchmarks/bench_hot_keys.py --rows 10000000 --share 0.2

Prints a table and writes ``benchmarks/results/hot_keys.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from daskml_scale.data import make_transactions
from daskml_scale.features import TransactionFeatures
from daskml_scale.features._hot_keys import split_partitions
from daskml_scale.storage import library_versions

HOT = -1  # the hot merchant's id (make_transactions' ids are >= 0)


def with_hot_merchant(pdf: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, len(pdf), int(pdf["transaction_id"].iloc[0]) if len(pdf) else 0])
    merchant = pdf["merchant_id"].to_numpy().copy()
    merchant[rng.random(len(pdf)) < share] = HOT
    return pdf.assign(merchant_id=merchant.astype(pdf["merchant_id"].dtype))


def max_rows_per_task(tf, ddf, nparts: int) -> int:
    """The hot merchant's rows in the busiest task of the merchant stage (context rows included)."""
    stage = tf._stages(tf.frequencies_)[0]
    assert stage["entity"] == "merchant_id"
    if tf.hot_keys_.get("merchant_id"):
        parts = split_partitions(ddf, stage, tf.hot_keys_["merchant_id"], nparts, "tasks")
    else:
        parts = ddf.shuffle(on="merchant_id", npartitions=nparts, shuffle_method="tasks")
    rows = parts.map_partitions(
        lambda p: pd.Series([int((p["merchant_id"] == HOT).sum())]), meta=(None, "int64")
    )
    return int(rows.max().compute())


def run(rows: int, share: float, hot_key_rows, out_dir: Path, npartitions: int) -> dict:
    ddf = make_transactions(rows, seed=0, npartitions=npartitions)
    ddf = ddf.map_partitions(with_hot_merchant, share, 0, meta=ddf._meta)
    t0 = time.perf_counter()
    tf = TransactionFeatures(hot_key_rows=hot_key_rows, shuffle_method="tasks").fit(ddf)
    out = tf.transform(ddf[tf.input_columns_])
    out[["transaction_id", *tf.get_feature_names_out()]].to_parquet(out_dir / str(hot_key_rows))
    seconds = time.perf_counter() - t0
    nparts = ddf.npartitions
    hot = dict(tf.hot_keys_.get("merchant_id", []))
    return {
        "rows": rows,
        "share": share,
        "hot_key_rows": hot_key_rows,
        "npartitions": nparts,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "hot_merchant_rows": int((ddf["merchant_id"] == HOT).sum().compute()),
        "bucket_hours": round(hot[HOT] / 3.6e12, 1) if HOT in hot else None,
        "max_hot_rows_per_task": max_rows_per_task(tf, ddf, nparts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--npartitions", type=int, default=None, help="default: one per 250k rows")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hot_keys.json")
    args = parser.parse_args()
    results = []
    for hot_key_rows in ("auto", None):
        tmp = Path(tempfile.mkdtemp(prefix="bench-hot-keys-"))
        try:
            with (
                LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
                Client(cluster),
            ):
                nparts = args.npartitions or max(2, args.rows // 250_000)
                results.append(run(args.rows, args.share, hot_key_rows, tmp, nparts))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "versions": library_versions()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
