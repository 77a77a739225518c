"""Recovery benchmark: what a worker killed mid-fit costs an ``XGBoostFraudClassifier`` with checkpoints.

On a LocalCluster of 2 nanny-managed worker processes x 1 thread (127.0.0.1), the same model is fitted
twice on the same transactions (parquet under ``--data-dir``, read back for each fit):

1. **undisturbed**, with ``checkpoint=`` (so both fits pay the same checkpoint writes: the difference
   between them is the cost of the failure, not of checkpointing);
2. **disturbed**: a background thread watches ``<checkpoint>/latest.json`` and, once the checkpoint
   at or after ``--kill-fraction`` of ``--n-estimators`` is written, waits ``--kill-delay`` seconds
   (default: half a checkpoint interval, from the undisturbed fit's seconds per round, so the kill
   lands mid-interval: the average case) and SIGKILLs one worker process (pid from
   ``client.run(os.getpid)``). Its nanny restarts it; the fit notices, waits for it and resumes from
   the checkpoint (``model.restarts_``).

Reported: both fit times (whole ``fit``: features, DMatrix, rounds, calibration, validation
metrics), the extra seconds and the ratio; detection (``failed_at_unix`` - kill time), the wait for
the cluster (``waited_s``), the round resumed from and the rounds trained again (estimated from the
round rate: the rounds after the last checkpoint are lost); validation PR-AUC / ROC-AUC and rounds of
both models. Early stopping is off by default (``--early-stopping-rounds 0``) so both fits train
exactly ``--n-estimators`` rounds and the kill point is known in advance.

Usage::

    python benchmarks/bench_recovery.py --rows 200000                 # a quick check
    python benchmarks/bench_recovery.py --rows 2000000                # the RESULTS.md figures
    python benchmarks/bench_recovery.py --rows 2000000 --no-features  # raw columns only (shorter)

Prints a table and writes JSON to benchmarks/results/recovery.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from _common import add_data_dir_arg, quiet_cluster_logs  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from daskml_scale.data import make_transactions  # noqa: E402
from daskml_scale.fraud import XGBoostFraudClassifier  # noqa: E402
from daskml_scale.storage import read_parquet, write_parquet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DAYS = 60
PARTITION_ROWS = 250_000


def ensure_transactions(data_dir: Path, rows: int, client) -> Path:
    """Generate (once) ``rows`` transactions as a committed parquet output; at least 4 partitions."""
    npartitions = max(4, math.ceil(rows / PARTITION_ROWS))
    path = data_dir / f"recovery-transactions-{rows}-p{npartitions}"
    if not (path / "_manifest.json").exists():
        print(f"generating {rows:,} transactions into {path}", flush=True)
        write_parquet(
            make_transactions(rows, days=DAYS, npartitions=npartitions, seed=0), path, client=client
        )
    return path


def _latest_rounds(ck: Path) -> int | None:
    try:
        return int(json.loads((ck / "latest.json").read_text())["rounds"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


class CheckpointWatcher(threading.Thread):
    """Records when each checkpoint appears; optionally kills one worker after the ``kill_at`` one."""

    def __init__(self, ck: Path, client=None, kill_at: int | None = None, delay_s: float = 0.0):
        super().__init__(daemon=True)
        self.ck, self.client, self.kill_at, self.delay_s = ck, client, kill_at, delay_s
        self.seen: list[tuple[float, int]] = []  # (unix time first seen, rounds)
        self.killed: dict = {}
        self.stop = threading.Event()

    def run(self):
        last = None
        while not self.stop.is_set():
            r = _latest_rounds(self.ck)
            if r is not None and r != last:
                self.seen.append((time.time(), r))
                last = r
                if self.kill_at is not None and not self.killed and r >= self.kill_at:
                    self._kill(r)
            self.stop.wait(0.02)

    def _kill(self, rounds_seen: int):
        if self.stop.wait(self.delay_s):
            return
        pids = self.client.run(os.getpid)
        addr = sorted(pids)[-1]
        ck_rounds = _latest_rounds(self.ck)
        t = time.time()
        os.kill(pids[addr], signal.SIGKILL)
        self.killed = {
            "worker": addr,
            "pid": pids[addr],
            "at_unix": t,
            "checkpoint_rounds_at_kill": ck_rounds,
            "checkpoint_seen_at_unix": max(s for s, r in self.seen if r == ck_rounds) if ck_rounds else None,
        }


def _rate(seen: list[tuple[float, int]]) -> float | None:
    """Seconds per round between the first and the last checkpoint seen."""
    if len(seen) < 2:
        return None
    (t0, r0), (t1, r1) = seen[0], seen[-1]
    return (t1 - t0) / (r1 - r0) if r1 > r0 else None


def fit_once(args, path: Path, client, ck: Path, kill_at=None, delay_s=0.0):
    shutil.rmtree(ck, ignore_errors=True)
    model = XGBoostFraudClassifier(
        features=None if args.no_features else "auto",
        n_estimators=args.n_estimators,
        early_stopping_rounds=args.early_stopping_rounds or None,
        checkpoint=str(ck),
        checkpoint_every=args.checkpoint_every,
        random_state=0,
    )
    watcher = CheckpointWatcher(ck, client, kill_at, delay_s)
    watcher.start()
    t0 = time.time()
    try:
        model.fit(read_parquet(str(path)), client=client)
    finally:
        t1 = time.time()
        watcher.stop.set()
        watcher.join(10)
    return model, t0, t1, watcher


def _metrics(model) -> dict:
    m = model.validation_metrics_
    return {
        "pr_auc": m["pr_auc"],
        "roc_auc": m["roc_auc"],
        "rounds": int(model.booster_.num_boosted_rounds()),
        "n_train": model.n_train_,
        "n_valid": model.n_valid_,
        "features": len(model.model_columns_),
    }


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--n-estimators", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--early-stopping-rounds", type=int, default=0, help="0: none (the default here)")
    p.add_argument("--no-features", action="store_true", help="raw columns only (features=None): shorter")
    p.add_argument("--kill-fraction", type=float, default=0.4, help="of --n-estimators: when to kill")
    p.add_argument(
        "--kill-delay",
        type=float,
        default=None,
        help="seconds after that checkpoint (default: half a checkpoint interval at the measured rate)",
    )
    add_data_dir_arg(p)
    p.add_argument("--out", default=str(RESULTS / "recovery.json"))
    args = p.parse_args(argv)
    quiet_cluster_logs()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    results = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "load_before": load_before},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(f"load average before: {load_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="8GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        path = ensure_transactions(data_dir, args.rows, client)
        client.run(lambda: __import__("xgboost.dask"))  # imports paid before the first timing

        base, b0, b1, bw = fit_once(args, path, client, tmp / "ck-undisturbed")
        base_s = b1 - b0
        spr = _rate(bw.seen)
        print(f"undisturbed fit: {base_s:.1f} s, {spr or float('nan'):.3f} s/round", flush=True)

        kill_at = (
            math.ceil(args.kill_fraction * args.n_estimators / args.checkpoint_every) * args.checkpoint_every
        )
        delay = args.kill_delay if args.kill_delay is not None else (spr or 0.0) * args.checkpoint_every / 2
        model, d0, d1, dw = fit_once(args, path, client, tmp / "ck-disturbed", kill_at, delay)
        dist_s = d1 - d0
        workers_after = len(client.scheduler_info(n_workers=-1)["workers"])
    shutil.rmtree(tmp, ignore_errors=True)

    k = dw.killed
    if not k:
        raise SystemExit(f"no worker was killed (checkpoints seen: {dw.seen}); lower --kill-fraction")
    if not model.restarts_:
        raise SystemExit(f"a worker was killed but the fit reports no restart: {k}")
    r = model.restarts_[0]
    since_ck = k["at_unix"] - k["checkpoint_seen_at_unix"] if k["checkpoint_seen_at_unix"] else None
    at_kill = None
    if spr and since_ck is not None:  # rounds trained when the worker died (no further checkpoint yet)
        at_kill = min(
            k["checkpoint_rounds_at_kill"] + since_ck / spr,
            k["checkpoint_rounds_at_kill"] + args.checkpoint_every - 1,
        )
    resumed_ck = [t for t, rr in dw.seen if t > r["failed_at_unix"]]
    rec = {
        "rows": args.rows,
        "features": "none" if args.no_features else "auto",
        "undisturbed_fit_s": base_s,
        "undisturbed_s_per_round": spr,
        "disturbed_fit_s": dist_s,
        "extra_s": dist_s - base_s,
        "ratio": dist_s / base_s,
        "kill": k,
        "kill_seconds_into_fit": k["at_unix"] - d0,
        "kill_delay_after_checkpoint_s": since_ck,
        "detection_s": r["failed_at_unix"] - k["at_unix"],
        "waited_for_cluster_s": r["waited_s"],
        "resumed_at_round": r["resumed_at"],
        "rounds_trained_at_kill_est": at_kill,
        "rounds_redone_est": None if at_kill is None else at_kill - r["resumed_at"],
        "failure_to_next_checkpoint_s": (resumed_ck[0] - r["failed_at_unix"]) if resumed_ck else None,
        "restarts": model.restarts_,
        "workers_after": workers_after,
        "undisturbed": _metrics(base),
        "disturbed": _metrics(model),
        "load_after": _load(),
    }
    results["recovery"] = rec
    ub, db = rec["undisturbed"], rec["disturbed"]
    redone = "n/a" if at_kill is None else f"{rec['rounds_redone_est']:.1f}"
    rows = [
        (
            "rows / features / rounds",
            f"{args.rows:,} / {rec['features']} ({ub['features']} model columns) / {args.n_estimators}",
        ),
        ("undisturbed fit", f"{base_s:.1f} s ({spr or float('nan'):.3f} s/round)"),
        ("disturbed fit (1 worker SIGKILLed)", f"{dist_s:.1f} s"),
        ("extra", f"{rec['extra_s']:.1f} s ({rec['ratio']:.2f}x)"),
        (
            "kill",
            f"{rec['kill_seconds_into_fit']:.1f} s into the fit, {since_ck or 0:.1f} s after the round-{k['checkpoint_rounds_at_kill']} checkpoint",
        ),
        ("detection (failure seen by the client - kill)", f"{rec['detection_s']:.2f} s"),
        ("waited for the nanny's restart", f"{r['waited_s']:.2f} s"),
        ("resumed at round / rounds trained again (est.)", f"{r['resumed_at']} / {redone}"),
        (
            "failure -> first checkpoint after the resume",
            "n/a"
            if rec["failure_to_next_checkpoint_s"] is None
            else f"{rec['failure_to_next_checkpoint_s']:.1f} s",
        ),
        ("validation PR-AUC undisturbed / disturbed", f"{ub['pr_auc']:.4f} / {db['pr_auc']:.4f}"),
        ("validation ROC-AUC undisturbed / disturbed", f"{ub['roc_auc']:.4f} / {db['roc_auc']:.4f}"),
        ("booster rounds undisturbed / disturbed", f"{ub['rounds']} / {db['rounds']}"),
        ("workers after", str(workers_after)),
        ("load average before / after", f"{load_before} / {rec['load_after']}"),
    ]
    print("| what | figure |")
    print("|---|---|")
    for name, v in rows:
        print(f"| {name} | {v} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
