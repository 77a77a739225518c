"""What every subcommand shares: JSON on stdout, the scheduler and storage options, the client."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager


def print_json(obj) -> None:
    """Print a JSON object to stdout (what scripts read)."""
    from ..storage import _json_default

    print(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _scheduler_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDR",
        default=None,
        help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster on this machine)",
    )
    p.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="fsspec storage option for every input and output URL (repeat; dotted keys nest, values "
        "are JSON when they parse: --storage-option client_kwargs.endpoint_url=http://minio:9000)",
    )


def _so(args) -> dict:
    from ..storage import parse_storage_options

    return parse_storage_options(getattr(args, "storage_option", None))


@contextmanager
def _client(args):
    from ..cluster import ENV_ADDRESS, connect

    address = getattr(args, "scheduler", None) or os.environ.get(ENV_ADDRESS) or None
    if address is not None:
        with connect(address) as client:
            yield client
        return
    # Worker processes of the LocalCluster inherit this process's stdout, and libraries print to it
    # from workers (xgboost.dask's "Task ... got rank N"): start them with stderr as their stdout, so
    # the JSON a command prints on stdout stays machine-readable.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        client = connect()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with client:
        yield client
