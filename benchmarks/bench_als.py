"""ALS benchmark: implicit (2 threads), the distributed engine (2 workers x 1 thread) and Spark MLlib.

Synthetic interactions shaped like MovieLens-20M (138k users, 27k items, 20M interactions) by
default, scaled by ``--scale``; ``--users/--items/--interactions`` set a shape exactly (not scaled).
Reports, on the same matrix and in the same run:

* seconds per ALS iteration of implicit (``num_threads=2``, in a separate process so its memory is
  measured alone), of ``ALSRecommender(engine="distributed")`` on ``--workers`` single-threaded
  workers, and of Spark MLlib's ALS (``local[2]``, rank ``--factors``, implicit preferences, in a
  separate process: see ``_spark_als.py``; per iteration is ``(t_B - t_A) / (B - A)`` of two fits
  with ``maxIter`` A and B from ``--spark-iterations``, so its setup and data load are excluded);
  the ratios distributed / implicit and Spark / distributed;
* peak resident memory of implicit's process, of each worker, of this (client) process (it also
  hosts the LocalCluster's scheduler) and of Spark's process tree (driver JVM and Python);
* top-10 for every user: ``recommend_all`` (seen items excluded) in rows/s, and implicit's
  ``recommend`` on all users for comparison;
* the machine's load: 1-minute load average around every stage, and the cores other processes
  used meanwhile; the run is marked "loaded" when the load average exceeded 2.5.

Data is generated once under ``--data-dir`` (parquet; default: see ``_common.py``) and reused.
Results go to ``benchmarks/results/als-u<users>-i<items>-n<interactions>-<engines>.json``.

Usage::

    python benchmarks/bench_als.py --scale 0.25                       # 5M interactions
    python benchmarks/bench_als.py --scale 1.0 --engines implicit --spark
    python benchmarks/bench_als.py --scale 1.0                        # MovieLens-20M shape, all three
    python benchmarks/bench_als.py --users 2000000 --items 500000 --interactions 200000000 --no-spark
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("implicit", "distributed")
ML20M = (138_000, 27_000, 20_000_000)  # users, items, interactions
LOADED = 2.5  # 1-minute load average above which a run on this 2-core machine is marked "loaded"
SPARK_AUTO_MAX_ROWS = 50_000_000  # --spark unset: Spark runs up to this many interactions


def _data_path(data_dir, rows, users, items, seed):
    return Path(data_dir) / f"interactions-{rows}-u{users}-i{items}-s{seed}"


def _ensure_data(data_dir, rows, users, items, seed, workers):
    path = _data_path(data_dir, rows, users, items, seed)
    if path.exists():
        return path
    from distributed import Client, LocalCluster

    from daskml_scale.data import make_interactions
    from daskml_scale.storage import write_parquet

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as client,
    ):
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


class LoadMonitor:
    """The machine's load while each stage runs, sampled every ``interval`` seconds.

    For every stage: the 1-minute load average before, after and at most, and the cores used by
    processes outside this benchmark's process tree: system busy CPU time minus the tree's, where
    the tree's is the last CPU time seen of every process ever seen in it (so a process that left
    the tree, like Spark's JVM, still counts; each loses at most ``interval`` s of CPU at its end).
    """

    def __init__(self, interval=1.0):
        import psutil

        self._psutil, self._me, self.interval = psutil, psutil.Process(), interval
        self._cpu: dict[tuple, float] = {}  # (pid, create_time) -> user + system seconds
        self.stages: dict[str, dict] = {}
        self._sample()  # the CPU this process used before (imports) is not a stage's

    def _sample(self):
        ct = self._psutil.cpu_times()
        busy = sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        procs = [self._me]
        with contextlib.suppress(self._psutil.Error):
            procs += self._me.children(recursive=True)
        for p in procs:
            with contextlib.suppress(self._psutil.Error):
                c = p.cpu_times()
                self._cpu[(p.pid, p.create_time())] = c.user + c.system
        return time.perf_counter(), os.getloadavg()[0], busy, sum(self._cpu.values())

    @contextlib.contextmanager
    def stage(self, name):
        loads, stop = [], threading.Event()

        def poll():
            while not stop.wait(self.interval):
                loads.append(self._sample()[1])

        s0 = self._sample()
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            s1 = self._sample()
            wall = max(s1[0] - s0[0], 1e-9)
            self.stages[name] = {
                "wall_s": wall,
                "load_avg_1min_before": s0[1],
                "load_avg_1min_after": s1[1],
                "load_avg_1min_max": max([s0[1], s1[1], *loads]),
                "own_cores": (s1[3] - s0[3]) / wall,
                "other_cores": max(0.0, (s1[2] - s0[2]) - (s1[3] - s0[3])) / wall,
            }

    @property
    def max_load(self) -> float:
        return max((s["load_avg_1min_max"] for s in self.stages.values()), default=os.getloadavg()[0])


def run_implicit(path, factors, iterations, threads, reg, alpha, seed, topn=True) -> dict:
    """implicit's own ALS with ``threads`` threads, in this (fresh) process."""
    import implicit.cpu.als
    import scipy.sparse as sp
    import threadpoolctl

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
        try:  # the distributed engine's initial factors (a hash of each id), so both start alike
            from daskml_scale.recommend._kernels import init_factors

            model.user_factors = init_factors(users, factors, seed, 0)
            model.item_factors = init_factors(items, factors, seed, 1)
            init = "init_factors"
        except Exception:  # its signature moved: implicit's own random start costs the same time
            model.user_factors = model.item_factors = None
            init = "implicit"
        model.fit(C, show_progress=False, callback=lambda it, el, loss: times.append(el))
        t = time.perf_counter()
        if topn:
            model.recommend(np.arange(C.shape[0]), C, N=10, filter_already_liked_items=True)
        topn_s = time.perf_counter() - t if topn else None
    return {
        "matrix_build_s": build_s,
        "iteration_s": times,
        "topn_s": topn_s,
        "topn_rows_per_s": 10 * C.shape[0] / topn_s if topn else None,
        "peak_rss_mib": _peak_rss_mib(),
        "users": int(C.shape[0]),
        "items": int(C.shape[1]),
        "nnz": int(C.nnz),
        "initial_factors": init,
    }


