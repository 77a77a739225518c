"""Benchmark: peak RSS per worker of the features stage with history, against shuffle settings.

Reads a clean transactions table written by ``bench_pipeline.py --keep`` (``<data-dir>/pipeline-<N>/clean``),
fits ``TransactionFeatures`` on its first 7 days, then writes ``transform(new, history=)`` for the last
28 days with the 30 days before them as history, the windows repartitioned to their share of the
table as ``bench_pipeline.py`` does. Each ``--p2p-buffer`` x ``--npartitions`` setting runs on its own
fresh LocalCluster (2 workers x 1 thread, 8 GiB); a thread in each worker samples its RSS every 20 ms,
and at the RSS peak records glibc's heap figures (``mallinfo2``: bytes in use in malloc'd chunks, free
bytes kept in the heap, bytes in mmapped chunks) and the bytes Dask holds as task results, so a peak
reads as live data, heap kept free, or neither. ``--worker-env`` adds environment variables to the
workers (each value is a setting of its own, e.g. ``MALLOC_ARENA_MAX=2``).

Usage::

    python benchmarks/bench_pipeline.py --rows 100000000 --stages generate clean --keep
    python benchmarks/bench_feature_memory.py --rows 100000000 --p2p-buffer 1GiB 128MiB
    python benchmarks/bench_feature_memory.py --rows 100000000 --worker-env "" MALLOC_ARENA_MAX=2
    python benchmarks/bench_feature_memory.py --rows 1000000000 --days 365 --score-days 1 --start none known

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

from daskml_scale.cluster import connect
from daskml_scale.features import TransactionFeatures
from daskml_scale.storage import library_versions, write_parquet

START = pd.Timestamp("2025-01-01")  # make_transactions' default start


def _start_sampler(dask_worker) -> None:
    """Sample this worker's RSS every 20 ms in a thread; at each new peak, record the heap's
    figures (glibc ``mallinfo2``, summed over every arena) and the bytes of Dask's task results."""
    import ctypes
    import threading

    import psutil

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        libc = None
    proc = psutil.Process()
    state = {"peak": 0, "at_peak": {}, "keys_at_peak": [], "stop": False}

    def sample():
        rss = proc.memory_info().rss
        if rss <= state["peak"]:
            return
        state["peak"] = rss
        info = {}
        if libc is not None:
            m = libc.mallinfo2()
            info = {"heap_in_use": m.uordblks, "heap_free": m.fordblks, "mmapped": m.hblkhd}
        try:
            weights = dict(dask_worker.data.fast.weights)
        except Exception:  # noqa: BLE001 - the buffer's layout is distributed's; a figure less, not a failure
            weights = None
        if weights is not None:
            info["dask_data"] = sum(weights.values())
            by_name = {}
            for key, nbytes in weights.items():
                name = (key[0] if isinstance(key, tuple) else str(key)).rsplit("-", 1)[0]
                count, total = by_name.get(name, (0, 0))
                by_name[name] = (count + 1, total + nbytes)
            state["keys_at_peak"] = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:6]
        state["at_peak"] = info

    def loop():
        while not state["stop"]:
            sample()
            time.sleep(0.02)

    sample()
    threading.Thread(target=loop, daemon=True).start()
    dask_worker._bench_rss = state


def _stop_sampler(dask_worker) -> dict:
    state = dask_worker._bench_rss
    state["stop"] = True
    keys = [[name, count, nbytes / 2**20] for name, (count, nbytes) in state["keys_at_peak"]]
    return {
        "peak_mib": state["peak"] / 2**20,
        **{k: v / 2**20 for k, v in state["at_peak"].items()},
        "dask_keys_at_peak": keys,  # [name, tasks, MiB]: the largest groups of results held
    }


