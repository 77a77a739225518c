"""Memory of a distributed ALS fit as the number of users grows: the client's and each worker's.

For each user count (default 1M, 3M and 10M users, 3 interactions per user over ``--items`` items)
a fresh LocalCluster of ``--workers`` single-threaded worker processes fits
``ALSRecommender(engine="distributed")``; the benchmark reports

* the client's RSS growth during the fit (sampled every 10 ms; this process also hosts the
  scheduler), which must not grow with the users: the client only sees counts;
* each worker's peak RSS over its idle RSS, next to ``(matrix + factors) / W``: the CSR blocks of
  both orientations (8 bytes per stored pair each) plus both sides' float32 factors, divided by the
  workers;
* seconds per iteration.

Data is generated once per shape under ``--data-dir`` (parquet) and reused.

Usage::

    python benchmarks/bench_als_memory.py                       # 1M, 3M, 10M users
    python benchmarks/bench_als_memory.py --users 100000,300000 # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _data(data_dir, users, items, per_user, seed, client):
    from daskml_scale.data import make_interactions
    from daskml_scale.storage import write_parquet

    rows = users * per_user
    path = Path(data_dir) / f"interactions-{rows}-u{users}-i{items}-s{seed}"
    if not path.exists():
        t = time.perf_counter()
        write_parquet(
            make_interactions(rows, users, items, partition_rows=1 << 20, seed=seed), path, client=client
        )
        print(f"generated {rows:,} interactions in {time.perf_counter() - t:.1f}s -> {path}", flush=True)
    return path


def run_one(args, users: int) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from daskml_scale.recommend import ALSRecommender

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit)
        as lc,
        Client(lc) as client,
    ):  # fmt: skip
        path = _data(args.data_dir, users, args.items, args.per_user, args.seed, client)
        client.restart()  # workers start from idle after the data generation
        idle = client.run(_rss_mib)
        client.run(lambda: None)
        ddf = dd.read_parquet(str(path), columns=["user_id", "item_id", "weight"])
        import gc

        gc.collect()
        base = _rss_mib()
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mib())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t = time.perf_counter()
        try:
            model = ALSRecommender(
                engine="distributed", factors=args.factors, iterations=args.iterations, random_state=0
            ).fit(ddf, client=client)
        finally:
            done.set()
            sampler.join()
        fit_s = time.perf_counter() - t
        worker_peak = client.run(_peak_rss_mib)
        n_users, n_items, nnz = model.user_blocks_.n_rows, model.item_blocks_.n_rows, model.n_interactions_
        ideal = (2 * 8 * nnz + 4 * args.factors * (n_users + n_items)) / args.workers / 2**20
        growth = {w: worker_peak[w] - idle[w] for w in worker_peak}
        return {
            "users": n_users,
            "items": n_items,
            "interactions": nnz,
            "factors": args.factors,
            "fit_s": fit_s,
            "s_per_iteration": sum(model.iteration_times_) / max(len(model.iteration_times_), 1),
            "client_rss_growth_mib": peak[0] - base,
            "client_factors_mib_if_gathered": 4 * args.factors * n_users / 2**20,
            "worker_idle_mib": sorted(idle.values()),
            "worker_peak_mib": sorted(worker_peak.values()),
            "worker_growth_mib": sorted(growth.values()),
            "matrix_plus_factors_per_worker_mib": ideal,
            "load_avg_1min": os.getloadavg()[0],
        }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="1000000,3000000,10000000", help="comma list of user counts")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--per-user", type=int, default=3, help="interactions per user")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="8GiB")
    p.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(p)
    args = p.parse_args(argv)
    quiet_cluster_logs()
    rows = []
    for users in (int(u) for u in args.users.split(",")):
        r = run_one(args, users)
        rows.append(r)
        print(json.dumps(r), flush=True)
    head = ("| users | interactions | s/iter | client RSS growth MiB | one side's factors MiB | worker growth MiB "
            "| (matrix+factors)/W MiB |")  # fmt: skip
    print(head)
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['users']:,} | {r['interactions']:,} | {r['s_per_iteration']:.2f} | {r['client_rss_growth_mib']:.1f} "
            f"| {r['client_factors_mib_if_gathered']:.0f} | {' / '.join(f'{g:.0f}' for g in r['worker_growth_mib'])} "
            f"| {r['matrix_plus_factors_per_worker_mib']:.0f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "als_memory.json"
    out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
