"""Approximate similar items (HNSW, faiss) against exact brute force on a large item catalogue.

Item factors (``--items`` x ``--factors``, float32), by default from a real fit:
``ALSRecommender(engine="implicit")`` on synthetic interactions (``make_interactions``, 40 per item,
one user per 2.5 items), cached under ``--data-dir``; or ``--source clustered``: a mixture of
Gaussians (one cluster per 250 items) with log-normal norms. Items never interacted with are absent
from an ALS model, so the ALS catalogue is slightly smaller than ``--items``.

Measured on one random sample of ``--queries`` items (default 5,000):

* exact and ANN are timed on the same ten chunks of the sample, alternated (load drift hits both);
* exact: brute-force cosine top-10 (``exact_top_n``: float32 GEMM against all items in tiles of 64
  queries + ``argpartition``), **one thread** (BLAS limited to 1); the time for every item is this
  per-query time times the number of items (linear extrapolation: brute force costs the same per
  query). The float64 result is the ground truth for recall;
* ANN: ``ItemIndex`` built in this process with one thread (build time), queried for the same sample
  with one thread (per-query time; the time for every item is extrapolated the same way); recall@10
  against exact; speed-up = exact time / ANN query time per query, and end to end for every item
  (ANN build + queries against exact);
* an ``ef_search`` sweep on the same index (recall and speed-up per setting);
* with ``--cluster`` (default): ``approximate_similar_items`` for every item on a LocalCluster of
  ``--workers`` single-threaded workers, end to end (one index built per worker): wall time, builds per
  worker, and recall@10 of its output on the sample.

Usage::

    python benchmarks/bench_ann.py                      # 500k items, ~20 min on 2 cores
    python benchmarks/bench_ann.py --items 20000        # smoke run, < 1 min

Prints a markdown table and writes ``benchmarks/results/ann.json`` (``ann-i<items>.json`` for other
sizes). The machine load is recorded; the run is flagged "loaded" when the 1-minute load average
exceeded 2 at any check (the benchmark's own busy processes beyond one discounted: its workers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import threadpoolctl  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FULL_ITEMS = 500_000


class Load:
    """1-minute load averages taken along the run (``own``: busy processes of this benchmark)."""

    def __init__(self):
        self.samples = []

    def check(self, label, own=1):
        self.samples.append((label, os.getloadavg()[0], own))

    @property
    def loaded(self) -> bool:
        """Load from others above 2 at some check (this benchmark's own processes discounted)."""
        return max(v - own + 1 for _, v, own in self.samples) > 2.0


def als_factors(data_dir, items, factors, iterations, seed):
    """Item ids and factors of an implicit ALS fit on synthetic interactions (cached as .npy)."""
    import dask

    from daskml_scale.data import make_interactions
    from daskml_scale.recommend import ALSRecommender

    rows, users = 40 * items, max(100, int(items / 2.5))
    stem = Path(data_dir) / f"ann-als-i{items}-u{users}-n{rows}-k{factors}-it{iterations}-s{seed}"
    if not stem.with_suffix(".factors.npy").exists():
        t = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=2):
            ddf = make_interactions(rows, users, items, partition_rows=1 << 20, seed=seed).persist()
            model = ALSRecommender(
                factors=factors, iterations=iterations, engine="implicit", random_state=seed
            ).fit(ddf)
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.save(stem.with_suffix(".ids.npy"), model.item_ids_)
        np.save(stem.with_suffix(".factors.npy"), model.item_factors_.astype(np.float32))
        print(f"ALS on {rows:,} interactions in {time.perf_counter() - t:.0f}s -> {stem}.*", file=sys.stderr)
    ids = np.load(stem.with_suffix(".ids.npy"), allow_pickle=False)
    F = np.load(stem.with_suffix(".factors.npy"), allow_pickle=False)
    return ids, F, {"interactions": rows, "users": users, "als_iterations": iterations}


