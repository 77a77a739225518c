"""Benchmark: the whole fraud pipeline, end to end, at several sizes (issue 13, "the billion-row run").

For each ``--rows`` size, on its own fresh LocalCluster (default 2 workers x 1 thread, ``--memory-limit``
each), the stages run in order, each streaming parquet to parquet:

``generate``
    ``make_transactions(N, days=--days)`` written as the raw table (``<data-dir>/pipeline-<N>/raw``);
    reused when it exists and ``generate`` is not asked for.
``baseline``
    The floor of a shuffle-bound stage, measured in the same run: read the raw table, shuffle by
    ``card_id``, write (no computation). ``--baseline-on window``: only the rows the features and
    scoring stages read (the last ``--score-days`` days and the 30 days before them), for a disk that
    cannot hold the scratch of a whole-table shuffle (the rows are still selected from a full read).
``validate``, ``clean``
    ``validate`` (one counting pass) then ``clean`` (clean rows + quarantine written). The clean table
    is the input of every later stage; the raw table is deleted after ``clean`` unless ``--keep``.
    ``--clean-reads 2`` cleans with ``read_once=False`` (disk peak the larger of output and scratch).
``features``
    ``TransactionFeatures()`` fitted on the training days (its time recorded as ``fit_seconds``), then
    the scoring days transformed with ``history=`` the ``required_history_`` before them and
    ``start=`` their first day; only ``transaction_id`` + features written
    (``--features-sink count``: computed and counted, nothing written), then deleted.
``train``
    ``XGBoostFraudClassifier(negative_rate=0.1)`` on the first ``--train-days`` days (features are
    computed inside ``fit``). The training window is capped at ``--max-train-rows`` rows (fewer days
    at large sizes). (Since the one-copy change ``fit`` keeps only the sampled float32 matrix.)
``score``
    ``score(model, last days, out=, history=, quarantine=, keep=["is_fraud"], start=)``: the last
    ``--score-days`` days, with the ``required_history_`` before them as history (features computed
    from raw rows, then predicted); the label is written beside each score.
``evaluate``
    ``classification_metrics`` of the written (label, score) table with its defaults (exact, bounded
    memory). (Before ``score(keep=)`` existed, the scores were joined to the clean labels on
    ``transaction_id``: a shuffle of both.)

Per stage: seconds, rows/s (rows the stage consumed: raw rows for generate/baseline/validate/clean,
window rows for features/train, scored rows for score/evaluate), the peak RSS of each worker (a
thread in each worker samples its RSS every 20 ms), the bytes the stage wrote and the disk peak (the
most the disk's use rose: outputs plus Dask's P2P shuffle scratch, uncompressed, on the same disk),
and the workers' compute seconds per task group (``read_parquet``, ``shuffle``, ``apply_stage``, ...,
from the scheduler's task stream: where a stage's time goes). At the end the raw table's bytes per row. Intermediates are deleted as soon as no later stage needs
them, unless ``--keep``.

Disk: a P2P shuffle keeps the shuffled rows uncompressed on disk until it ends (~85 bytes a row for a
whole transaction row, measured at 10M and 100M; the features and scoring stages shuffle their 58 days
of rows twice, ~140 bytes a row at their peak). At 1B rows that is ~80 GB for the baseline and ~135
GB for features or score, more than this machine's free disk. The 1B run here therefore spreads its
rows over a year (``--days 365``: 2.7M rows a day, about the 1.7M of 100M rows over 60 days), so the
features and scoring stages read 58 days (~160M rows) of it; it measures the baseline on those same
rows (``--baseline-on window``) and cleans in two reads (``--clean-reads 2``). 10M and 100M are run
with the same arguments, so that the three sizes compare.

Usage::

    python benchmarks/bench_pipeline.py --rows 200000 1000000                 # check it end to end
    python benchmarks/bench_pipeline.py --rows 10000000 100000000              # 60 days, one-read clean
    python benchmarks/bench_pipeline.py --rows 10000000 100000000 1000000000 --days 365 \
        --baseline-on window --clean-reads 2                                   # what issue 13 asks
    python benchmarks/bench_pipeline.py --rows 1000000 --stages generate baseline validate clean

Prints a table per size and writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from _common import add_data_dir_arg, quiet_cluster_logs, task_seconds  # noqa: E402
from bench_features import _start_rss_sampler, _stop_rss_sampler  # noqa: E402

from daskml_scale import schema as S  # noqa: E402
from daskml_scale.cluster import connect  # noqa: E402
from daskml_scale.data import clean, make_transactions, read_transactions, validate  # noqa: E402
from daskml_scale.evaluation import classification_metrics  # noqa: E402
from daskml_scale.features import TransactionFeatures  # noqa: E402
from daskml_scale.fraud import XGBoostFraudClassifier, score  # noqa: E402
from daskml_scale.storage import library_versions, write_parquet  # noqa: E402

STAGES = ["generate", "baseline", "validate", "clean", "features", "train", "score", "evaluate"]
START = pd.Timestamp("2025-01-01")  # make_transactions' default start
BASELINE_HISTORY = pd.Timedelta(days=30)  # TransactionFeatures' longest look-back (required_history_)


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when absent)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def disk_rows(path: Path) -> int:
    """Rows of a parquet directory, from its footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")))


