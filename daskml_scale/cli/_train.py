"""``train KIND``: dispatches to the kinds of model, each declared beside its own command."""

from __future__ import annotations

from ._fraud import _add_train_fraud, _run_train_fraud
from ._recommend import _add_train_als, _run_train_als

# The kinds of ``daskml-scale train KIND``: kind -> (add(kinds_subparsers), run(args)). Each owner adds
# one entry here, its two functions in its own module (e.g. "als" for the recommendations).
TRAIN_KINDS = {
    "fraud": (_add_train_fraud, _run_train_fraud),
    "als": (_add_train_als, _run_train_als),
}


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (fraud, als, ...) and save it as a directory")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for add, _ in TRAIN_KINDS.values():
        add(kinds)


def _run_train(args):
    _, run = TRAIN_KINDS[args.kind]
    return run(args)