def clustered_factors(items, factors, seed):
    """Mixture of Gaussians, one cluster per 250 items, log-normal norms (popularity-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, items // 250), factors))
    X = centres[rng.integers(0, len(centres), items)] + rng.normal(size=(items, factors))
    X *= rng.lognormal(0.0, 0.7, size=(items, 1))
    return np.arange(items, dtype=np.int64), X.astype(np.float32), {"clusters": len(centres)}


def interleaved(F, sample, index, efs, chunks=10):
    """Exact and ANN timings on the same chunks of the sample, alternated, so load drift hits both.

    Returns the float64 truth, seconds of exact float32 / float64, and per ``ef_search`` the
    neighbours found and seconds.
    """
    from daskml_scale.recommend._ann import exact_top_n

    truth, f32_s, f64_s = [], 0.0, 0.0
    found, ann_s = {ef: [] for ef in efs}, dict.fromkeys(efs, 0.0)
    with threadpoolctl.threadpool_limits(1):
        for part in np.array_split(sample, chunks):
            t = time.perf_counter()
            exact_top_n(F, part, 10, dtype=np.float32)
            f32_s += time.perf_counter() - t
            t = time.perf_counter()
            truth.append(exact_top_n(F, part, 10, dtype=np.float64)[0])
            f64_s += time.perf_counter() - t
            index.ef_search = max(efs)
            index.query(part[:100], n=10)  # untimed: the graph back in cache after the exact GEMM
            for ef in efs:
                index.ef_search = ef
                t = time.perf_counter()
                found[ef].append(index.query(part, n=10)[0])
                ann_s[ef] += time.perf_counter() - t
    return np.concatenate(truth), f32_s, f64_s, {ef: np.concatenate(v) for ef, v in found.items()}, ann_s


def recall(pos, truth) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(pos, truth)]))


def run_cluster(ids, F, sample, truth, workers, params, memory_limit) -> dict:
    from distributed import Client, LocalCluster

    from daskml_scale.recommend._ann import approximate_similar_items, recall_at_k

    quiet_cluster_logs()

    def builds():
        from daskml_scale.recommend import _ann

        return sum(_ann._builds.values())

    def warm_imports():  # imports on the workers are not part of the timing
        import faiss  # noqa: F401

        import daskml_scale.recommend._ann  # noqa: F401

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=":0", memory_limit=memory_limit) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.run(warm_imports)
        sample_ids = ids[sample]
        t = time.perf_counter()
        sims = approximate_similar_items(ids, F, n=10, client=client, **params)
        kept = sims.map_partitions(lambda df: df[df["item_id"].isin(sample_ids)])
        counted = sims.map_partitions(lambda df: pd.Series([len(df)]))
        got, n_rows = client.compute([kept, counted.sum()], sync=True)
        wall = time.perf_counter() - t
        per_worker = client.run(builds)
    exact = pd.DataFrame(
        {"item_id": np.repeat(sample_ids, 10), "similar_item_id": ids[truth.ravel()],
         "rank": np.tile(np.arange(1, 11), len(sample))}
    )  # fmt: skip
    return {
        "workers": workers,
        "wall_s": wall,
        "partitions": sims.npartitions,
        "rows": int(n_rows),
        "index_builds_per_worker": per_worker,
        "recall_at_10": recall_at_k(got, exact, k=10),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=FULL_ITEMS)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--source", choices=["als", "clustered"], default="als")
    p.add_argument("--als-iterations", type=int, default=10)
    p.add_argument("--queries", type=int, default=5_000, help="sample of items timed exactly and by ANN")
    p.add_argument("--M", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument(
        "--sweep", default="32,64,128,256", help="ef_search values tried on the same index ('' = none)"
    )
    p.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=True,
                   help="also run approximate_similar_items for every item on a LocalCluster")  # fmt: skip
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="6GiB", help="per worker")
    p.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(p)
    p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/ann.json)")
    args = p.parse_args(argv)

    from daskml_scale.recommend._ann import ItemIndex

    load = Load()
    load.check("start")
    if args.source == "als":
        ids, F, source_info = als_factors(
            args.data_dir, args.items, args.factors, args.als_iterations, args.seed
        )
    else:
        ids, F, source_info = clustered_factors(args.items, args.factors, args.seed)
    n_items = len(F)
    sample = np.sort(
        np.random.default_rng(args.seed + 1).choice(n_items, min(args.queries, n_items), replace=False)
    )
    load.check("factors ready")

    params = {"M": args.M, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    index = ItemIndex(n_threads=1, **params).fit(F)
    load.check("index built")
    efs = sorted({args.ef_search, *(int(v) for v in args.sweep.split(",") if v)})
    truth, exact32_s, exact64_s, found, ann_s = interleaved(F, sample, index, efs)
    exact_q = exact32_s / len(sample)
    sweep = {
        ef: {"recall_at_10": recall(found[ef], truth), "query_ms": ann_s[ef] / len(sample) * 1e3,
             "speedup": exact32_s / ann_s[ef]}
        for ef in efs
    }  # fmt: skip
    load.check("queries done")
    main_run = sweep[args.ef_search]
    ann_q = main_run["query_ms"] / 1e3
    ann_all_s = index.build_seconds_ + ann_q * n_items
    cluster = None
    if args.cluster:
        cluster = run_cluster(ids, F, sample, truth, args.workers, params, args.memory_limit)
        load.check("cluster done", own=args.workers)

    mem_mib = n_items * (args.factors * 4 + args.M * 8) / 2**20
    source = (
        f"ALS factors (implicit, {source_info['als_iterations']} it.) on {source_info['interactions']:,} "
        f"synthetic interactions, {source_info['users']:,} users"
        if args.source == "als"
        else f"synthetic clustered factors ({source_info['clusters']:,} Gaussian clusters, log-normal norms)"
    )
    rows_out = [
        ("catalogue", f"{n_items:,} items x {args.factors} factors (float32): {source}"),
        ("HNSW (faiss IndexHNSWFlat, inner product on normalised rows)",
         f"M={args.M}, ef_construction={args.ef_construction}, ef_search={args.ef_search}; ~{mem_mib:.0f} MiB"),
        ("query sample (timed exactly and by ANN; all-items times extrapolated)", f"{len(sample):,} items"),
        ("exact, float32 GEMM tiles + argpartition, 1 thread: ms/query", f"{exact_q * 1e3:.2f}"),
        ("exact, float64 (ground truth), 1 thread: ms/query", f"{exact64_s / len(sample) * 1e3:.2f}"),
        ("ANN build, 1 thread: s", f"{index.build_seconds_:.1f}"),
        ("ANN query (search + exact rescoring), 1 thread: ms/query", f"{main_run['query_ms']:.3f}"),
        ("recall@10 vs exact (sample)", f"{main_run['recall_at_10']:.4f}"),
        ("speed-up per query (exact / ANN)", f"{main_run['speedup']:.1f}x"),
        ("all items, 1 thread: exact (extrapolated) vs ANN build + queries (extrapolated)",
         f"{exact_q * n_items:,.0f} s vs {ann_all_s:,.0f} s ({exact_q * n_items / ann_all_s:.1f}x)"),
    ]  # fmt: skip
    for ef, r in sweep.items():
        rows_out.append((f"  ef_search={ef}: recall@10 / ms per query / speed-up",
                         f"{r['recall_at_10']:.4f} / {r['query_ms']:.3f} / {r['speedup']:.1f}x"))  # fmt: skip
    if cluster:
        rows_out += [
            (f"approximate_similar_items, all items, {cluster['workers']} workers x 1 thread: wall s",
             f"{cluster['wall_s']:.1f} ({cluster['rows']:,} rows, {cluster['partitions']} partitions)"),
            ("  index builds per worker", ", ".join(str(v) for v in cluster["index_builds_per_worker"].values())),
            ("  recall@10 of its output (sample)", f"{cluster['recall_at_10']:.4f}"),
        ]  # fmt: skip
    rows_out.append(
        ("machine load (1 min) along the run", ", ".join(f"{v:.1f}" for _, v, _ in load.samples)
         + f" on {os.cpu_count()} cores" + (" (LOADED: timings noisy)" if load.loaded else ""))
    )  # fmt: skip
    print("| measure | value |\n|---|---|")
    for a, b in rows_out:
        print(f"| {a} | {b} |")

    out = (
        Path(args.out)
        if args.out
        else RESULTS / ("ann.json" if args.items == FULL_ITEMS else f"ann-i{args.items}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    import faiss

    from daskml_scale.storage import library_versions

    result = {
        "args": vars(args), "n_items": n_items, "source": source, "source_info": source_info,
        "query_sample": len(sample), "extrapolated": "all-items times = per-query time on the sample x n_items",
        "threads": 1, "exact_ms_per_query_float32": exact_q * 1e3,
        "exact_ms_per_query_float64": exact64_s / len(sample) * 1e3,
        "ann_build_s": index.build_seconds_, "ann_query_ms": main_run["query_ms"],
        "recall_at_10": main_run["recall_at_10"], "speedup_per_query": main_run["speedup"],
        "all_items_exact_s_extrapolated": exact_q * n_items, "all_items_ann_s": ann_all_s,
        "index_mib_estimate": mem_mib, "ef_search_sweep": sweep, "cluster": cluster,
        "load_average_1min": load.samples, "loaded": load.loaded, "cpu_count": os.cpu_count(),
        "versions": {**library_versions(), "faiss-cpu": faiss.__version__},
    }  # fmt: skip
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
