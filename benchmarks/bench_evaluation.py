"""Benchmark: exact ROC-AUC + PR-AUC on Dask against scikit-learn, and on parquet scores on disk.

Part 1 (in memory): N scores (default 10M) generated on the workers and persisted; our one-pass
``classification_metrics`` (ROC-AUC and PR-AUC together) on the 2-worker LocalCluster, against
scikit-learn's ``roc_auc_score`` + ``average_precision_score`` on the same numbers in this process.
Both tied scores (rounded to 4 decimals) and continuous scores (float64, all distinct).

Part 2 (out of core): scores written as parquet under ``--data-dir`` (created once, reused), then
evaluated from disk: wall time and peak RSS per worker (sampled every 0.2 s), for the default tree
reduction and for ``score_ranges=R`` (which bounds the memory of continuous scores).

Part 3 (``--mode safe-defaults``): the defaults at a size that used to kill workers: N continuous
(all distinct) scores from parquet (default 30M) on workers of ``--memory-limit`` (default 1GiB),
with NO option: ``classification_metrics(ddf)`` and ``Report.classification(ddf)``. scikit-learn's
``roc_auc_score`` + ``average_precision_score`` run on the same parquet in a separate process (so
its memory does not count against the workers); the table gives both results, their difference,
times, the plan (score ranges, passes, the most distinct scores one task held) and the peak RSS of
each worker.

Examples
--------
    python benchmarks/bench_evaluation.py                       # 10M in memory; 10M and 30M on disk
    python benchmarks/bench_evaluation.py --disk-sizes 100000000 300000000 --memory-limit 8GiB
    python benchmarks/bench_evaluation.py --mode safe-defaults   # 30M distinct, 2 workers x 1 GiB
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from _common import add_data_dir_arg, quiet_cluster_logs

ROWS_PER_PART = 1_000_000


def make_part(i: int, rows: int, seed: int, decimals: int | None) -> pd.DataFrame:
    """One partition of (is_fraud, score): 1% positives, scores informative but overlapping."""
    rng = np.random.default_rng([seed, i])
    y = (rng.random(rows) < 0.01).astype(np.int8)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(0, 1, rows) + 2.0 * y - 3.0)))
    if decimals is not None:
        s = np.round(s, decimals)
    return pd.DataFrame({"is_fraud": y, "score": s})


def _parts(n: int) -> list[tuple[int, int]]:
    return [
        (i, min(ROWS_PER_PART, n - i * ROWS_PER_PART))
        for i in range((n + ROWS_PER_PART - 1) // ROWS_PER_PART)
    ]


def frame(n: int, seed: int, decimals):
    import dask.dataframe as dd

    return dd.from_map(lambda p: make_part(p[0], p[1], seed, decimals), _parts(n))


class PeakRSS:
    """Poll every worker's resident memory in a background thread; keep the maximum per worker."""

    def __init__(self, client, interval: float = 0.2):
        self.client, self.interval = client, interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def _loop(self):
        while not self._stop.is_set():
            try:
                for w, v in self.client.run(self._rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), v)
            except Exception:  # noqa: BLE001 - sampling must never break the run
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self.baseline = self.client.run(self._rss)
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def in_memory(client, n: int, decimals, seed: int, repeats: int, score_ranges=None) -> dict:
    from sklearn import metrics as skm

    from daskml_scale.evaluation import classification_metrics

    ddf = frame(n, seed, decimals).persist()
    from distributed import wait

    wait(ddf)
    ours = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m = classification_metrics(ddf, score_ranges=score_ranges, client=client)
        ours.append(time.perf_counter() - t0)
    local = pd.concat([make_part(i, r, seed, decimals) for i, r in _parts(n)], ignore_index=True)
    y, s = local["is_fraud"].to_numpy(), local["score"].to_numpy()
    sk = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        auc = skm.roc_auc_score(y, s)
        ap = skm.average_precision_score(y, s)
        sk.append(time.perf_counter() - t0)
    del ddf
    return {
        "part": "in_memory",
        "rows": n,
        "scores": "tied (4 decimals)" if decimals is not None else "continuous",
        "score_ranges": score_ranges,
        "distinct_scores": int(len(np.unique(s))),
        "ours_s": float(np.median(ours)),
        "sklearn_s": float(np.median(sk)),
        "speedup_vs_sklearn": float(np.median(sk) / np.median(ours)),
        "max_abs_diff_roc": abs(m["roc_auc"] - auc),
        "max_abs_diff_ap": abs(m["pr_auc"] - ap),
    }