def drop(*paths: Path) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


class _DiskSampler:
    """The most the used bytes of ``path``'s filesystem rose above their start (sampled every 0.2 s):
    a stage's outputs plus the shuffle scratch Dask keeps on the same disk."""

    def __init__(self, path):
        import threading

        self.path, self.stop_flag = str(path), False
        self.start = self.peak = shutil.disk_usage(self.path).used
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop_flag:
            self.peak = max(self.peak, shutil.disk_usage(self.path).used)
            time.sleep(0.2)

    def stop(self) -> int:
        self.stop_flag = True
        self.thread.join()
        return max(self.peak, shutil.disk_usage(self.path).used) - self.start


class _Stage:
    """Time a stage, sample each worker's peak RSS, and record what it wrote."""

    def __init__(self, client, name, results, on_done=None, disk_path="."):
        self.client, self.name, self.results = client, name, results
        self.on_done, self.disk_path = on_done, disk_path
        self.rows, self.outputs, self.note = 0, [], ""

    def __enter__(self):
        self.client.run(__import__("gc").collect)
        self.client.run(_start_rss_sampler)
        self.disk = _DiskSampler(self.disk_path)
        print(f"  {self.name} ...", flush=True)
        self.since = time.time()
        task_seconds(self.client, self.since)  # the scheduler records the task stream from here
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, *exc):
        seconds = time.perf_counter() - self.t0
        disk_peak = self.disk.stop()
        try:
            peaks = sorted(self.client.run(_stop_rss_sampler).values())
        except Exception:  # a restarted worker lost its sampler: report what is left
            peaks = []
        if exc_type is not None:
            return False
        written = sum(disk_bytes(p) for p in self.outputs)
        try:
            tasks = task_seconds(self.client, self.since)
        except Exception:  # noqa: BLE001 - a figure less, not a failed stage
            tasks = None
        self.results[self.name] = {
            "seconds": seconds,
            "rows": self.rows,
            "rows_per_s": self.rows / seconds if seconds else float("nan"),
            "peak_rss_per_worker_mib": peaks,
            "bytes_written": written,
            # the most the disk's use rose during the stage: outputs plus Dask's shuffle scratch
            "disk_peak_bytes": disk_peak,
            "note": self.note,
            # where the workers' time went: compute seconds per task group, transfers
            "task_seconds": tasks,
        }
        r = self.results[self.name]
        print(
            f"  {self.name:9s} {self.rows:>13,} rows {seconds:8.1f} s {r['rows_per_s'] / 1e6:7.2f} M rows/s "
            f"peak/worker {max(peaks, default=float('nan')):6.0f} MiB  wrote {written / 2**20:9.1f} MiB  "
            f"disk peak +{disk_peak / 2**30:.1f} GiB  {self.note}",
            flush=True,
        )
        if self.on_done is not None:
            self.on_done()  # the JSON so far: a failure in a later stage keeps this one
        return False


