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