def ensure_parquet(client, n: int, decimals, seed: int, root: Path) -> Path:
    from daskml_scale.storage import write_parquet

    kind = "tied4" if decimals is not None else "continuous"
    path = root / f"eval-scores-{n}-{kind}"
    if not (path / "_SUCCESS.json").exists():
        t0 = time.perf_counter()
        write_parquet(frame(n, seed, decimals), path, client=client)
        (path / "_SUCCESS.json").write_text(json.dumps({"rows": n, "seed": seed, "kind": kind}))
        print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def from_disk(client, path: Path, n: int, kind: str, score_ranges, passes=1) -> dict:
    import dask.dataframe as dd

    from daskml_scale.evaluation import classification_metrics

    ddf = dd.read_parquet(str(path))
    from daskml_scale.evaluation._classification import _Source
    from daskml_scale.evaluation._ranges import Spec, make_plan

    # how many ranges the run uses (outside the timing)
    plan = make_plan(
        _Source.from_frame(ddf, "is_fraud", "score"),
        score_ranges,
        passes,
        compute=True,
        client=client,
        spec=Spec(),
    )
    n_ranges = plan.n_ranges
    with PeakRSS(client) as mem:
        t0 = time.perf_counter()
        m = classification_metrics(ddf, score_ranges=score_ranges, passes=passes, client=client)
        wall = time.perf_counter() - t0
    return {
        "part": "from_disk",
        "rows": n,
        "scores": kind,
        "score_ranges": score_ranges,
        "n_ranges": n_ranges,
        "passes": plan.passes,
        "partitions": ddf.npartitions,
        "wall_s": wall,
        "rows_per_s": n / wall,
        "peak_rss_per_worker_gib": sorted(round(v / 2**30, 2) for v in mem.peak.values()),
        "baseline_rss_per_worker_gib": sorted(round(v / 2**30, 2) for v in mem.baseline.values()),
        "roc_auc": m["roc_auc"],
        "pr_auc": m["pr_auc"],
    }


