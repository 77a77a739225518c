"""Benchmark: peak RSS per worker of the features stage with history, against shuffle settings.

Reads a clean transactions table written by ``bench_pipeline.py --keep`` (``<data-dir>/pipeline-<N>/clean``),
fits ``TransactionFeatures`` on its first 7 days, then writes ``transform(new, history=)`` for the last
28 days with the 30 days before them as history, the windows repartitioned to their share of the
table as ``bench_pipeline.py`` does. Each ``--p2p-buffer`` x ``--npartitions`` setting runs on its own
fresh LocalCluster (2 workers x 1 thread, 8 GiB); a thread in each worker samples its RSS every 20 ms.

Usage::

    python benchmarks/bench_pipeline.py --rows 100000000 --stages generate clean --keep
    python benchmarks/bench_feature_memory.py --rows 100000000 --p2p-buffer 1GiB 128MiB

Prints one line per setting and writes ``benchmarks/results/feature_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
from _common import add_data_dir_arg, quiet_cluster_logs
from bench_features import _start_rss_sampler, _stop_rss_sampler

from daskml_scale.cluster import connect
from daskml_scale.features import TransactionFeatures
from daskml_scale.storage import library_versions, write_parquet

START = pd.Timestamp("2025-01-01")  # make_transactions' default start


def run(table: Path, days: int, npartitions, buffer: str, out: Path, window_parts: int = 0) -> dict:
    end = START + pd.Timedelta(days=days)
    score_start = end - pd.Timedelta(days=28)
    hist_start = score_start - pd.Timedelta(days=30)
    with dask.config.set({"distributed.p2p.comm.buffer": buffer}):
        with connect(
            n_workers=2, threads_per_worker=1, memory_limit="8GiB", quiet=True, dashboard_address=":0"
        ) as client:
            t = dd.read_parquet(str(table))

            def window(a, b):
                ts = t["timestamp"]
                share = (b - a) / (end - START)
                return t[(ts >= a) & (ts < b)].repartition(
                    npartitions=max(1, math.ceil(t.npartitions * share))
                )

            tf = TransactionFeatures(npartitions=npartitions)
            tf.fit(window(START, START + pd.Timedelta(days=7)), client=client)
            names = [str(c) for c in tf.get_feature_names_out()]
            featurized = tf.transform(window(score_start, end), history=window(hist_start, score_start))
            client.run(__import__("gc").collect)
            client.run(_start_rss_sampler)
            t0 = time.perf_counter()
            shutil.rmtree(out, ignore_errors=True)
            write_parquet(featurized[["transaction_id", *names]], out, client=client)
            seconds = time.perf_counter() - t0
            peaks = sorted(client.run(_stop_rss_sampler).values())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "p2p_buffer": buffer,
        "npartitions": npartitions,
        "window_partitions_per_table": window_parts or None,
        "seconds": seconds,
        "peak_rss_per_worker_mib": peaks,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000_000, help="the N of <data-dir>/pipeline-<N>/clean")
    ap.add_argument("--days", type=int, default=60, help="days the table covers")
    ap.add_argument("--p2p-buffer", nargs="+", default=["1GiB"], help="distributed.p2p.comm.buffer values")
    ap.add_argument(
        "--npartitions", type=int, nargs="+", default=[0], help="shuffle partitions (0: the input's)"
    )
    ap.add_argument(
        "--window-partitions",
        type=int,
        nargs="+",
        default=[0],
        help="cut each window into its share of this many partitions (0: of the table's); 1000 on a "
        "100M table gives the 1B run's window partitions",
    )
    add_data_dir_arg(ap)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "feature_memory.json"))
    args = ap.parse_args(argv)
    quiet_cluster_logs()
    root = Path(args.data_dir) / f"pipeline-{args.rows}"
    results = []
    settings = [(b, n, w) for b in args.p2p_buffer for n in args.npartitions for w in args.window_partitions]
    for buffer, nparts, wparts in settings:
        r = run(root / "clean", args.days, nparts or None, buffer, root / "feature-memory-out", wparts)
        results.append(r)
        peaks = " / ".join(f"{p:.0f}" for p in r["peak_rss_per_worker_mib"])
        print(
            f"buffer {buffer:>7s} npartitions {nparts or 'input':>5} window partitions of "
            f"{wparts or 'table':>5}  {r['seconds']:7.1f} s  peak/worker {peaks} MiB"
        )
    report = {
        "benchmark": "feature_memory",
        "args": vars(args),
        "results": results,
        "versions": library_versions(),
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
