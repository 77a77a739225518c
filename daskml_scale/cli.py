"""The ``daskml-scale`` command: wires the library's functions together, nothing more.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args)`` runs it; ``COMMANDS`` lists them. Results meant for machines go to stdout as
JSON; progress, the dashboard link and messages go to stderr. A library error ends with exit status
2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from . import __version__
from .errors import DaskMLScaleError

__all__ = ["main"]


def print_json(obj) -> None:
    """Print a JSON object to stdout (what scripts read)."""
    from .io import _json_default

    print(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _scheduler_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDR",
        default=None,
        help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster on this machine)",
    )


@contextmanager
def _client(args):
    from .cluster import connect

    with connect(getattr(args, "scheduler", None)) as client:
        yield client


# ------------------------------------------------------------------------------------------- generate
def _add_generate(sub):
    p = sub.add_parser("generate", help="write synthetic transactions or interactions as parquet")
    p.add_argument("table", choices=["transactions", "interactions"])
    p.add_argument("--rows", type=int, required=True, help="number of rows")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--partitions", type=int, default=None, help="number of parquet files")
    p.add_argument("--seed", type=int, default=0)
    _scheduler_arg(p)


def _run_generate(args):
    from .data import make_interactions, make_transactions
    from .io import write_parquet

    make = make_transactions if args.table == "transactions" else make_interactions
    ddf = make(args.rows, npartitions=args.partitions, seed=args.seed)
    with _client(args) as client:
        write_parquet(ddf, args.out, client=client)
    print_json({"table": args.table, "rows": args.rows, "partitions": ddf.npartitions, "out": args.out})


COMMANDS = {
    "generate": (_add_generate, _run_generate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskml-scale",
        description="Fraud detection and recommendations on tables too large for one machine, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``daskml-scale`` command."""
    args = build_parser().parse_args(argv)
    _, run = COMMANDS[args.command]
    try:
        code = run(args)
    except DaskMLScaleError as e:
        print(f"daskml-scale {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