_SKLEARN_CHILD = """
import json, resource, sys, time
import pandas as pd
from sklearn import metrics as skm
t0 = time.perf_counter()
df = pd.read_parquet(sys.argv[1], columns=["is_fraud", "score"])
t1 = time.perf_counter()
auc = skm.roc_auc_score(df["is_fraud"].to_numpy(), df["score"].to_numpy())
ap = skm.average_precision_score(df["is_fraud"].to_numpy(), df["score"].to_numpy())
t2 = time.perf_counter()
print(json.dumps({"roc_auc": auc, "pr_auc": ap, "read_s": t1 - t0, "metrics_s": t2 - t1,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def sklearn_in_child(path: Path) -> dict:
    """scikit-learn's ROC-AUC + AP on the parquet, in a separate process (its own memory)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _SKLEARN_CHILD, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def safe_defaults(client, path: Path, n: int) -> list[dict]:
    """The defaults, no option, on continuous scores from disk: metrics, then a full report."""
    import dask.dataframe as dd

    from daskml_scale.evaluation import Report, classification_metrics

    ddf = dd.read_parquet(str(path))
    rows = []
    for what in ("classification_metrics", "Report.classification"):
        client.run(__import__("gc").collect)
        with PeakRSS(client) as mem:
            t0 = time.perf_counter()
            if what == "classification_metrics":
                m = classification_metrics(ddf, client=client)
                info = {}
            else:
                r = Report.classification(ddf, client=client)
                m = r.metrics
                info = {
                    "score_ranges": m["score_ranges"],
                    "passes": m["passes"],
                    "max_range_scores": m["max_range_scores"],
                    "distinct_scores": m["distinct_scores"],
                    "roc_points": len(r.tables["roc"]),
                }
            wall = time.perf_counter() - t0
        rows.append(
            {
                "part": "safe_defaults",
                "what": what,
                "rows": n,
                "scores": "continuous",
                "wall_s": wall,
                "peak_rss_per_worker_gib": sorted(round(v / 2**30, 3) for v in mem.peak.values()),
                "baseline_rss_per_worker_gib": sorted(round(v / 2**30, 3) for v in mem.baseline.values()),
                "roc_auc": m["roc_auc"],
                "pr_auc": m["pr_auc"],
                **info,
            }
        )
        print("  ", rows[-1], file=sys.stderr)
    print("scikit-learn in a separate process ...", file=sys.stderr)
    sk = sklearn_in_child(path)
    for r in rows:
        r["sklearn"] = sk
        r["abs_diff_roc_auc"] = abs(r["roc_auc"] - sk["roc_auc"])
        r["abs_diff_pr_auc"] = abs(r["pr_auc"] - sk["pr_auc"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="in-memory comparison size (default 10M)")
    p.add_argument(
        "--disk-sizes", type=int, nargs="*", default=[10_000_000, 30_000_000], help="parquet sizes"
    )
    p.add_argument(
        "--score-ranges", default="auto", help="R (an int or 'auto') for the range-split run (default auto)"
    )
    p.add_argument(
        "--passes", type=int, default=3, help="extra continuous run in this many passes (default 3)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="6GiB", help="per worker")
    add_data_dir_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-memory", action="store_true", help="skip the in-memory sklearn comparison")
    p.add_argument(
        "--mode",
        choices=("compare", "safe-defaults"),
        default="compare",
        help="compare (parts 1-2, the default) or safe-defaults (part 3: defaults on small workers)",
    )
    p.add_argument("--safe-rows", type=int, default=30_000_000, help="rows for --mode safe-defaults")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluation.json"))
    args = p.parse_args(argv)
    if args.score_ranges.isdigit():
        args.score_ranges = int(args.score_ranges)
    if args.mode == "safe-defaults":
        return main_safe(args)

    from distributed import Client, LocalCluster

    os.makedirs(args.data_dir, exist_ok=True)
    rows = []
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
    ):
        if not args.skip_memory:
            for decimals, r in ((4, 1), (None, 1), (None, args.score_ranges)):
                print(
                    f"in memory: {args.rows:,} rows, decimals={decimals}, score_ranges={r}", file=sys.stderr
                )
                rows.append(in_memory(client, args.rows, decimals, args.seed, args.repeats, r))
                print("  ", rows[-1], file=sys.stderr)
        for n in args.disk_sizes:
            for decimals in (4, None):
                kind = "tied (4 decimals)" if decimals is not None else "continuous"
                path = ensure_parquet(client, n, decimals, args.seed, Path(args.data_dir))
                # 1 = one range (the old default); then the defaults ("auto" ranges and passes)
                runs = [(1, 1), (args.score_ranges, None)]
                if decimals is None and n > 30_000_000:
                    # one range holds every distinct score in one task: 100M continuous scores need more
                    # than a worker's memory (measured: 4 workers killed at 6 GiB), which is what
                    # score_ranges and passes are for
                    runs = runs[1:]
                if decimals is None and args.passes > 1:
                    runs.append((args.score_ranges, args.passes))
                for r, passes in runs:
                    print(
                        f"from disk: {n:,} rows, {kind}, score_ranges={r}, passes={passes}", file=sys.stderr
                    )
                    rows.append(from_disk(client, path, n, kind, r, passes))
                    print("  ", rows[-1], file=sys.stderr)

    print(
        "\n| part | rows | scores | ranges | passes | ours (s) | scikit-learn (s) | speedup | peak RSS/worker (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "in_memory":
            print(
                f"| in memory | {r['rows']:,} | {r['scores']} | {r['score_ranges'] or '-'} | 1 | {r['ours_s']:.2f} | "
                f"{r['sklearn_s']:.2f} | "
                f"{r['speedup_vs_sklearn']:.2f}x | - |"
            )
        else:
            print(
                f"| parquet | {r['rows']:,} | {r['scores']} | {r['score_ranges'] or '-'} ({r['n_ranges']}) | {r['passes']} | "
                f"{r['wall_s']:.2f} | - | - | "
                f"{r['peak_rss_per_worker_gib']} |"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "evaluation",
        "when": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "workers": args.workers,
        "memory_limit": args.memory_limit,
        "results": rows,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def main_safe(args) -> int:
    from distributed import Client, LocalCluster

    limit = args.memory_limit if args.memory_limit != "6GiB" else "1GiB"
    os.makedirs(args.data_dir, exist_ok=True)
    quiet_cluster_logs()
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            memory_limit=limit,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        path = ensure_parquet(client, args.safe_rows, None, args.seed, Path(args.data_dir))
        print(f"safe defaults: {args.safe_rows:,} continuous scores, workers of {limit}", file=sys.stderr)
        rows = safe_defaults(client, path, args.safe_rows)
    sk = rows[0]["sklearn"]
    print(f"\nworkers: {args.workers} x 1 thread, memory_limit={limit}; {args.safe_rows:,} distinct scores")
    print(
        "| what | seconds | ranges | passes | max scores/task | ROC-AUC | PR-AUC | |diff| vs sklearn (ROC, PR) | peak RSS/worker (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['what']} | {r['wall_s']:.1f} | {r.get('score_ranges', '-')} | {r.get('passes', '-')} | "
            f"{r.get('max_range_scores', '-')} | {r['roc_auc']:.12f} | {r['pr_auc']:.12f} | "
            f"{r['abs_diff_roc_auc']:.1e}, {r['abs_diff_pr_auc']:.1e} | {r['peak_rss_per_worker_gib']} |"
        )
    print(
        f"| scikit-learn (separate process) | {sk['metrics_s']:.1f} (+{sk['read_s']:.1f} read) | - | - | - | "
        f"{sk['roc_auc']:.12f} | {sk['pr_auc']:.12f} | - | {sk['peak_rss_gib']:.2f} (one process) |"
    )
    out = (
        Path(args.out).with_name("evaluation_safe_defaults.json")
        if args.out.endswith("evaluation.json")
        else Path(args.out)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "evaluation_safe_defaults",
        "when": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "workers": args.workers,
        "memory_limit": limit,
        "results": rows,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
