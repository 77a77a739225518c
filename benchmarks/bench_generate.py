"""Benchmark: synthetic data generation throughput (rows/s).

Times, on a LocalCluster (default 2 workers x 1 thread):
* ``generate``: materialising every partition (counting rows, nothing written);
* ``write``: generating and writing partitioned parquet (what ``daskml-scale generate`` does);
* ``graph``: building the lazy collection for 10**9 rows (must be instant).

Usage::

    python benchmarks/bench_generate.py                      # 1M and 10M rows
    python benchmarks/bench_generate.py --rows 1000000 100000000 --workers 2

Prints a table and writes ``benchmarks/results/generate.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from daskml_scale.cluster import compute, connect
from daskml_scale.data import make_interactions, make_transactions
from daskml_scale.storage import library_versions, write_parquet


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    args = ap.parse_args(argv)

    results = []
    t0 = time.perf_counter()
    big = make_transactions(10**9)
    graph_s = time.perf_counter() - t0
    results.append(
        {
            "table": "transactions",
            "what": "graph",
            "rows": 10**9,
            "seconds": graph_s,
            "partitions": big.npartitions,
        }
    )
    with connect(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as client:
        for make, table in ((make_transactions, "transactions"), (make_interactions, "interactions")):
            for n in args.rows:
                ddf = make(n, seed=0)
                t0 = time.perf_counter()
                (rows,) = compute(ddf.map_partitions(len).sum(), client=client)  # small: a count
                dt = time.perf_counter() - t0
                results.append(
                    {
                        "table": table,
                        "what": "generate",
                        "rows": int(rows),
                        "seconds": dt,
                        "rows_per_s": rows / dt,
                        "partitions": ddf.npartitions,
                    }
                )
                tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
                try:
                    t0 = time.perf_counter()
                    write_parquet(ddf, tmp / "out", client=client)
                    dt = time.perf_counter() - t0
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                results.append(
                    {
                        "table": table,
                        "what": "write parquet",
                        "rows": n,
                        "seconds": dt,
                        "rows_per_s": n / dt,
                        "partitions": ddf.npartitions,
                    }
                )

    print(f"{'table':<13} {'what':<14} {'rows':>13} {'partitions':>10} {'seconds':>9} {'rows/s':>12}")
    for r in results:
        rate = f"{r['rows_per_s']:>12,.0f}" if "rows_per_s" in r else f"{'-':>12}"
        print(
            f"{r['table']:<13} {r['what']:<14} {r['rows']:>13,} {r['partitions']:>10} {r['seconds']:>9.3f} {rate}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "benchmark": "generate",
                "workers": args.workers,
                "versions": library_versions(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
