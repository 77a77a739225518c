"""ALS benchmark: the distributed engine on a 2-worker LocalCluster vs implicit with 2 threads.

Synthetic interactions shaped like MovieLens-20M (138k users, 27k items, 20M interactions) by
default, scaled by ``--scale``. Reports, on the same matrix and in the same run:

* seconds per ALS iteration of implicit (``num_threads=2``, in a separate process so its memory is
  measured alone) and of ``ALSRecommender(engine="distributed")`` on ``--workers`` single-threaded
  workers, and their ratio;
* peak resident memory of implicit's process and of each worker;
* top-10 for every user: ``recommend_all`` (seen items excluded) in rows/s, and implicit's
  ``recommend`` on all users for comparison.

Data is generated once under ``--data-dir`` (parquet; default: see ``_common.py``) and reused.

Usage::

    python benchmarks/bench_als.py --scale 0.25          # 5M interactions
    python benchmarks/bench_als.py --scale 1.0           # the full MovieLens-20M shape
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _data_path(data_dir, rows, users, items, seed):
    return Path(data_dir) / f"interactions-{rows}-u{users}-i{items}-s{seed}"


def _ensure_data(data_dir, rows, users, items, seed, client):
    from daskml_scale.data import make_interactions
    from daskml_scale.storage import write_parquet

    path = _data_path(data_dir, rows, users, items, seed)
    if not path.exists():
        t = time.perf_counter()
        ddf = make_interactions(rows, users, items, partition_rows=1 << 20, seed=seed)
        write_parquet(ddf, path, client=client)
        print(f"generated {rows:,} interactions in {time.perf_counter() - t:.1f}s -> {path}", file=sys.stderr)
    return path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_implicit(path, factors, iterations, threads, reg, alpha, seed) -> dict:
    """implicit's own ALS with ``threads`` threads, in this (fresh) process."""
    import implicit.cpu.als
    import scipy.sparse as sp
    import threadpoolctl

    from daskml_scale.recommend._kernels import init_rows

    t = time.perf_counter()
    df = pd.read_parquet(path, columns=["user_id", "item_id", "weight"])
    users, items = np.unique(df["user_id"].to_numpy()), np.unique(df["item_id"].to_numpy())
    C = sp.csr_matrix(
        (df["weight"].to_numpy(np.float32),
         (np.searchsorted(users, df["user_id"].to_numpy()), np.searchsorted(items, df["item_id"].to_numpy()))),
        shape=(len(users), len(items)),
    )  # fmt: skip
    del df
    C.sum_duplicates()
    C.data *= np.float32(alpha)
    build_s = time.perf_counter() - t
    times = []
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=factors, regularization=reg, iterations=iterations, num_threads=threads, random_state=seed
        )
        model.user_factors = init_rows(0, C.shape[0], factors, seed, 0)
        model.item_factors = init_rows(0, C.shape[1], factors, seed, 1)
        model.fit(C, show_progress=False, callback=lambda it, el, loss: times.append(el))
        t = time.perf_counter()
        model.recommend(np.arange(C.shape[0]), C, N=10, filter_already_liked_items=True)
        topn_s = time.perf_counter() - t
    return {
        "matrix_build_s": build_s,
        "iteration_s": times,
        "topn_s": topn_s,
        "topn_rows_per_s": 10 * C.shape[0] / topn_s,
        "peak_rss_mib": _peak_rss_mib(),
        "users": int(C.shape[0]),
        "items": int(C.shape[1]),
        "nnz": int(C.nnz),
    }


