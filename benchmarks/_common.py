"""What every benchmark script shares: where data lives and how its LocalCluster is quieted.

Data folders default to ``$DASKML_SCALE_BENCH_DATA`` when set, else ``<system temp dir>/daskml-scale-bench-data``
(never a fixed absolute path); every script takes ``--data-dir`` to put them elsewhere (a big, fast
disk for the 100M and 1B-row runs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

ENV_DATA_DIR = "DASKML_SCALE_BENCH_DATA"


def default_data_dir() -> Path:
    """``$DASKML_SCALE_BENCH_DATA``, else ``<tempdir>/daskml-scale-bench-data``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else Path(tempfile.gettempdir()) / "daskml-scale-bench-data"


def add_data_dir_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-dir`` (generated data is kept there and reused between runs)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help=f"where generated data is kept and reused (default ${ENV_DATA_DIR} or {default_data_dir()})",
    )


def quiet_cluster_logs() -> None:
    """Silence the per-shuffle WARNING lines of a LocalCluster's in-process scheduler."""
    from daskml_scale.cluster import quiet_shuffle_logs

    quiet_shuffle_logs()


def task_seconds(client, since: float) -> dict:
    """Seconds the workers spent on each group of tasks since ``since`` (a ``time.time()``).

    From the scheduler's task stream (``client.get_task_stream``, which starts recording on its
    first call: call ``task_seconds(client, time.time())`` before the work): per task name prefix
    (``read_parquet``, ``shuffle``, ``p2pshuffle``, ``apply_stage``, ...), the compute seconds summed
    over workers and the number of tasks, and the seconds spent transferring task results between
    workers. On a CPU-bound run the compute seconds of a group are its share of the cores' time (with
    the other threads of a worker, such as the P2P shuffle's, running beside them).
    """
    groups: dict = {}
    transfer = 0.0
    for t in client.get_task_stream(start=since):
        key = t["key"][0] if isinstance(t["key"], tuple) else t["key"]
        name = str(key).rsplit("-", 1)[0] if "-" in str(key) else str(key)
        name = name.split("-")[0]
        for s in t["startstops"]:
            if s["action"] == "compute":
                g = groups.setdefault(name, {"seconds": 0.0, "tasks": 0})
                g["seconds"] += s["stop"] - s["start"]
                g["tasks"] += 1
            elif s["action"] == "transfer":
                transfer += s["stop"] - s["start"]
    ordered = dict(sorted(groups.items(), key=lambda kv: -kv[1]["seconds"]))
    return {"compute": ordered, "transfer_seconds": transfer}
