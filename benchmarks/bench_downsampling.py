"""Benchmark: negative down-sampling (``negative_rate``) against the full model, same data, same run.

Issue 13: "Negative downsampling at 10% keeps test PR-AUC within 0.01 of the full model on 20M rows at
>= 5x less training time; mean predicted probability within 10% of the observed fraud rate on
held-out days, with and without it."

1. ``--rows`` transactions over 60 days (``make_transactions``, reused from ``--data-dir``).
2. The behaviour features are computed once (``TransactionFeatures`` fitted on the training days,
   the whole table transformed, so the test days see their history) and written to parquet; both
   models read that parquet with ``features=None`` (the feature columns are extra numeric model
   columns), so the timed ``fit`` is the model's training: read, time split, down-sampling, the
   persisted float32 matrix, boosting with early stopping on the validation days, calibration.
3. For each ``--rates`` value: ``XGBoostFraudClassifier(negative_rate=r)`` fitted on the first
   ``60 - --test-days`` days (its validation part the latest 20% of them: calibration and the
   validation metrics read all of it, early stopping a weighted sample of its legitimate rows when
   ``negative_rate < 1``, see ``XGBoostFraudClassifier``); then the
   test days scored: PR-AUC and ROC-AUC (exact, on the workers) and mean predicted probability
   against the observed fraud rate.

Prints a table and writes ``benchmarks/results/downsampling.json``; the ratios are against the
``negative_rate=1`` fit of the same run.

Usage::

    python benchmarks/bench_downsampling.py --rows 1000000            # check it
    python benchmarks/bench_downsampling.py --rows 20000000           # the issue's size
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402
from bench_fraud import DAYS, ensure_transactions  # noqa: E402

from daskml_scale import schema as S  # noqa: E402
from daskml_scale.cluster import compute, connect  # noqa: E402
from daskml_scale.evaluation import average_precision_score, roc_auc_score  # noqa: E402
from daskml_scale.features import TransactionFeatures  # noqa: E402
from daskml_scale.fraud import XGBoostFraudClassifier  # noqa: E402
from daskml_scale.storage import library_versions, write_parquet  # noqa: E402

START = pd.Timestamp("2025-01-01")  # make_transactions' default start


def featurized_table(data_dir: Path, rows: int, split: pd.Timestamp, client, partition_rows: int) -> Path:
    """The transactions with their behaviour features (written once, reused)."""
    path = data_dir / f"featurized-{rows}"
    if (path / "_manifest.json").exists():
        return path
    raw = dd.read_parquet(str(ensure_transactions(data_dir, rows, client, partition_rows)))
    t0 = time.perf_counter()
    tf = TransactionFeatures().fit(raw[raw[S.TIMESTAMP] < split], client=client)
    write_parquet(tf.transform(raw), path, client=client)
    print(f"features for {rows:,} rows: {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--test-days", type=int, default=12, help="the latest days, scored")
    ap.add_argument("--rounds", type=int, default=300, help="at most (early stopping on the validation days)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="9GiB", help="per worker")
    ap.add_argument("--partition-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    add_data_dir_arg(ap)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "downsampling.json"))
    args = ap.parse_args(argv)
    quiet_cluster_logs()
    split = START + pd.Timedelta(days=DAYS - args.test_days)
    report = {"benchmark": "downsampling", "rows": args.rows, "test_from": str(split.date()), "runs": []}
    with connect(
        n_workers=args.workers,
        threads_per_worker=1,
        memory_limit=args.memory_limit,
        dashboard_address=":0",
        quiet=True,
    ) as client:
        path = featurized_table(Path(args.data_dir), args.rows, split, client, args.partition_rows)
        table = dd.read_parquet(str(path))
        train, test = table[table[S.TIMESTAMP] < split], table[table[S.TIMESTAMP] >= split]
        for rate in args.rates:
            model = XGBoostFraudClassifier(
                features=None, negative_rate=rate, n_estimators=args.rounds, random_state=args.seed
            )
            t0 = time.perf_counter()
            model.fit(train, client=client)
            fit_s = time.perf_counter() - t0
            scored = model.predict_proba(test).merge(
                test[[S.TRANSACTION_ID, S.IS_FRAUD]], on=S.TRANSACTION_ID, how="inner"
            )
            scored = scored.persist()
            pr = average_precision_score(scored[S.IS_FRAUD], scored[S.SCORE], client=client)
            roc = roc_auc_score(scored[S.IS_FRAUD], scored[S.SCORE], client=client)
            # small: three numbers
            n, mean_p, rate_obs = compute(
                scored[S.SCORE].count(), scored[S.SCORE].mean(), scored[S.IS_FRAUD].mean(), client=client
            )
            run = {
                "negative_rate": rate,
                "fit_seconds": fit_s,
                "train_rows_after_sampling": int(model.n_train_),
                "train_positive": int(model.n_train_positive_),
                "valid_rows": int(model.n_valid_),
                "rounds": int(model.best_iteration_) + 1,
                # what early stopping read each round, and the metric it saw at the best round
                "stopping_rows": int(model.n_stopping_),
                "stopping_aucpr_at_best": float(model.evals_result_["valid"]["aucpr"][model.best_iteration_]),
                "test_rows": int(n),
                "test_pr_auc": float(pr),
                "test_roc_auc": float(roc),
                "test_mean_probability": float(mean_p),
                "test_fraud_rate": float(rate_obs),
                "mean_probability_over_rate": float(mean_p / rate_obs),
                "validation": {k: v for k, v in model.validation_metrics_.items() if isinstance(v, float)},
            }
            report["runs"].append(run)
            del scored
            print(
                f"negative_rate={rate}: fit {fit_s:.1f} s on {model.n_train_:,} rows, {run['rounds']} rounds, "
                f"early stopping on {run['stopping_rows']:,} rows (aucpr {run['stopping_aucpr_at_best']:.4f}, "
                f"validation PR-AUC {model.validation_metrics_['pr_auc']:.4f}), "
                f"test PR-AUC {pr:.4f}, ROC-AUC {roc:.4f}, mean p / rate {run['mean_probability_over_rate']:.3f}",
                flush=True,
            )
    full = next((r for r in report["runs"] if r["negative_rate"] == 1.0), None)
    print(f"\n{args.rows:,} rows, test days from {split.date()}")
    print(
        "| negative_rate | training rows | rounds | fit s | speed-up | test PR-AUC | delta | ROC-AUC | mean p / rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        speed = full["fit_seconds"] / r["fit_seconds"] if full else float("nan")
        delta = r["test_pr_auc"] - full["test_pr_auc"] if full else float("nan")
        r["speedup_vs_full"], r["pr_auc_minus_full"] = speed, delta
        print(
            f"| {r['negative_rate']} | {r['train_rows_after_sampling']:,} | {r['rounds']} | {r['fit_seconds']:.1f} | "
            f"{speed:.2f}x | {r['test_pr_auc']:.4f} | {delta:+.4f} | {r['test_roc_auc']:.4f} | "
            f"{r['mean_probability_over_rate']:.3f} |"
        )
    report["versions"] = library_versions()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
