"""The ``daskml-scale`` command: wires the library's functions together, nothing more.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args)`` runs it, in the module of its concept (``_data``: generate, validate;
``_fraud``: train fraud, score, features; ``_recommend``: train als, recommend; ``_evaluate``;
``_models``: demo, compress; ``_train``: the ``train KIND`` dispatch, :data:`TRAIN_KINDS`); ``COMMANDS``
lists them. Results meant for machines go to stdout as JSON; progress, the dashboard link and
messages go to stderr. A library error ends with exit status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

from .. import __version__
from ..errors import DaskMLScaleError
from ._common import _client as _client  # the command's client, for tests and scripts
from ._common import print_json
from ._data import _add_generate, _add_validate, _run_generate, _run_validate
from ._evaluate import _add_evaluate, _run_evaluate
from ._fraud import _add_features, _add_score, _run_features, _run_score
from ._models import _add_compress, _add_demo, _run_compress, _run_demo
from ._recommend import _add_recommend, _run_recommend
from ._train import TRAIN_KINDS, _add_train, _run_train

__all__ = ["COMMANDS", "TRAIN_KINDS", "build_parser", "main", "print_json"]


COMMANDS = {
    "evaluate": (_add_evaluate, _run_evaluate),
    "generate": (_add_generate, _run_generate),
    "validate": (_add_validate, _run_validate),
    "demo": (_add_demo, _run_demo),
    "train": (_add_train, _run_train),
    "score": (_add_score, _run_score),
    "recommend": (_add_recommend, _run_recommend),
    "features": (_add_features, _run_features),
    "compress": (_add_compress, _run_compress),
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


@contextmanager
def _quiet_lost_scheduler():
    """distributed's client logs its failed reconnections with a traceback: the one-line error that
    main prints says it already (DASKML_SCALE_DEBUG=1 keeps the log)."""
    import logging

    log = logging.getLogger("distributed.client")
    level = log.level
    if not os.environ.get("DASKML_SCALE_DEBUG"):
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``daskml-scale`` command."""
    args = build_parser().parse_args(argv)
    _, run = COMMANDS[args.command]
    from distributed.client import FutureCancelledError

    try:
        with _progress(args.command), _quiet_lost_scheduler():
            code = run(args)
    except FutureCancelledError as e:
        if "scheduler-connection-lost" not in str(e) or os.environ.get("DASKML_SCALE_DEBUG"):
            raise
        print(
            f"daskml-scale {args.command}: error: lost the connection to the Dask scheduler mid-job; "
            "nothing was committed and any previous output is left as it was. Check the scheduler "
            "and rerun.",
            file=sys.stderr,
        )
        return 2
    except DaskMLScaleError as e:
        print(f"daskml-scale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (OSError, *_arrow_errors()) as e:
        # a file that vanished, became unreadable or is corrupt mid-run, a full or read-only disk:
        # the user's to fix, so one line (DASKML_SCALE_DEBUG=1 shows the traceback)
        if os.environ.get("DASKML_SCALE_DEBUG"):
            raise
        from ..storage import _original_message

        print(
            f"daskml-scale {args.command}: error: {type(e).__name__}: {_original_message(e)} "
            "(set DASKML_SCALE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 2
    return int(code or 0)


def _arrow_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's I/O and format errors (ArrowInvalid for a corrupt file, ...)."""
    import pyarrow as pa

    return (pa.ArrowException,)


@contextmanager
def _progress(command: str):
    """A status line with elapsed time on stderr while a command runs (the demo shows its own stages)."""
    import time

    from rich.console import Console

    console = Console(stderr=True)
    if command == "demo" or not console.is_terminal:
        yield
        return
    t0 = time.perf_counter()
    with console.status(f"daskml-scale {command} running (see the dashboard for tasks) ..."):
        yield
    console.log(f"daskml-scale {command}: done in {time.perf_counter() - t0:.1f} s")