def run_implicit_subprocess(path, args) -> dict:
    """:func:`run_implicit` in a fresh process, so its peak memory is its own."""
    cmd = [sys.executable, __file__, "--only-implicit", str(path), "--factors", str(args.factors),
           "--iterations", str(args.iterations), "--threads", str(args.threads),
           "--regularization", str(args.regularization), "--alpha", str(args.alpha), "--seed", str(args.seed),
           "--topn" if args.topn else "--no-topn"]  # fmt: skip
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        tail = "\n".join(child.stderr.strip().splitlines()[-25:])
        print(tail, file=sys.stderr)
        raise RuntimeError(f"implicit's process failed (exit {child.returncode}): {tail.splitlines()[-1:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def run_distributed(path, factors, iterations, workers, reg, alpha, seed, memory_limit, topn=True) -> dict:
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
        n_rows = 0
        if topn:
            recs = recommend_all(model, n=10, exclude_seen=ddf)
            n_rows = int(recs.map_partitions(len).sum().compute())  # small: one count
        topn_s = time.perf_counter() - t if topn else None
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
            "topn_rows_per_s": n_rows / topn_s if topn else None,
            "nnz": model.n_interactions_,
        }


def _run_stage(monitor, name, fn, *a, **kw) -> dict:
    """Run one measurement; a failure is reported in the table, not fatal to the others."""
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr)
    with monitor.stage(name):
        try:
            return fn(*a, **kw)
        except Exception as e:  # one engine failing must not lose the others' figures
            traceback.print_exc()
            return {
                "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            }


def _ok(res) -> bool:
    return bool(res) and "error" not in res


def _fmt_mib(values) -> str:
    return " / ".join(f"{v:,.0f}" for v in values)


def _ratio(num, den) -> float | None:
    return num / den if num is not None and den else None


def _verdict(value, goal, at_most) -> str:
    if value is None:
        return "-"
    return "met" if (value <= goal if at_most else value >= goal) else "not met"


def build_tables(args, shape, native, dist, spark, spark_skip, client_peak, monitor):
    """The printed comparison table and detail rows; returns (lines, summary dict)."""
    users, items, rows = shape
    nat_it = float(np.median(native["iteration_s"])) if _ok(native) else None
    dist_it = float(np.median(dist["iteration_s"])) if _ok(dist) else None
    spark_it = float(spark["iteration_s"]) if _ok(spark) else None
    a, b = args.spark_iterations

    def status(res, skipped):
        if res is None:
            return skipped
        return f"FAILED: {res['error']}" if "error" in res else ""

    engines = [
        (f"implicit, {args.threads} threads (own process)",
         f"{nat_it:.2f} (median of {len(native['iteration_s'])})" if nat_it else "-",
         f"{native['peak_rss_mib']:,.0f}" if _ok(native) else "-",
         f"{native['topn_rows_per_s']:,.0f}" if _ok(native) and native["topn_rows_per_s"] else "-",
         status(native, "not run (--engines)")),
        (f"distributed, {args.workers} workers x 1 thread",
         f"{dist_it:.2f} (median of {len(dist['iteration_s'])})" if dist_it else "-",
         f"workers {_fmt_mib(dist['worker_peak_rss_mib'].values())}" if _ok(dist) else "-",
         f"{dist['topn_rows_per_s']:,.0f} (recommend_all)" if _ok(dist) and dist["topn_rows_per_s"] else "-",
         status(dist, "not run (--engines)")),
        ("Spark MLlib ALS, local[2] (own process)",
         f"{spark_it:.2f} (maxIter {b} - {a})" if spark_it is not None else "-",
         f"JVM+driver tree {spark['tree_peak_rss_mib']:,.0f}" if _ok(spark) else "-",
         "-",
         status(spark, f"skipped: {spark_skip}")),
        (f"client process (this one{', with the LocalCluster scheduler' if _ok(dist) else ''})",
         "", f"{client_peak:,.0f}", "", ""),
    ]  # fmt: skip
    header = ("", "s/iteration", "peak RSS MiB", "top-10 rows/s", "")
    widths = [max(len(r[i]) for r in [header, *engines]) for i in range(5)]
    lines = [f"ALS {users:,} users x {items:,} items, {rows:,} interactions, {args.factors} factors"]
    for r in [header, *engines]:
        lines.append("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)).rstrip())

    big = rows > SPARK_AUTO_MAX_ROWS
    goal_dist = 1.2 if big else 1.1
    r_dist = _ratio(dist_it, nat_it)
    r_spark = _ratio(spark_it, dist_it)
    r_spark_nat = _ratio(spark_it, nat_it)
    r_topn = _ratio(
        dist["topn_rows_per_s"] if _ok(dist) else None, native["topn_rows_per_s"] if _ok(native) else None
    )
    ratios = [
        (
            "distributed / implicit, s/iteration",
            r_dist,
            f"<= {goal_dist}x",
            _verdict(r_dist, goal_dist, True),
        ),
        ("Spark / distributed, s/iteration", r_spark, ">= 10x", _verdict(r_spark, 10, False)),
        ("Spark / implicit, s/iteration", r_spark_nat, "", ""),
        ("recommend_all / implicit recommend, rows/s", r_topn, ">= 1x", _verdict(r_topn, 1, False)),
    ]
    lines.append("")
    w = max(len(r[0]) for r in ratios)
    for name, value, goal, verdict in ratios:
        shown = f"{value:.2f}x" if value is not None else "-"
        lines.append(f"{name:<{w}}  {shown:>8}  {goal:<8}  {verdict}".rstrip())

    detail = []
    if _ok(native):
        matrix_mib = native["nnz"] * 8 / 2**20  # CSR values + indices (float32 + int32)
        factors_mib = (native["users"] + native["items"]) * args.factors * 4 / 2**20
        detail += [
            ("matrix (users x items, stored pairs)", f"{native['users']:,} x {native['items']:,}, {native['nnz']:,}"),
            ("CSR size / factors size", f"{matrix_mib:.0f} MiB / {factors_mib:.0f} MiB"),
            ("implicit: matrix build s (pandas, in-memory)", f"{native['matrix_build_s']:.1f}"),
            ("implicit: iterations s", ", ".join(f"{t:.2f}" for t in native["iteration_s"])),
        ]  # fmt: skip
        if native["topn_rows_per_s"]:
            detail.append((f"top-10 all users, implicit recommend ({args.threads} threads)",
                           f"{native['topn_rows_per_s']:,.0f} rows/s ({native['topn_s']:.1f}s)"))  # fmt: skip
    if _ok(dist):
        detail += [
            ("distributed: stored pairs", f"{dist['nnz']:,}"),
            ("distributed: setup (id maps, blocks) s", f"{dist['setup_s']:.1f}"),
            ("distributed: iterations s", ", ".join(f"{t:.2f}" for t in dist["iteration_s"])),
            ("worker RSS MiB idle (imports done)", _fmt_mib(dist["worker_rss_mib_idle"].values())),
            ("worker RSS MiB during iterations (max)", _fmt_mib(dist["worker_rss_mib_during_iterations"].values())),
            ("worker peak RSS MiB (after fit)", _fmt_mib(dist["worker_peak_rss_mib_after_fit"].values())),
            ("worker peak RSS MiB (after top-10)", _fmt_mib(dist["worker_peak_rss_mib"].values())),
        ]  # fmt: skip
        if dist["topn_rows_per_s"]:
            detail.append(("top-10 all users, recommend_all",
                           f"{dist['topn_rows_per_s']:,.0f} rows/s ({dist['topn_s']:.1f}s, {dist['topn_rows']:,} rows)"))  # fmt: skip
    if _ok(spark):
        detail += [
            ("Spark: version, blocks (user x item)",
             f"{spark['spark_version']}, {spark['num_user_blocks']} x {spark['num_item_blocks']}, "
             f"driver memory {spark['driver_memory']}"),
            ("Spark: session start / parquet load+sum duplicates+cache s",
             f"{spark['session_start_s']:.1f} / {spark['load_s']:.1f} ({spark['pairs']:,} pairs)"),
            (f"Spark: fit s with maxIter {a} / {b}", f"{spark['fit_s'][str(a)]:.1f} / {spark['fit_s'][str(b)]:.1f}"),
            ("Spark: per iteration", f"{spark['per_iteration_method']} (setup and data load excluded)"),
            ("Spark: peak RSS MiB, process tree (polled) / JVM VmHWM",
             f"{spark['tree_peak_rss_mib']:,.0f} / {spark['jvm_peak_rss_mib']:,.0f}"),
        ]  # fmt: skip
    detail.append(("client process peak RSS MiB (getrusage)", f"{client_peak:,.0f}"))
    for name, st in monitor.stages.items():
        detail.append(
            (f"load: {name}",
             f"1-min load avg {st['load_avg_1min_before']:.1f} -> {st['load_avg_1min_after']:.1f} "
             f"(max {st['load_avg_1min_max']:.1f}); other processes {st['other_cores']:.2f} cores, "
             f"this benchmark {st['own_cores']:.2f}, over {st['wall_s']:.0f}s")
        )  # fmt: skip
    loaded = monitor.max_load > LOADED
    detail.append(
        ("machine", f"{'LOADED' if loaded else 'quiet'}: max 1-min load average {monitor.max_load:.1f} "
                    f"(> {LOADED} is loaded) on {os.cpu_count()} cores")
    )  # fmt: skip
    lines.append("")
    w = max(len(n) for n, _ in detail)
    lines += [f"{n:<{w}}  {v}" for n, v in detail]
    summary = {
        "s_per_iteration": {"implicit": nat_it, "distributed": dist_it, "spark": spark_it},
        "ratios": {"distributed_over_implicit": r_dist, "spark_over_distributed": r_spark,
                   "spark_over_implicit": r_spark_nat, "recommend_all_over_implicit_recommend": r_topn},
        "goals": {"distributed_over_implicit_at_most": goal_dist, "spark_over_distributed_at_least": 10,
                  "recommend_all_over_implicit_recommend_at_least": 1},
        "peak_rss_mib": {"implicit_process": native["peak_rss_mib"] if _ok(native) else None,
                         "workers": list(dist["worker_peak_rss_mib"].values()) if _ok(dist) else None,
                         "client_process": client_peak,
                         "spark_process_tree": spark["tree_peak_rss_mib"] if _ok(spark) else None},
        "loaded": loaded,
        "max_load_average_1min": monitor.max_load,
    }  # fmt: skip
    return lines, summary


def _pair(text):
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two iteration counts A,B; got {text!r}") from None
    if not 1 <= a < b:
        raise argparse.ArgumentTypeError(f"need 1 <= A < B; got {text!r}")
    return a, b


def _engines(text):
    chosen = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in chosen if e not in ENGINES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {bad}; choose among {', '.join(ENGINES)}")
    return chosen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scale", type=float, default=0.25, help="multiplies the MovieLens-20M shape (default 0.25)"
    )
    p.add_argument("--users", type=int, default=None, help=f"users, exactly (default {ML20M[0]:,} x scale)")
    p.add_argument("--items", type=int, default=None, help=f"items, exactly (default {ML20M[1]:,} x scale)")
    p.add_argument("--interactions", type=int, default=None, help=f"interactions, exactly (default {ML20M[2]:,} x scale)")  # fmt: skip
    p.add_argument("--engines", type=_engines, default=list(ENGINES), help="comma list of implicit,distributed (default both)")  # fmt: skip
    p.add_argument("--spark", action=argparse.BooleanOptionalAction, default=None,
                   help=f"Spark MLlib ALS baseline (default: on up to {SPARK_AUTO_MAX_ROWS:,} interactions)")  # fmt: skip
    p.add_argument("--spark-iterations", type=_pair, default=(1, 3), metavar="A,B",
                   help="Spark is fitted with maxIter A and B; per iteration = (t_B - t_A) / (B - A) (default 1,3)")  # fmt: skip
    p.add_argument("--spark-driver-memory", default="8g", help="Spark local[2] driver (and executor) heap")
    p.add_argument("--topn", action=argparse.BooleanOptionalAction, default=True,
                   help="time top-10 for every user (implicit recommend / recommend_all); --no-topn skips it")  # fmt: skip
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="implicit's threads")
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--memory-limit", default="8GiB", help="per worker")
    p.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(p)
    p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/als-u..-i..-n..-<engines>.json)")  # fmt: skip
    p.add_argument("--only-implicit", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.only_implicit:  # child process: implicit alone, so its memory is its own
        res = run_implicit(args.only_implicit, args.factors, args.iterations, args.threads,
                           args.regularization, args.alpha, args.seed, args.topn)  # fmt: skip
        print(json.dumps(res))
        return

    users = args.users if args.users is not None else int(ML20M[0] * args.scale)
    items = args.items if args.items is not None else int(ML20M[1] * args.scale)
    rows = args.interactions if args.interactions is not None else int(ML20M[2] * args.scale)
    run_spark = args.spark if args.spark is not None else rows <= SPARK_AUTO_MAX_ROWS
    quiet_cluster_logs()
    monitor = LoadMonitor()

    if _data_path(args.data_dir, rows, users, items, args.seed).exists():
        path = _data_path(args.data_dir, rows, users, items, args.seed)
    else:
        with monitor.stage("data generation"):
            path = _ensure_data(args.data_dir, rows, users, items, args.seed, args.workers)
    client_peak_data = _peak_rss_mib()

    native = dist = spark = None
    spark_skip = (
        "--no-spark" if args.spark is False else f"off above {SPARK_AUTO_MAX_ROWS:,} interactions (--spark)"
    )
    if "implicit" in args.engines:
        native = _run_stage(monitor, "implicit", run_implicit_subprocess, path, args)
    if run_spark:
        import _spark_als

        spark_skip = _spark_als.unavailable()
        if spark_skip is None:
            spark = _run_stage(monitor, "spark", _spark_als.measure_spark, path, rank=args.factors,
                               iterations=args.spark_iterations, reg=args.regularization, alpha=args.alpha,
                               seed=args.seed, driver_memory=args.spark_driver_memory)  # fmt: skip
        else:
            print(f"Spark baseline skipped: {spark_skip}", file=sys.stderr)
    if "distributed" in args.engines:
        dist = _run_stage(monitor, "distributed", run_distributed, path, args.factors, args.iterations,
                          args.workers, args.regularization, args.alpha, args.seed, args.memory_limit,
                          args.topn)  # fmt: skip

    client_peak = _peak_rss_mib()
    lines, summary = build_tables(
        args, (users, items, rows), native, dist, spark, spark_skip, client_peak, monitor
    )
    print("\n".join(lines))

    ran = [e for e in ENGINES if e in args.engines] + (["spark"] if spark is not None else [])
    name = f"als-u{users}-i{items}-n{rows}-{'+'.join(ran) or 'none'}.json"
    out = Path(args.out) if args.out else RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": {**vars(args), "data_dir": str(args.data_dir)},
              "shape": {"users": users, "items": items, "interactions": rows}, "data": str(path),
              **summary, "implicit": native, "distributed": dist, "spark": spark, "spark_skipped": None if spark else spark_skip,
              "client_peak_rss_mib": client_peak, "client_peak_rss_mib_after_data": client_peak_data,
              "load": monitor.stages, "table": lines,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
