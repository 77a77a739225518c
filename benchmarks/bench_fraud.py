"""Fraud models benchmark: ours against the native libraries, in one run on the same data.

1. XGBoost training: ``XGBoostFraudClassifier`` (xgboost.dask on the cluster) against native
   ``xgboost.train`` (QuantileDMatrix, nthread = total worker threads) on the same rows and columns:
   the behaviour features are computed once and written to parquet; both read that parquet and train
   the same number of rounds with the same parameters (no early stopping). Ratio = ours / native,
   both timed from parquet on disk to a trained booster (goal <= 1.3).
2. SGD: ``strategy="sequential"`` (dask-ml Incremental) against ``strategy="average"`` (parameter
   mixing) on the same featurized rows, same epochs: throughput (rows x epochs / s) and PR-AUC on the
   latest days (goal: >= 1.6x at equal PR-AUC within 0.01).
3. Batch scoring: ``score(model, ddf, out=...)`` rows/s, with the behaviour features computed from
   the raw transactions (the production path) and with a raw-columns model (prediction only).

Usage::

    python benchmarks/bench_fraud.py --train-rows 1000000 --score-rows 1000000
    python benchmarks/bench_fraud.py --train-rows 2000000 --score-rows 10000000   # the issue's sizes

Data lives under ``--data-dir`` (generated when absent); results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dask.dataframe as dd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from daskml_scale import schema as S  # noqa: E402
from daskml_scale.cluster import compute  # noqa: E402
from daskml_scale.data import make_transactions  # noqa: E402
from daskml_scale.evaluation import average_precision_score  # noqa: E402
from daskml_scale.features import TransactionFeatures  # noqa: E402
from daskml_scale.fraud import SGDFraudClassifier, XGBoostFraudClassifier, score  # noqa: E402
from daskml_scale.fraud._base import model_frame  # noqa: E402
from daskml_scale.storage import write_parquet  # noqa: E402

DAYS = 60
TEST_DAYS = 12


def ensure_transactions(data_dir: Path, rows: int, client, partition_rows: int) -> Path:
    path = data_dir / f"transactions-{rows}"
    if not (path / "_manifest.json").exists():  # a committed output (write_parquet)
        print(f"generating {rows:,} transactions into {path}", flush=True)
        ddf = make_transactions(rows, days=DAYS, partition_rows=partition_rows, seed=0)
        write_parquet(ddf, path, client=client)
    return path


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-rows", type=int, default=2_000_000)
    ap.add_argument("--score-rows", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=100, help="xgboost boosting rounds")
    ap.add_argument("--epochs", type=int, default=3, help="SGD epochs")
    ap.add_argument("--partition-rows", type=int, default=250_000)
    add_data_dir_arg(ap)
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_fraud.json"))
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = data_dir / f"bench-fraud-scratch-{os.getpid()}"
    results: dict = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "xgboost": xgb.__version__},
        "args": vars(args),
    }
    rows_table = []
    quiet_cluster_logs()
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        try:
            raw_path = ensure_transactions(data_dir, args.train_rows, client, args.partition_rows)
            raw = dd.read_parquet(str(raw_path))
            # -------------------------------------------------------------- features, once
            # enough partitions for the SGD strategies to spread (the shared raw data may have few)
            nparts = max(raw.npartitions, args.train_rows // args.partition_rows)
            feats = TransactionFeatures(npartitions=nparts)
            _, t_feat_fit = timed(lambda: feats.fit(raw, client=client))
            feat_path = scratch / "featurized"
            _, t_feat = timed(lambda: write_parquet(feats.transform(raw), feat_path, client=client))
            featurized = dd.read_parquet(str(feat_path))
            n_rows = len(featurized)
            results["features"] = {"rows": n_rows, "seconds": t_feat + t_feat_fit}
            rows_table.append(("features (fit + transform + write)", n_rows, t_feat + t_feat_fit, ""))
            t_max = compute(featurized[S.TIMESTAMP].max(), client=client)[0]  # small
            cut = t_max - np.timedelta64(TEST_DAYS, "D")
            # -------------------------------------------------------------- xgboost: ours vs native
            params = {"n_estimators": args.rounds, "max_depth": 6, "learning_rate": 0.1, "max_bin": 256}
            ours = XGBoostFraudClassifier(features=None, valid_size=0, early_stopping_rounds=None, **params)
            _, t_ours = timed(lambda: ours.fit(dd.read_parquet(str(feat_path)), client=client))

            def native():
                pdf = pd.read_parquet(feat_path)  # native baseline: all rows in memory
                X = model_frame(pdf, ours.numeric_columns_, ours.categories_)
                dm = xgb.QuantileDMatrix(
                    X,
                    pdf[S.IS_FRAUD],
                    enable_categorical=True,
                    max_bin=256,
                    feature_types=ours._feature_types(),
                )
                p = {**ours._params(), "nthread": args.workers}
                return xgb.train(p, dm, num_boost_round=args.rounds)

            booster, t_native = timed(native)
            ratio = t_ours / t_native
            results["xgboost"] = {
                "rows": n_rows,
                "columns": len(ours.model_columns_),
                "rounds": args.rounds,
                "ours_seconds": t_ours,
                "native_seconds": t_native,
                "ratio": ratio,
                "goal": "<= 1.3",
            }
            rows_table.append(("xgboost.dask (ours)", n_rows, t_ours, f"ratio {ratio:.2f} (goal <= 1.3)"))
            rows_table.append(("xgboost.train (native)", n_rows, t_native, ""))
            del booster
            # -------------------------------------------------------------- SGD sequential vs average
            # the training rows in cluster memory, so both strategies time their epochs, not I/O
            train = featurized[featurized[S.TIMESTAMP] < cut].persist()
            test = featurized[featurized[S.TIMESTAMP] >= cut]
            sgd = {}
            for strategy in ("sequential", "average"):
                model = SGDFraudClassifier(features=None, strategy=strategy, epochs=1, valid_size=0)
                model.fit(train, client=client)  # scaler + 1 epoch (warm-up, not timed)
                n_train = model.n_train_
                _, t_total = timed(lambda m=model: m.partial_fit(train, epochs=args.epochs, client=client))
                t = sum(model.epoch_seconds_)  # the epochs only (the scaling pass is shared)
                scored = model.predict_proba(test).merge(
                    test[[S.TRANSACTION_ID, S.IS_FRAUD]], on=S.TRANSACTION_ID
                )
                pr = float(average_precision_score(scored[S.IS_FRAUD], scored[S.SCORE], client=client))
                sgd[strategy] = {
                    "rows": n_train,
                    "epochs": args.epochs,
                    "seconds": t,
                    "seconds_with_scaling": t_total,
                    "epoch_seconds": model.epoch_seconds_,
                    "rows_per_s": n_train * args.epochs / t,
                    "pr_auc": pr,
                }
                rows_table.append(
                    (f"SGD {strategy}, {args.epochs} epochs", n_train * args.epochs, t, f"PR-AUC {pr:.4f}")
                )
            speedup = sgd["average"]["rows_per_s"] / sgd["sequential"]["rows_per_s"]
            sgd["speedup"] = speedup
            sgd["pr_auc_diff"] = abs(sgd["average"]["pr_auc"] - sgd["sequential"]["pr_auc"])
            sgd["goal"] = ">= 1.6x at PR-AUC within 0.01"
            results["sgd"] = sgd
            rows_table.append(("SGD average / sequential", 0, 0.0, f"{speedup:.2f}x (goal >= 1.6x)"))
            # -------------------------------------------------------------- batch scoring
            if not args.skip_score:
                score_path = ensure_transactions(data_dir, args.score_rows, client, args.partition_rows * 4)
                batch = dd.read_parquet(str(score_path))
                full = XGBoostFraudClassifier(n_estimators=50, learning_rate=0.3)
                full.fit(raw, client=client)
                raw_model = XGBoostFraudClassifier(features=None, n_estimators=50, learning_rate=0.3)
                raw_model.fit(raw, client=client)
                results["scoring"] = {}
                for name, model in (("with behaviour features", full), ("raw columns", raw_model)):
                    summary, t = timed(lambda m=model: score(m, batch, out=scratch / "scores", client=client))
                    results["scoring"][name] = {
                        "rows": summary["rows"],
                        "seconds": t,
                        "rows_per_s": summary["rows"] / t,
                    }
                    rows_table.append(
                        (f"score, {name}", summary["rows"], t, f"{summary['rows'] / t:,.0f} rows/s")
                    )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'what':42s} {'rows':>12s} {'seconds':>9s}  note")
    for what, n, t, note in rows_table:
        print(f"{what:42s} {n:>12,} {t:>9.1f}  {note}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
