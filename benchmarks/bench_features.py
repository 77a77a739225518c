"""Benchmark: behaviour features from parquet on disk, Dask against pandas.

For each size, on a fresh LocalCluster (default 2 workers x 1 thread):

* ``required``: the five required features only (one shuffle by card);
* ``default``: ``TransactionFeatures()`` with every default feature (a shuffle by merchant, then by
  card, plus the frequency tables learned in ``fit``);

each read from ``<data-dir>/transactions-<N>`` (generated if absent), computed and written as
parquet (``transaction_id`` + features). Reported: wall seconds, rows/s, and the peak resident memory
of each worker process (its RSS sampled every 20 ms; workers are fresh for each run).

On the ``--pandas-rows`` size (10M by default) the same five required features are also computed by
pandas in this process (read parquet, sort by card and time, ``groupby().rolling(closed="left")``,
write parquet): the ratio is pandas seconds / Dask seconds. A per-partition kernel comparison (one
1M-row frame, our kernel against pandas' groupby rolling for the same features) is printed too.

Usage::

    python benchmarks/bench_features.py                               # 1M and 10M
    python benchmarks/bench_features.py --rows 10000000 100000000     # what the issue asks

Prints a table and writes ``benchmarks/results/features.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
from _common import add_data_dir_arg

from daskml_scale.cluster import connect
from daskml_scale.data import make_transactions
from daskml_scale.features import TransactionFeatures
from daskml_scale.storage import library_versions, write_parquet

REQUIRED_PARAMS = {
    "windows": {"1h": ["count"], "24h": ["count", "sum"], "7d": ["mean"]},
    "counterparty": None,
    "profile_window": None,
    "other_entities": {},
    "time_features": False,
    "categoricals": [],
}


def ensure_data(rows: int, data_dir: Path, client) -> Path:
    path = data_dir / f"transactions-{rows}"
    if not path.exists():
        print(f"generating {rows:,} transactions into {path}", flush=True)
        write_parquet(make_transactions(rows, seed=0), path, client=client)
    return path


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _start_rss_sampler(dask_worker) -> None:
    """Sample this worker's current RSS every 20 ms in a thread (ru_maxrss would include the RSS of
    the process the worker was forked from, e.g. a benchmark process that just ran pandas)."""
    import threading

    import psutil

    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "stop": False}

    def loop():
        while not state["stop"]:
            state["peak"] = max(state["peak"], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()
    dask_worker._bench_rss = state


def _stop_rss_sampler(dask_worker) -> float:
    state = dask_worker._bench_rss
    state["stop"] = True
    return state["peak"] / 2**20


def run_dask(path: Path, config: str, workers: int, memory_limit: str, shuffle_method=None) -> dict:
    params = dict(REQUIRED_PARAMS) if config == "required" else {}
    params["shuffle_method"] = shuffle_method
    with connect(
        n_workers=workers, threads_per_worker=1, memory_limit=memory_limit, dashboard_address=":0", quiet=True
    ) as client:
        ddf = dd.read_parquet(path)
        client.run(_start_rss_sampler)
        tmp = Path(tempfile.mkdtemp(prefix="bench-features-"))
        try:
            t0 = time.perf_counter()
            tf = TransactionFeatures(**params).fit(ddf, client=client)
            fit_s = time.perf_counter() - t0
            names = list(tf.get_feature_names_out())
            out = tf.transform(ddf[tf.input_columns_])[["transaction_id", *names]]
            write_parquet(out, tmp / "out", client=client)
            total_s = time.perf_counter() - t0
            rows = int(pd.read_parquet(tmp / "out", columns=["transaction_id"]).shape[0])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        peaks = sorted(client.run(_stop_rss_sampler).values())
    return {
        "engine": "dask",
        "config": config,
        "shuffle_method": shuffle_method or "dask default",
        "rows": rows,
        "partitions": ddf.npartitions,
        "features": len(names),
        "fit_s": fit_s,
        "seconds": total_s,
        "rows_per_s": rows / total_s,
        "peak_worker_mib": peaks,
    }


def pandas_required(df: pd.DataFrame) -> pd.DataFrame:
    """The five required features with pandas: sort, groupby + time-based rolling closed='left'."""
    s = df.sort_values(["card_id", "timestamp", "transaction_id"], ignore_index=True)
    s["one"] = 1.0
    g = s.groupby("card_id", sort=False)
    out = pd.DataFrame({"transaction_id": s["transaction_id"]})

    def roll(col, hours, how):
        r = g.rolling(pd.Timedelta(hours=hours), on="timestamp", closed="left")[col]
        return getattr(r, how)().to_numpy()

    out["card_txn_count_1h"] = np.nan_to_num(roll("one", 1, "sum")).astype(np.int64)
    out["card_txn_count_24h"] = np.nan_to_num(roll("one", 24, "sum")).astype(np.int64)
    out["card_amount_sum_24h"] = np.nan_to_num(roll("amount", 24, "sum"))
    out["card_amount_mean_7d"] = roll("amount", 24 * 7, "mean")
    u = s[["card_id", "timestamp"]].drop_duplicates()
    prev = u["timestamp"] - u.groupby("card_id")["timestamp"].shift()
    out["card_seconds_since_prev"] = (
        s[["card_id", "timestamp"]]
        .merge(
            u.assign(gap=prev.where(prev <= pd.Timedelta(days=30)).dt.total_seconds()),
            on=["card_id", "timestamp"],
            how="left",
        )["gap"]
        .to_numpy()
    )
    return out


def run_pandas(path: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-features-pd-"))
    try:
        t0 = time.perf_counter()
        df = pd.read_parquet(path, columns=["transaction_id", "timestamp", "card_id", "amount"])
        read_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = pandas_required(df)
        compute_s = time.perf_counter() - t1
        out.to_parquet(tmp / "out.parquet", index=False)
        total_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "engine": "pandas",
        "config": "required",
        "rows": len(df),
        "read_s": read_s,
        "compute_s": compute_s,
        "seconds": total_s,
        "rows_per_s": len(df) / total_s,
        "peak_process_mib": _maxrss_mib(),
    }


def kernel_comparison(path: Path) -> dict:
    """One 1M-row frame: our per-partition kernel against pandas groupby rolling (same features)."""
    from daskml_scale.features._partition import apply_stage

    df = pd.read_parquet(path, columns=["transaction_id", "timestamp", "card_id", "amount"])
    df = df.iloc[:1_000_000].copy()
    tf = TransactionFeatures(**REQUIRED_PARAMS).fit(dd.from_pandas(df.head(10), npartitions=1))
    stage = tf._stages({})[-1]
    apply_stage(df.head(1000), stage)  # compile once
    t0 = time.perf_counter()
    ours = apply_stage(df, stage)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = pandas_required(df)
    pandas_s = time.perf_counter() - t0
    a = ours.set_index("transaction_id").sort_index()
    b = theirs.set_index("transaction_id").sort_index()
    for col in TransactionFeatures.REQUIRED:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col)
    return {"rows": len(df), "ours_s": ours_s, "pandas_s": pandas_s, "speedup": pandas_s / ours_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--pandas-rows", type=int, default=10_000_000, help="size for the pandas ratio (0: skip)")
    ap.add_argument("--configs", nargs="+", default=["required", "default"], choices=["required", "default"])
    ap.add_argument(
        "--shuffle-methods",
        nargs="+",
        default=["default"],
        choices=["default", "p2p", "tasks"],
        help="Dask shuffle methods to time (default: Dask's own choice, p2p on a cluster)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="6GiB", help="per worker")
    add_data_dir_arg(ap)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "features.json"))
    args = ap.parse_args(argv)

    data_dir = Path(args.data_dir)
    with connect(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0", quiet=True) as c:
        paths = {n: ensure_data(n, data_dir, c) for n in sorted(set(args.rows))}
    results = []
    kernel = kernel_comparison(paths[min(paths)])
    print(
        f"kernel, {kernel['rows']:,} rows in one frame: ours {kernel['ours_s']:.2f} s, "
        f"pandas groupby rolling {kernel['pandas_s']:.2f} s ({kernel['speedup']:.1f}x)",
        flush=True,
    )
    for n, path in paths.items():
        for config in args.configs:
            for method in args.shuffle_methods:
                method = None if method == "default" else method
                r = run_dask(path, config, args.workers, args.memory_limit, method)
                results.append(r)
                print(
                    f"dask   {config:9s} {r['shuffle_method']:>12s} {r['rows']:>12,} rows "
                    f"{r['seconds']:8.1f} s "
                    f"{r['rows_per_s'] / 1e6:6.2f} M rows/s  peak/worker {max(r['peak_worker_mib']):7.0f} MiB",
                    flush=True,
                )
        if n == args.pandas_rows and "required" in args.configs:
            r = run_pandas(path)
            results.append(r)
            dask_req = min(
                (
                    x
                    for x in results
                    if x["engine"] == "dask" and x["rows"] == n and x["config"] == "required"
                ),
                key=lambda x: x["seconds"],
            )
            r["dask_speedup"] = r["seconds"] / dask_req["seconds"]
            r["dask_compared"] = dask_req["shuffle_method"]
            print(
                f"pandas required {'':>12s} {r['rows']:>12,} rows {r['seconds']:8.1f} s "
                f"{r['rows_per_s'] / 1e6:6.2f} M rows/s  peak {r['peak_process_mib']:7.0f} MiB  "
                f"-> dask/pandas speedup {r['dask_speedup']:.2f}x",
                flush=True,
            )
    report = {
        "benchmark": "features",
        "workers": args.workers,
        "threads_per_worker": 1,
        "kernel": kernel,
        "results": results,
        "versions": library_versions(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