def run_size(n: int, args, days: int, save=None) -> dict:
    stages = [s for s in STAGES if s in args.stages]
    root = Path(args.data_dir) / f"pipeline-{n}"
    raw, base, cln, quar = root / "raw", root / "baseline", root / "clean", root / "clean-quarantine"
    feats, scores, squar = root / "features", root / "scores", root / "score-quarantine"
    root.mkdir(parents=True, exist_ok=True)
    rows_per_day = n / days
    train_days = max(1, min(args.train_days, math.floor(args.max_train_rows / rows_per_day)))
    train_end = START + pd.Timedelta(days=train_days)
    score_start = START + pd.Timedelta(days=days - args.score_days)
    end = table_end = START + pd.Timedelta(days=days)
    res: dict = {
        "rows": n,
        "days": days,
        "train_days": train_days,
        "score_days": args.score_days,
        "baseline_on": args.baseline_on,
        "clean_reads": args.clean_reads,
        "stages": {},
    }
    part_rows = max(1, min(args.partition_rows, -(-n // (2 * args.workers))))
    with connect(
        n_workers=args.workers,
        threads_per_worker=1,
        memory_limit=args.memory_limit,
        dashboard_address=":0",
        quiet=True,
    ) as client:
        out = res["stages"]

        def _window(src, start, end, columns=None):
            # each window is its own read, filtered as it is read (a job reads the files of its days;
            # one read feeding the batch and its history kept filtered pieces of the shared read in
            # memory until both were done: ~1 GiB a worker at 1B). A filter keeps every partition of
            # the table: over a year, the 58 days the features and scoring stages read would be
            # 1000 partitions of 16% of their rows, and their shuffles 1000 x 1000 shards, with hot
            # keys found against 19k-row partitions. Adjacent partitions are concatenated (no
            # shuffle) to about --partition-rows again.
            share = (min(end, table_end) - max(start, START)) / (table_end - START)
            rows = dd.read_parquet(
                str(src), columns=columns, filters=[(S.TIMESTAMP, ">=", start), (S.TIMESTAMP, "<", end)]
            )
            return rows.repartition(npartitions=max(1, math.ceil(rows.npartitions * share)))

        def Stage(client, name, results):  # noqa: N802 (the class, with the JSON saved after each stage)
            return _Stage(
                client, name, results, on_done=None if save is None else lambda: save(res), disk_path=root
            )

        need_raw = bool({"validate", "clean"} & set(stages)) or not cln.exists()
        if "generate" in stages or (need_raw and not raw.exists()):
            drop(raw)
            with Stage(client, "generate", out) as st:
                st.outputs = [raw]
                write_parquet(
                    make_transactions(n, days=days, partition_rows=part_rows, seed=args.seed),
                    raw,
                    client=client,
                )
                st.rows = n
        res["raw_bytes"] = disk_bytes(raw)
        res["raw_bytes_per_row"] = res["raw_bytes"] / n
        if "baseline" in stages:
            with Stage(client, "baseline", out) as st:
                st.outputs = [base]
                # the raw table, or where it was deleted, the clean one (the same rows when none is
                # quarantined: the note says which)
                src = raw if raw.exists() else cln
                rows = dd.read_parquet(str(src))
                if args.baseline_on == "window":
                    rows = _window(src, score_start - BASELINE_HISTORY, end)  # repartitioned
                    st.note = f"read, keep from {(score_start - BASELINE_HISTORY).date()}, "
                st.note += "shuffle by card_id, write" + (
                    "" if src == raw else " (read from the clean table)"
                )
                write_parquet(rows.shuffle(on=S.CARD_ID), base, client=client)
                st.rows = n if args.baseline_on == "table" else disk_rows(base)
            drop(base)
        if "validate" in stages:
            with Stage(client, "validate", out) as st:
                rep = validate(read_transactions(str(raw)), "transactions", client=client)
                st.rows = rep.rows_in
                st.note = f"{rep.rows_quarantined:,} rows would be quarantined"
        if "clean" in stages or not cln.exists():
            drop(cln, quar)
            with Stage(client, "clean", out) as st:
                st.outputs = [cln, quar]
                rep = clean(
                    read_transactions(str(raw)),
                    "transactions",
                    out=cln,
                    quarantine_out=quar,
                    read_once=args.clean_reads == 1,
                    client=client,
                ).report
                st.rows = rep.rows_in
                st.note = f"{rep.rows_out:,} clean + {rep.rows_quarantined:,} quarantined"
            if not args.keep:
                drop(quar, raw)  # every later stage reads the clean table
        model = None
        if "features" in stages:
            with Stage(client, "features", out) as st:
                st.outputs = [feats]
                t_fit = time.perf_counter()
                tf = TransactionFeatures().fit(_window(cln, START, train_end), client=client)
                fit_seconds = time.perf_counter() - t_fit
                hist_start = score_start - tf.required_history_
                new = _window(cln, score_start, end)
                hist = _window(cln, hist_start, score_start)
                names = [str(c) for c in tf.get_feature_names_out()]
                # the batch's start is known here: each shuffle carries the history its stage reads
                featurized = tf.transform(new, history=hist, start=score_start)[[S.TRANSACTION_ID, *names]]
                if args.features_sink == "parquet":
                    write_parquet(featurized, feats, client=client)
                    featurized = dd.read_parquet(str(feats), columns=[S.TRANSACTION_ID])
                # a count, small (with "count", the features are computed and dropped partition by partition)
                st.rows = int(featurized.map_partitions(len).sum().compute())
                st.note = (
                    f"{len(names)} features, history from {hist_start.date()}, of which fit "
                    f"{fit_seconds:.1f} s"
                )
            out["features"]["fit_seconds"] = fit_seconds
            # a count (small), outside the timing: the history rows the stage read
            out["features"]["history_rows"] = int(
                _window(cln, hist_start, score_start, [S.TIMESTAMP]).shape[0].compute()
            )
            if not args.keep:
                drop(feats)
        if {"train", "score", "evaluate"} & set(stages):
            # a count (small), outside the timing: the rows of the training window
            n_window = int(_window(cln, START, train_end, [S.TIMESTAMP]).shape[0].compute())
            with Stage(client, "train", out) as st:
                model = XGBoostFraudClassifier(
                    negative_rate=args.negative_rate, n_estimators=args.rounds, random_state=args.seed
                )
                model.fit(_window(cln, START, train_end), client=client)
                st.rows = n_window
                st.note = (
                    f"{train_days} days, {model.n_train_:,} rows after negative_rate={args.negative_rate}, "
                    f"{model.best_iteration_ + 1} rounds"
                )
        if "score" in stages or ("evaluate" in stages and not scores.exists()):
            drop(scores, squar)
            with Stage(client, "score", out) as st:
                st.outputs = [scores, squar]
                hist_start = score_start - model.features_.required_history_
                summary = score(
                    model,
                    _window(cln, score_start, end),
                    out=scores,
                    history=_window(cln, hist_start, score_start),
                    quarantine=squar,
                    keep=[S.IS_FRAUD],  # the label beside its score: evaluate reads one table
                    start=score_start,  # the batch's first day, known here (as in features)
                    client=client,
                )
                st.rows = summary["rows"]
                h = summary["history"] or {}
                out_extra = {"history_rows": h.get("rows_used", 0)}
                st.note = f"history {h.get('rows_used', 0):,} rows from {hist_start.date()}, {summary['alerts']:,} alerts"
            out["score"].update(out_extra)
            if not args.keep:
                drop(squar)
        if "evaluate" in stages:
            with Stage(client, "evaluate", out) as st:
                scored = dd.read_parquet(str(scores), columns=[S.IS_FRAUD, S.SCORE])
                metrics = classification_metrics(scored, client=client)
                st.rows = int(metrics["n"])
                res["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
                st.note = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("roc_auc", "pr_auc"))
        if not args.keep:
            drop(scores, cln, quar, raw)
    res["disk_left_bytes"] = disk_bytes(root)
    if not args.keep and not any(root.iterdir()):
        root.rmdir()
    return res


def print_table(res: dict) -> None:
    print(
        f"\n{res['rows']:,} rows, raw table {res['raw_bytes'] / 2**20:.1f} MiB ({res['raw_bytes_per_row']:.1f} bytes/row)"
    )
    print("| stage | rows | seconds | rows/s | peak RSS/worker MiB | written MiB | disk peak GiB | note |")
    print("|---|---|---|---|---|---|---|---|")
    total = 0.0
    for name, r in res["stages"].items():
        total += r["seconds"]
        peaks = " / ".join(f"{p:.0f}" for p in r["peak_rss_per_worker_mib"])
        print(
            f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s'] / 1e6:.2f}M | {peaks} | "
            f"{r['bytes_written'] / 2**20:.1f} | {r.get('disk_peak_bytes', 0) / 2**30:.1f} | {r['note']} |"
        )
    print(f"| **total** | | {total:.1f} | | | | | |")
    st = res["stages"]
    if "baseline" in st:
        b = st["baseline"]["rows_per_s"]
        for name in ("features", "score"):
            if name in st:
                print(f"{name} / baseline rate: {st[name]['rows_per_s'] / b:.2f} (goal >= 0.6)")
        for name in ("features", "score"):
            if name in st and "history_rows" in st[name]:
                s = st[name]
                with_hist = (s["rows"] + s["history_rows"]) / s["seconds"]
                print(f"{name}, rows read (new + history) / baseline rate: {with_hist / b:.2f}")
                if "fit_seconds" in s:  # the transform alone, as scoring runs it
                    alone = (s["rows"] + s["history_rows"]) / (s["seconds"] - s["fit_seconds"])
                    print(f"{name}, transform alone, rows read / baseline rate: {alone / b:.2f}")
    print("workers' compute seconds by task group (summed over workers; the largest six):")
    for name, r in st.items():
        tasks = r.get("task_seconds")
        if tasks:
            top = list(tasks["compute"].items())[:6]
            total_cpu = sum(g["seconds"] for g in tasks["compute"].values())
            groups = ", ".join(f"{k} {g['seconds']:.1f}" for k, g in top)
            print(f"  {name}: {total_cpu:.1f} s in all: {groups}; transfers {tasks['transfer_seconds']:.1f}")
    vc = [st[k] for k in ("validate", "clean") if k in st]
    if vc:
        rows = max(x["rows"] for x in vc)
        print(f"validate + clean: {rows / sum(x['seconds'] for x in vc) / 1e6:.2f}M rows/s (goal >= 2M)")
    if "clean" in st:  # clean runs every check of validate: a pipeline needs only clean
        print(f"clean alone (validates as it cleans): {st['clean']['rows_per_s'] / 1e6:.2f}M rows/s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 100_000_000, 1_000_000_000])
    ap.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="8GiB", help="per worker")
    ap.add_argument(
        "--days",
        type=int,
        nargs="+",
        default=[60],
        help="days the raw table covers: one, or one per --rows size",
    )
    ap.add_argument("--train-days", type=int, default=7, help="train on the first days")
    ap.add_argument("--max-train-rows", type=int, default=20_000_000, help="cap on the training window")
    ap.add_argument("--score-days", type=int, default=28, help="score the last days")
    ap.add_argument("--negative-rate", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=100, help="xgboost boosting rounds (early stopping on)")
    ap.add_argument("--partition-rows", type=int, default=1_000_000, help="rows per generated partition")
    ap.add_argument(
        "--features-sink",
        choices=["parquet", "count"],
        default="parquet",
        help="features stage: write transaction_id + features (~45 bytes/scored row), or only count them "
        "(no disk: for 1B rows when the disk is short)",
    )
    ap.add_argument(
        "--baseline-on",
        choices=["table", "window"],
        default="table",
        help="shuffle the whole raw table, or only the rows the features/score stages read",
    )
    ap.add_argument(
        "--clean-reads",
        type=int,
        choices=[1, 2],
        default=1,
        help="clean in one read, or two (smaller disk peak)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the intermediate tables")
    add_data_dir_arg(ap)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    ap.add_argument("--table-from", metavar="JSON", help="print the tables of a results file and exit")
    args = ap.parse_args(argv)
    if args.table_from:
        for res in json.loads(Path(args.table_from).read_text())["sizes"]:
            print_table(res)
        return

    quiet_cluster_logs()
    report = {
        "benchmark": "pipeline",
        "workers": args.workers,
        "threads_per_worker": 1,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
        "versions": library_versions(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(args.days) not in (1, len(args.rows)):
        ap.error("--days takes one value, or one per --rows size")
    days_of = dict(zip(args.rows, args.days * len(args.rows) if len(args.days) == 1 else args.days))
    for n in args.rows:
        print(f"{n:,} rows over {days_of[n]} days", flush=True)
        done = list(report["sizes"])

        def save(res, done=done):  # after each stage, so a long size that fails keeps its stages
            report["sizes"] = [*done, res]
            out.write_text(json.dumps(report, indent=2, default=str) + "\n")

        res = run_size(n, args, days_of[n], save)
        save(res)
        print_table(res)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
