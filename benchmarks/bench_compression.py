"""Compression benchmark: size, quality and speed of quantized ALS and of pruned / distilled fraud models.

1. ALS on MovieLens-20M-shaped synthetic interactions (138k users, 27k items, 20M interactions at
   ``--scale 1.0``), 20% of the rows held out at random: ``compress(model, m, data=holdout)`` for
   fp16 / int8 / int4 gives artifact bytes, NDCG@10 and ``recommend_all`` users/s before and after
   (same run, same users, alternating, best of 3).
2. Fraud: ``XGBoostFraudClassifier`` (the teacher, early stopping) on the first days of synthetic
   transactions, then ``prune`` and ``distill`` (xgboost and SGD students) learned on the teacher's
   training part, measured on the latest ``--test-days`` (a time split).

Usage::

    python benchmarks/bench_compression.py --scale 1.0 --fraud-rows 2000000 --generate-only  # data only
    python benchmarks/bench_compression.py --scale 1.0 --fraud-rows 2000000

Data is generated once under ``--data-dir`` (parquet; default: see ``_common.py``) and reused.

Prints a table and writes JSON to benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dask.dataframe as dd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from daskml_scale import schema as S  # noqa: E402
from daskml_scale.compression import compress  # noqa: E402
from daskml_scale.data import make_interactions, make_transactions  # noqa: E402
from daskml_scale.fraud import XGBoostFraudClassifier  # noqa: E402
from daskml_scale.recommend import ALSRecommender  # noqa: E402
from daskml_scale.storage import write_parquet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _row(name, rep):
    q = rep.get("quality_metric", "")
    return (
        f"| {name} | {rep['bytes_before'] / 2**20:.2f} MiB | {rep['bytes_after'] / 2**20:.2f} MiB | "
        f"{rep['size_ratio']:.2f}x | {q} {rep.get('quality_before', float('nan')):.4f} -> "
        f"{rep.get('quality_after', float('nan')):.4f} | {rep['rows_per_s_before']:,.0f} -> "
        f"{rep['rows_per_s_after']:,.0f} ({rep['speed_ratio']:.2f}x) |"
    )


def als_data(args, client, data_dir):
    """Generate (once) and return the path of the interactions for ``--scale``."""
    users, items, rows = (int(v * args.scale) for v in (138_000, 27_000, 20_000_000))
    path = data_dir / f"interactions-{rows}-u{users}-i{items}-s0"
    if not path.exists():  # write_parquet is atomic
        write_parquet(
            make_interactions(rows, users, items, partition_rows=1 << 20, seed=0), path, client=client
        )
    return path, users, items, rows


def fraud_data(args, client, data_dir):
    """Generate (once) and return the path of the transactions for ``--fraud-rows``."""
    path = data_dir / f"transactions-{args.fraud_rows}"
    if not path.exists():  # write_parquet is atomic
        write_parquet(
            make_transactions(args.fraud_rows, days=60, partition_rows=250_000, seed=0), path, client=client
        )
    return path


def bench_als(args, client, data_dir):
    path, users, items, rows = als_data(args, client, data_dir)
    ddf = dd.read_parquet(str(path))
    held = ddf.map_partitions(
        lambda p: pd.Series(np.random.default_rng(len(p)).random(len(p)) < 0.2, index=p.index)
    )
    train, test = ddf[~held], ddf[held][[S.USER_ID, S.ITEM_ID]]
    t = time.perf_counter()
    model = ALSRecommender(factors=64, iterations=args.iterations, regularization=0.05, alpha=10.0)
    model.fit(train, client=client)
    out = {"users": users, "items": items, "interactions": rows, "fit_seconds": time.perf_counter() - t}
    for method in ("fp16", "int8", "int4"):
        q = compress(model, method, data=test, timing_rows=args.timing_users, client=client)
        out[method] = q.compression_report_
        print(_row(f"ALS {method}", q.compression_report_), flush=True)
    return out


def bench_fraud(args, client, data_dir):
    tx = dd.read_parquet(str(fraud_data(args, client, data_dir)))
    t_max = tx[S.TIMESTAMP].max().compute()
    split = t_max - pd.Timedelta(days=args.test_days)
    train, test = tx[tx[S.TIMESTAMP] < split], tx[tx[S.TIMESTAMP] >= split]
    t = time.perf_counter()
    teacher = XGBoostFraudClassifier(n_estimators=500, early_stopping_rounds=20).fit(train, client=client)
    out = {
        "rows": args.fraud_rows,
        "teacher_seconds": time.perf_counter() - t,
        "teacher_trees": teacher.best_iteration_ + 1,
    }
    runs = [
        ("prune", {}),
        ("distill", {"student": "xgboost"}),  # the default: trees of <= 15 leaves, ~1/12 of the teacher
        ("distill", {"student": "xgboost", "n_estimators": 10, "max_depth": 4, "max_leaves": None}),
        ("distill", {"student": "sgd"}),
    ]
    for method, kw in runs:
        s = compress(teacher, method, data=train, eval_data=test, timing_rows=100_000, client=client, **kw)
        name = (
            method if method == "prune" else f"distill {kw['student']} {kw.get('n_estimators', '')}".strip()
        )
        out[name] = s.compression_report_
        print(_row(f"fraud {name}", s.compression_report_), flush=True)
    return out


def _json_default(o):
    """Numbers as floats, paths and anything else as text (argparse hands over ``Path`` objects)."""
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.25, help="of the MovieLens-20M shape")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--timing-users", type=int, default=20_000)
    p.add_argument("--fraud-rows", type=int, default=1_000_000, help="0 skips the fraud part")
    p.add_argument("--test-days", type=int, default=12)
    p.add_argument("--skip-als", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    add_data_dir_arg(p)
    p.add_argument(
        "--generate-only", action="store_true", help="only write the data (kept under --data-dir) and exit"
    )
    p.add_argument("--out", default=str(RESULTS / "compression.json"))
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir)
    quiet_cluster_logs()
    data_dir.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()}, "args": vars(args)}
    print("| model | artifact before | after | smaller | quality before -> after | rows/s before -> after |")
    print("|---|---|---|---|---|---|", flush=True)
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=":0", memory_limit="8GiB"
        ) as c,
        Client(c) as client,
    ):
        if args.generate_only:
            if not args.skip_als:
                print(f"interactions: {als_data(args, client, data_dir)[0]}", flush=True)
            if args.fraud_rows:
                print(f"transactions: {fraud_data(args, client, data_dir)}", flush=True)
            return
        if not args.skip_als:
            results["als"] = bench_als(args, client, data_dir)
        if args.fraud_rows:
            results["fraud"] = bench_fraud(args, client, data_dir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
