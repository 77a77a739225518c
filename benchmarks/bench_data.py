"""Benchmark: validate + clean of transactions from parquet on disk; rows/s and peak memory per worker.

For each size, the synthetic transactions are read from ``<data-dir>/transactions-<N>`` (made
with ``daskml-scale generate`` when absent), dirtied lazily (0.1% negative amounts, 0.1% missing
cards, 0.1% duplicated ids, per partition), then

* ``validate``: the one-pass count (including the duplicate shuffle), nothing written;
* ``clean``: clean rows and quarantine written as parquet in the same pass that counts;
* ``dask baseline``: the same filtering and de-duplication hand-written in plain Dask (read, filter,
  shuffle on id, drop_duplicates per partition, write), without quarantine, reasons or conservation
  checks: the floor our ``clean`` is compared with.

Peak memory per worker is the highest resident set size of each worker process, sampled every 0.2 s
through ``client.run`` during the step. With 1M-row partitions it should stay flat as rows grow
tenfold: every step works partition by partition (the shuffle spills to disk).

Run::

    python benchmarks/bench_data.py                          # 1M and 10M rows
    python benchmarks/bench_data.py --rows 10000000 100000000   # the issue's sizes
    python benchmarks/bench_data.py --partition-rows 131072 --out benchmarks/results/bench_data_p131072.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import add_data_dir_arg, quiet_cluster_logs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Sample every worker's RSS while a block runs; ``peak`` maps worker address -> bytes."""

    def __init__(self, client, interval=0.2):
        self.client, self.interval, self.peak = client, interval, {}
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.is_set():
            try:
                for w, r in self.client.run(_rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), r)
            except Exception:  # a worker restarting mid-sample: keep sampling the others
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _dirty(df, seed):
    """Plant problems in a partition: negative amounts, missing cards, duplicated ids (0.1% each)."""
    import pandas as pd

    rng = np.random.default_rng([seed, len(df)])
    n = len(df)
    k = max(1, n // 1000)
    df = df.copy()
    df["card_id"] = df["card_id"].astype("float64")
    if n == 0:
        return df
    df.loc[df.index[rng.choice(n, k, replace=False)], "amount"] = -1.0
    df.loc[df.index[rng.choice(n, k, replace=False)], "card_id"] = np.nan
    dups = df.iloc[rng.choice(n, k, replace=False)]
    return pd.concat([df, dups], ignore_index=True)


def ensure_data(rows: int, data_dir: Path, partition_rows: int | None = None) -> Path:
    """The shared parquet data set for ``rows`` (default partitions: ~1M rows each), made if absent."""
    name = f"transactions-{rows}" + (f"-p{partition_rows}" if partition_rows else "")
    path = data_dir / name
    if not path.exists():
        print(f"generating {rows:,} rows into {path} ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "daskml_scale.cli", "generate", "transactions", "--rows", str(rows)]
        if partition_rows:
            cmd += ["--partitions", str(max(1, -(-rows // partition_rows)))]
        subprocess.run([*cmd, "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def _read(path):
    from daskml_scale.data import read_transactions

    ddf = read_transactions(str(path))
    return ddf.map_partitions(_dirty, 0, meta=_dirty(ddf._meta.iloc[:0], 0).iloc[:0])


def _baseline(path, out, client):
    import dask.dataframe as dd

    from daskml_scale.storage import write_parquet

    ddf = dd.read_parquet(str(path))
    ddf = ddf.map_partitions(_dirty, 0, meta=_dirty(ddf._meta.iloc[:0], 0).iloc[:0])
    ok = ddf[(ddf["amount"] >= 0) & ddf["card_id"].notnull()]
    dedup = ok.shuffle(on="transaction_id").map_partitions(lambda d: d.drop_duplicates("transaction_id"))
    write_parquet(dedup, out, client=client)


def run_size(rows, client, data_dir, scratch, partition_rows=None):
    from daskml_scale.data import clean, validate

    path = ensure_data(rows, data_dir, partition_rows)
    out = {}
    for step in ("validate", "clean", "dask baseline"):
        client.run(__import__("gc").collect)
        t0 = time.perf_counter()
        with PeakMemory(client) as mem:
            if step == "validate":
                rep = validate(_read(path), "transactions", client=client)
                n_in = rep.rows_in
            elif step == "clean":
                rep = clean(
                    _read(path),
                    "transactions",
                    out=scratch / "clean",
                    quarantine_out=scratch / "quarantine",
                    client=client,
                ).report
                n_in = rep.rows_in
                out["report"] = rep.to_dict()
            else:
                _baseline(path, scratch / "baseline", client)
        dt = time.perf_counter() - t0
        peak = max(mem.peak.values()) if mem.peak else float("nan")
        out[step] = {"seconds": dt, "rows_per_s": n_in / dt, "peak_rss_per_worker_mib": peak / 2**20}
        for d in ("clean", "quarantine", "baseline"):
            shutil.rmtree(scratch / d, ignore_errors=True)
    out["rows_in"] = n_in
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB", help="per worker")
    add_data_dir_arg(p)
    p.add_argument(
        "--partition-rows",
        type=int,
        default=None,
        help="rows per parquet file (default: the generator's ~1M); the same for every size, so that "
        "peak memory per worker can be compared across sizes",
    )
    p.add_argument("--out", default=str(RESULTS / "bench_data.json"))
    args = p.parse_args(argv)

    from distributed import Client, LocalCluster

    # distributed logs every p2p shuffle start/stop at WARNING level: noise in a benchmark table
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "workers": args.workers,
        "threads_per_worker": 1,
        "memory_limit": args.memory_limit,
        "sizes": {},
    }
    quiet_cluster_logs()
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            memory_limit=args.memory_limit,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory(dir=data_dir, prefix=".bench-data-scratch-") as scratch,
    ):
        idle = max(client.run(_rss).values()) / 2**20
        results["idle_rss_per_worker_mib"] = idle
        for rows in args.rows:
            results["sizes"][str(rows)] = run_size(rows, client, data_dir, Path(scratch), args.partition_rows)
            print(f"done {rows:,}", file=sys.stderr)

    print(
        f"\nworkers: {args.workers} x 1 thread, memory_limit {args.memory_limit}; idle RSS {idle:.0f} MiB/worker"
    )
    print(f"{'rows':>12} {'step':<14} {'seconds':>8} {'rows/s':>12} {'peak RSS/worker MiB':>20}")
    for rows, r in results["sizes"].items():
        for step in ("validate", "clean", "dask baseline"):
            s = r[step]
            print(
                f"{int(rows):>12,} {step:<14} {s['seconds']:>8.1f} {s['rows_per_s']:>12,.0f} "
                f"{s['peak_rss_per_worker_mib']:>20.0f}"
            )
        rep = r["report"]
        print(
            f"{'':>12} conservation: {rep['rows_in']:,} in = {rep['rows_out']:,} out + "
            f"{rep['rows_quarantined']:,} quarantined ({'ok' if rep['conserved'] else 'FAILED'})"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