def run_distributed(path, factors, iterations, workers, reg, alpha, seed, memory_limit) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from daskml_scale.recommend import ALSRecommender, recommend_all

    quiet_cluster_logs()

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=":0", memory_limit=memory_limit) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        ddf = dd.read_parquet(path, columns=["user_id", "item_id", "weight"])
        client.run(lambda: __import__("implicit.cpu.als"))  # imports are not part of the fit
        idle = client.run(_peak_rss_mib)
        samples, stop = [], threading.Event()

        def sample():  # current RSS of each worker, every 0.5 s, while fitting
            while not stop.is_set():
                samples.append((time.perf_counter(), client.run(_rss_mib)))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        t = time.perf_counter()
        sampler.start()
        model = ALSRecommender(factors=factors, iterations=iterations, regularization=reg, alpha=alpha,
                               engine="distributed", random_state=seed)  # fmt: skip
        model.fit(ddf, client=client)
        fit_s = time.perf_counter() - t
        stop.set()
        sampler.join()
        loop_start = t + fit_s - sum(model.iteration_times_)
        during = [v for ts, v in samples if ts >= loop_start] or [samples[-1][1]]
        iter_rss = {w: max(v[w] for v in during) for w in during[0]}
        fit_peak = client.run(_peak_rss_mib)
        t = time.perf_counter()
        recs = recommend_all(model, n=10, exclude_seen=ddf)
        n_rows = int(recs.map_partitions(len).sum().compute())  # small: one count
        topn_s = time.perf_counter() - t
        return {
            "fit_s": fit_s,
            "setup_s": fit_s - sum(model.iteration_times_),
            "iteration_s": model.iteration_times_,
            "n_blocks": workers,
            "worker_rss_mib_idle": idle,
            "worker_peak_rss_mib_after_fit": fit_peak,
            "worker_rss_mib_during_iterations": iter_rss,
            "worker_peak_rss_mib": client.run(_peak_rss_mib),
            "topn_s": topn_s,
            "topn_rows": n_rows,
            "topn_rows_per_s": n_rows / topn_s,
            "nnz": model.n_interactions_,
        }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=138_000)
    p.add_argument("--items", type=int, default=27_000)
    p.add_argument("--interactions", type=int, default=20_000_000)
    p.add_argument("--scale", type=float, default=0.25, help="multiplies users, items and interactions")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="implicit's threads")
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--memory-limit", default="8GiB", help="per worker")
    p.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(p)
    p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/als-<scale>.json)")
    p.add_argument("--only-implicit", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.only_implicit:  # child process: implicit alone, so its memory is its own
        res = run_implicit(args.only_implicit, args.factors, args.iterations, args.threads,
                           args.regularization, args.alpha, args.seed)  # fmt: skip
        print(json.dumps(res))
        return

    users, items = int(args.users * args.scale), int(args.items * args.scale)
    rows = int(args.interactions * args.scale)
    from distributed import Client, LocalCluster

    quiet_cluster_logs()

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as cl,
    ):
        path = _ensure_data(args.data_dir, rows, users, items, args.seed, cl)

    load_before = os.getloadavg()
    child = subprocess.run(
        [sys.executable, __file__, "--only-implicit", str(path), "--factors", str(args.factors),
         "--iterations", str(args.iterations), "--threads", str(args.threads),
         "--regularization", str(args.regularization), "--alpha", str(args.alpha), "--seed", str(args.seed)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    native = json.loads(child.stdout.strip().splitlines()[-1])
    dist = run_distributed(path, args.factors, args.iterations, args.workers, args.regularization,
                           args.alpha, args.seed, args.memory_limit)  # fmt: skip

    load_after = os.getloadavg()
    nat_it = float(np.median(native["iteration_s"]))
    dist_it = float(np.median(dist["iteration_s"]))
    matrix_mib = native["nnz"] * 8 / 2**20  # CSR values + indices (float32 + int32)
    factors_mib = (native["users"] + native["items"]) * args.factors * 4 / 2**20
    rows_out = [
        ("interactions generated", f"{rows:,}"),
        ("matrix (users x items, stored pairs)", f"{native['users']:,} x {native['items']:,}, {native['nnz']:,}"),
        ("CSR size / factors size", f"{matrix_mib:.0f} MiB / {factors_mib:.0f} MiB"),
        (f"implicit, {args.threads} threads: s/iteration (median)", f"{nat_it:.2f}"),
        (f"distributed, {args.workers} workers: s/iteration (median)", f"{dist_it:.2f}"),
        ("ratio distributed / implicit", f"{dist_it / nat_it:.2f}x"),
        ("distributed: setup (id maps, blocks) s", f"{dist['setup_s']:.1f}"),
        ("implicit: matrix build s (pandas, in-memory)", f"{native['matrix_build_s']:.1f}"),
        ("implicit peak RSS MiB", f"{native['peak_rss_mib']:.0f}"),
        ("worker RSS MiB idle (imports done)", ", ".join(f"{v:.0f}" for v in dist["worker_rss_mib_idle"].values())),
        ("worker RSS MiB during iterations (max)", ", ".join(f"{v:.0f}" for v in dist["worker_rss_mib_during_iterations"].values())),
        ("worker peak RSS MiB (after fit)", ", ".join(f"{v:.0f}" for v in dist["worker_peak_rss_mib_after_fit"].values())),
        ("worker peak RSS MiB (after top-10)", ", ".join(f"{v:.0f}" for v in dist["worker_peak_rss_mib"].values())),
        ("top-10 all users, recommend_all rows/s", f"{dist['topn_rows_per_s']:,.0f} ({dist['topn_s']:.1f}s)"),
        (f"top-10 all users, implicit recommend ({args.threads} threads) rows/s",
         f"{native['topn_rows_per_s']:,.0f} ({native['topn_s']:.1f}s)"),
    ]  # fmt: skip
    rows_out.append(
        (
            "machine load average (1 min) before / after",
            f"{load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} cores",
        )
    )
    width = max(len(a) for a, _ in rows_out)
    for a, b in rows_out:
        print(f"{a:<{width}}  {b}")
    out = Path(args.out) if args.out else RESULTS / f"als-scale{args.scale:g}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "rows": rows, "users": users, "items": items, "implicit": native,
              "distributed": dist, "ratio": dist_it / nat_it,
              "load_average_before_after": [load_before, load_after]}  # fmt: skip
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