def run(
    table: Path,
    days: int,
    npartitions,
    buffer: str,
    out: Path,
    window_parts: int = 0,
    env: str = "",
    start: str = "none",
    score_days: int = 28,
) -> dict:
    end = START + pd.Timedelta(days=days)
    score_start = end - pd.Timedelta(days=score_days)
    hist_start = score_start - pd.Timedelta(days=30)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.update(dict(kv.split("=", 1) for kv in env.split(",") if kv))
    config = {"distributed.p2p.comm.buffer": buffer, "distributed.nanny.pre-spawn-environ": environ}
    with dask.config.set(config):
        with connect(
            n_workers=2, threads_per_worker=1, memory_limit="8GiB", quiet=True, dashboard_address=":0"
        ) as client:
            n_table = dd.read_parquet(str(table)).npartitions

            def window(a, b):
                # each window its own read, filtered as it is read (as bench_pipeline.py), then its
                # share of the table's partitions (adjacent ones concatenated, no shuffle)
                share = (b - a) / (end - START)
                rows = dd.read_parquet(
                    str(table), filters=[("timestamp", ">=", a), ("timestamp", "<", b)]
                )
                return rows.repartition(npartitions=max(1, math.ceil((window_parts or n_table) * share)))

            tf = TransactionFeatures(npartitions=npartitions)
            tf.fit(window(START, START + pd.Timedelta(days=7)), client=client)
            names = [str(c) for c in tf.get_feature_names_out()]
            featurized = tf.transform(
                window(score_start, end),
                history=window(hist_start, score_start),
                start=score_start if start == "known" else None,
            )
            client.run(__import__("gc").collect)
            client.run(_start_sampler)
            t0 = time.perf_counter()
            shutil.rmtree(out, ignore_errors=True)
            write_parquet(featurized[["transaction_id", *names]], out, client=client)
            seconds = time.perf_counter() - t0
            at_peak = sorted(client.run(_stop_sampler).values(), key=lambda d: d["peak_mib"])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "p2p_buffer": buffer,
        "npartitions": npartitions,
        "window_partitions_per_table": window_parts or None,
        "worker_env": env or None,
        "start": start,
        "score_days": score_days,
        "seconds": seconds,
        "peak_rss_per_worker_mib": [d["peak_mib"] for d in at_peak],
        "at_peak_mib": at_peak,
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
    ap.add_argument(
        "--worker-env",
        nargs="+",
        default=[""],
        help="worker environment settings, each KEY=VALUE[,KEY=VALUE] ('' for none), e.g. MALLOC_ARENA_MAX=2",
    )
    ap.add_argument(
        "--start",
        nargs="+",
        choices=["none", "known"],
        default=["none"],
        help="transform(start=): none (every history row through every shuffle) or known (the "
        "scoring days' first day: each shuffle carries the history its stage reads)",
    )
    ap.add_argument("--score-days", type=int, default=28, help="the last days transformed (30 of history before)")
    add_data_dir_arg(ap)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "feature_memory.json"))
    args = ap.parse_args(argv)
    quiet_cluster_logs()
    root = Path(args.data_dir) / f"pipeline-{args.rows}"
    results = []
    settings = [
        (b, n, w, e, s)
        for b in args.p2p_buffer
        for n in args.npartitions
        for w in args.window_partitions
        for e in args.worker_env
        for s in args.start
    ]
    for buffer, nparts, wparts, env, start in settings:
        r = run(
            root / "clean",
            args.days,
            nparts or None,
            buffer,
            root / "feature-memory-out",
            wparts,
            env,
            start,
            args.score_days,
        )
        results.append(r)
        peaks = " / ".join(f"{p:.0f}" for p in r["peak_rss_per_worker_mib"])
        heap = " / ".join(
            f"in use {d.get('heap_in_use', float('nan')):.0f} free {d.get('heap_free', float('nan')):.0f} "
            f"mmapped {d.get('mmapped', float('nan')):.0f} dask {d.get('dask_data', float('nan')):.0f} "
            f"{[(n, c, round(m)) for n, c, m in d.get('dask_keys_at_peak', [])[:3]]}"
            for d in r["at_peak_mib"]
        )
        print(
            f"buffer {buffer:>7s} npartitions {nparts or 'input':>5} window partitions of "
            f"{wparts or 'table':>5} env {env or '-':>20s} start {start:5s} {r['seconds']:7.1f} s  peak/worker {peaks} MiB"
            f"  at peak (MiB): {heap}"
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
