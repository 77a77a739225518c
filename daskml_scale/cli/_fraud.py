"""``train fraud``, ``score`` and ``features``: fraud models, batch scoring, behaviour features."""

from __future__ import annotations

import json

from ..errors import ParameterError
from ._common import _client, _scheduler_arg, _so, print_json


def _add_train_fraud(kinds):
    p = kinds.add_parser("fraud", help="train a fraud classifier on canonical transactions")
    p.add_argument("input", metavar="INPUT", help="transactions: parquet or CSV, local path or fsspec URL")
    p.add_argument("--model", required=True, metavar="DIR", help="where to save the model (replaced)")
    p.add_argument("--algo", choices=["xgboost", "sgd"], default="xgboost")
    p.add_argument(
        "--valid-from",
        metavar="TIMESTAMP",
        default=None,
        help="validation set: transactions at or after this time (default: the latest 20%% of the span)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="xgboost only")
    p.add_argument("--no-features", action="store_true", help="raw columns only (baseline)")
    p.add_argument(
        "--checkpoint",
        metavar="URL",
        default=None,
        help="xgboost: checkpoint the booster here every 10 rounds (shared storage on a cluster); a "
        "worker lost mid-fit is survived by resuming from the last checkpoint",
    )
    _scheduler_arg(p)


def _run_train_fraud(args):
    from ..data import read_transactions
    from ..fraud import SGDFraudClassifier, XGBoostFraudClassifier

    features = None if args.no_features else "auto"
    if args.algo == "xgboost":
        model = XGBoostFraudClassifier(
            features=features,
            valid_from=args.valid_from,
            device=args.device,
            checkpoint=args.checkpoint,
            storage_options=_so(args) or None,
        )
    else:
        model = SGDFraudClassifier(features=features, valid_from=args.valid_from)
    ddf = read_transactions(args.input, storage_options=_so(args))
    with _client(args) as client:
        model.fit(ddf, client=client)
    model.save(args.model, storage_options=_so(args))
    print_json({"model": args.model, "algo": args.algo, "validation": model.validation_metrics_})


def _add_score(sub):
    p = sub.add_parser("score", help="batch-score transactions with a saved fraud model")
    p.add_argument("input", metavar="INPUT", help="transactions to score: parquet or CSV, path or URL")
    p.add_argument("--model", required=True, metavar="DIR", help="a model saved by `train fraud`")
    p.add_argument("--out", required=True, metavar="DIR", help="output parquet directory (replaced)")
    p.add_argument(
        "--history",
        metavar="DIR",
        default=None,
        help="earlier transactions of the same cards, so behaviour features see their past",
    )
    p.add_argument(
        "--start",
        metavar="TIME",
        default=None,
        help="with --history: the batch's first time or any earlier one ('auto': found by one pass "
        "over the batch's times); each shuffle then carries only the history its windows read, "
        "which pays for a short batch (a day) with a long history (a month)",
    )
    p.add_argument("--threshold", type=float, default=None, help="alert threshold (default: the model's)")
    p.add_argument(
        "--quarantine",
        metavar="DIR",
        default=None,
        help="directory for the rows that cannot be scored, with a reason column (written with --out)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2, nothing written) when any row cannot be scored, instead of setting it aside",
    )
    p.add_argument(
        "--keep",
        metavar="COLUMN",
        action="append",
        default=None,
        help="input column carried to the output beside the score (repeat it), e.g. --keep is_fraud",
    )
    _scheduler_arg(p)


def _run_score(args):
    from ..data import read_transactions
    from ..fraud import load_model, score

    so = _so(args)
    model = load_model(args.model, storage_options=so)
    ddf = read_transactions(args.input, storage_options=so)
    history = read_transactions(args.history, storage_options=so) if args.history else None
    with _client(args) as client:
        summary = score(
            model, ddf, out=args.out, history=history, start=args.start, threshold=args.threshold,
            quarantine=args.quarantine, strict=args.strict, keep=args.keep, storage_options=so,
            client=client,
        )  # fmt: skip
    print_json(summary)


def _add_features(sub):
    p = sub.add_parser(
        "features",
        help="write transaction_id plus every behaviour feature of a transactions table as parquet",
    )
    p.add_argument("input", metavar="INPUT", help="transactions parquet directory (canonical columns)")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument(
        "--history",
        metavar="DIR",
        default=None,
        help="earlier transactions (parquet): features of INPUT as if computed over both",
    )
    p.add_argument(
        "--spec",
        metavar="FILE",
        default=None,
        help="fitted feature specification (JSON from TransactionFeatures.to_dict); default: fit on INPUT",
    )
    p.add_argument("--save-spec", metavar="FILE", default=None, help="write the specification used (JSON)")
    _scheduler_arg(p)


def _run_features(args):
    from pathlib import Path

    from .. import schema as S
    from ..features import TransactionFeatures
    from ..storage import read_parquet, write_json, write_parquet

    tf = None
    if args.spec:  # checked before any cluster starts
        if not Path(args.spec).is_file():
            raise ParameterError(f"--spec {args.spec!r} is not a file: give a JSON from --save-spec.")
        tf = TransactionFeatures.from_dict(json.loads(Path(args.spec).read_text()))
    # parquet as written; the transformer checks the columns its spec needs, naming any missing one
    so = _so(args)
    ddf = read_parquet(args.input, storage_options=so)
    history = read_parquet(args.history, storage_options=so) if args.history else None
    with _client(args) as client:
        if tf is None:
            tf = TransactionFeatures().fit(ddf, client=client)
        names = list(tf.get_feature_names_out())
        # only what the features read travels through the shuffles (a missing one is named by transform)
        cols = tf.input_columns_
        ddf = ddf[[c for c in ddf.columns if c in cols]]
        if history is not None:
            history = history[[c for c in history.columns if c in cols]]
        out = tf.transform(ddf, history=history)[[S.TRANSACTION_ID, *names]]
        write_parquet(out, args.out, storage_options=so, client=client)
    if args.save_spec:
        write_json(args.save_spec, tf.to_dict(), storage_options=so)
    print_json({"out": args.out, "features": names, "partitions": out.npartitions, "history": args.history})
