"""The ``daskml-scale`` command: wires the library's functions together, nothing more.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args)`` runs it; ``COMMANDS`` lists them. Results meant for machines go to stdout as
JSON; progress, the dashboard link and messages go to stderr. A library error ends with exit status
2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from . import __version__
from .errors import DaskMLScaleError, ParameterError

__all__ = ["main"]


def print_json(obj) -> None:
    """Print a JSON object to stdout (what scripts read)."""
    from .storage import _json_default

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
    from .storage import parse_storage_options

    return parse_storage_options(getattr(args, "storage_option", None))


@contextmanager
def _client(args):
    from .cluster import ENV_ADDRESS, connect

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
    from .storage import write_parquet

    make = make_transactions if args.table == "transactions" else make_interactions
    ddf = make(args.rows, npartitions=args.partitions, seed=args.seed)
    with _client(args) as client:
        write_parquet(ddf, args.out, storage_options=_so(args), client=client)
    print_json({"table": args.table, "rows": args.rows, "partitions": ddf.npartitions, "out": args.out})


# ---------------------------------------------------------------------------------------------- train
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
    from .data import read_transactions
    from .fraud import SGDFraudClassifier, XGBoostFraudClassifier

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


def _add_train_als(kinds):
    p = kinds.add_parser("als", help="train an ALS recommender on canonical interactions")
    p.add_argument("input", metavar="INPUT", help="interactions (parquet: user_id, item_id[, weight])")
    p.add_argument("--model", required=True, metavar="DIR", help="where to save the model (replaced)")
    p.add_argument(
        "--engine",
        choices=["auto", "implicit", "distributed"],
        default="auto",
        help="auto: implicit on one worker while the matrix fits a quarter of its memory (default)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="write the factor blocks there every --checkpoint-every iterations (distributed engine)",
    )
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--resume", action="store_true", help="continue the fit checkpointed in --checkpoint")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0, help="confidence = alpha * weight")
    p.add_argument("--confidence", choices=["linear", "log", "bm25"], default="linear")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="engine implicit only")
    p.add_argument("--seed", type=int, default=0)
    _scheduler_arg(p)


def _run_train_als(args):
    from .data import read_interactions
    from .recommend import ALSRecommender

    model = ALSRecommender(
        factors=args.factors,
        iterations=args.iterations,
        regularization=args.regularization,
        alpha=args.alpha,
        confidence=args.confidence,
        engine=args.engine,
        device=args.device,
        random_state=args.seed,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        storage_options=_so(args) or None,
    )
    if args.resume and not args.checkpoint:
        raise ParameterError("--resume needs --checkpoint DIR (the checkpoint of the fit to continue)")
    ddf = read_interactions(args.input, storage_options=_so(args))
    with _client(args) as client:
        model.fit(ddf, client=client, resume=args.checkpoint if args.resume else None)
        model.save(args.model, storage_options=_so(args))  # while the client holding the blocks is open
    print_json(
        {
            "model": args.model,
            "engine": model.engine_,
            "users": model.user_blocks_.n_rows,
            "items": model.item_blocks_.n_rows,
            "interactions": model.n_interactions_,
            "fit_seconds": round(model.fit_time_s_, 3),
        }
    )


# The kinds of ``daskml-scale train KIND``: kind -> (add(kinds_subparsers), run(args)). Each owner adds
# one entry next to its own two functions (e.g. "als" for the recommendations).
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


# ---------------------------------------------------------------------------------------------- score
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
    from .data import read_transactions
    from .fraud import load_model, score

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


# ----------------------------------------------------------------------------------------------- demo
def _add_demo(sub):
    from .demo import DEFAULT_ROWS

    p = sub.add_parser(
        "demo", help="the whole product end to end on synthetic data (LocalCluster by default)"
    )
    p.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows of each table (default {DEFAULT_ROWS})"
    )
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--seed", type=int, default=0)
    _scheduler_arg(p)


def _run_demo(args):
    from .demo import run_demo

    with _client(args) as client:
        run_demo(rows=args.rows, out=args.out, seed=args.seed, client=client)


# ------------------------------------------------------------------------------------------- validate
def _add_validate(sub):
    p = sub.add_parser(
        "validate",
        help="validate (and with --out/--quarantine, clean) transactions or interactions; JSON report",
    )
    p.add_argument("table", choices=["transactions", "interactions"])
    p.add_argument("input", help="parquet or CSV: path, directory, glob or fsspec URL")
    p.add_argument("--out", default=None, help="directory for the clean rows (parquet, replaced atomically)")
    p.add_argument(
        "--quarantine", default=None, help="directory for the quarantined rows with a reason column"
    )
    p.add_argument("--format", choices=["parquet", "csv"], default=None, help="default: from the file name")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="YOURS=CANONICAL",
        help="column mapping, repeatable: --map txn=transaction_id --map ts=timestamp",
    )
    p.add_argument(
        "--time-unit", default=None, choices=["s", "ms", "us", "ns"], help="unit of a numeric timestamp"
    )
    p.add_argument(
        "--categories",
        choices=["normalize", "quarantine"],
        default="normalize",
        help="case/whitespace variants of a category: repair in place (default) or quarantine",
    )
    p.add_argument("--no-duplicates", action="store_true", help="skip the duplicate-key check (no shuffle)")
    p.add_argument(
        "--read-twice",
        action="store_true",
        help="with --out: find duplicates before writing (two reads; disk peak the larger of output and "
        "shuffle scratch, not their sum)",
    )
    _scheduler_arg(p)


def _run_validate(args):
    from .data import clean, read_table, validate
    from .schema import SCHEMAS

    mapping = {}
    for item in args.map:
        if "=" not in item:
            raise ParameterError(f"--map takes YOURS=CANONICAL, e.g. --map txn=transaction_id; got {item!r}.")
        k, v = item.split("=", 1)
        mapping[k] = v
    if (args.out is None) != (args.quarantine is None):
        raise ParameterError("give both --out and --quarantine (to clean), or neither (to validate only).")
    schema = SCHEMAS[args.table]
    # the schema is checked on metadata here, before a cluster starts or anything is written
    ddf = read_table(
        args.input,
        schema,
        format=args.format,
        columns=mapping or None,
        time_unit=args.time_unit,
        storage_options=_so(args),
    )
    kw = {"categories": args.categories, "duplicates": not args.no_duplicates, "time_unit": args.time_unit}
    with _client(args) as client:
        if args.out is None:
            report = validate(ddf, schema, client=client, **kw)
        else:
            report = clean(
                ddf,
                schema,
                out=args.out,
                quarantine_out=args.quarantine,
                read_once=not args.read_twice,
                storage_options=_so(args),
                client=client,
                **kw,
            ).report
    out = report.to_dict()
    out.update({"input": args.input, "out": args.out, "quarantine": args.quarantine})
    print_json(out)


# ------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="exact classification or ranking metrics of parquet tables; JSON")
    ev = p.add_subparsers(dest="evaluate_kind", required=True, metavar="KIND")
    c = ev.add_parser("classification", help="ROC-AUC, PR-AUC, log loss, Brier, precision/recall/F1")
    c.add_argument("input", help="parquet path, directory or glob with the label and score columns")
    c.add_argument("--label", default="is_fraud", help="0/1 label column (default is_fraud)")
    c.add_argument("--score", default="score", help="score column (default score)")
    c.add_argument("--weight", default=None, help="optional sample-weight column")
    c.add_argument("--amount", default=None, help="optional amount column (amount recall)")
    c.add_argument("--threshold", type=float, default=0.5, help="alert threshold: score >= threshold")
    c.add_argument(
        "--score-ranges",
        default=None,
        metavar="R",
        help="split the score axis in R ranges (default: auto, sized to the workers' memory)",
    )
    c.add_argument(
        "--passes",
        type=int,
        default=None,
        help="reduce the ranges in this many passes (default: auto, sized to the workers' memory)",
    )
    c.add_argument("--report", default=None, metavar="DIR", help="also save a Report (JSON + PNG) there")
    _scheduler_arg(c)
    r = ev.add_parser("ranking", help="precision/recall/NDCG/MAP/hit rate/MRR/coverage at k")
    r.add_argument("recs", help="parquet of recommendations (user_id, item_id, rank)")
    r.add_argument("truth", help="parquet of relevant pairs (user_id, item_id)")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--user-col", default="user_id")
    r.add_argument("--item-col", default="item_id")
    r.add_argument("--rank-col", default="rank")
    r.add_argument("--report", default=None, metavar="DIR", help="also save a Report (JSON + PNG) there")
    _scheduler_arg(r)


def _run_evaluate(args):
    from . import evaluation as ev
    from .storage import read_parquet

    if args.evaluate_kind == "classification":
        ddf = read_parquet(
            args.input, storage_options=_so(args)
        )  # only the needed columns are read (projection pushdown)
        kw = dict(
            label=args.label,
            score=args.score,
            weight=args.weight,
            amount=args.amount,
            threshold=args.threshold,
        )
        with _client(args) as client:
            r = args.score_ranges
            r = int(r) if r is not None and r.isdigit() else r
            if args.report:
                report = ev.Report.classification(
                    ddf, score_ranges=r, passes=args.passes, client=client, **kw
                )
                report.save(args.report, storage_options=_so(args))
                out = report.metrics
            else:
                out = ev.classification_metrics(ddf, score_ranges=r, passes=args.passes, client=client, **kw)
    else:
        recs = read_parquet(args.recs, storage_options=_so(args))
        truth = read_parquet(args.truth, storage_options=_so(args))
        kw = dict(user_col=args.user_col, item_col=args.item_col, rank_col=args.rank_col)
        with _client(args) as client:
            if args.report:
                report = ev.Report.ranking(recs, truth, k=args.k, client=client, **kw)
                report.save(args.report, storage_options=_so(args))
                out = report.metrics
            else:
                out = ev.ranking_metrics(recs, truth, k=args.k, client=client, **kw)
    print_json(out)


# ------------------------------------------------------------------------------------------ recommend
def _add_recommend(sub):
    p = sub.add_parser("recommend", help="top-N items for every user of a saved recommender, as parquet")
    p.add_argument("--model", required=True, metavar="DIR", help="a model saved by `train als`")
    p.add_argument("--out", required=True, metavar="DIR", help="output parquet directory (replaced)")
    p.add_argument("--n", type=int, default=10, help="items per user (default 10)")
    p.add_argument(
        "--exclude-seen",
        metavar="INPUT",
        default=None,
        help="interactions (parquet) whose pairs are never recommended, e.g. the training data",
    )
    _scheduler_arg(p)


def _run_recommend(args):
    from .data import read_interactions
    from .recommend import load_model, recommend_all
    from .storage import write_parquet

    so = _so(args)
    model = load_model(args.model, storage_options=so)
    seen = read_interactions(args.exclude_seen, storage_options=so) if args.exclude_seen else False
    with _client(args) as client:
        recs = recommend_all(model, n=args.n, exclude_seen=seen, client=client)
        write_parquet(recs, args.out, storage_options=so, client=client)
    print_json({"model": args.model, "out": args.out, "n": args.n, "users": len(model.user_ids_)})


# ------------------------------------------------------------------------------------------- features
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

    from . import schema as S
    from .features import TransactionFeatures
    from .storage import read_parquet, write_json, write_parquet

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


# ------------------------------------------------------------------------------------------- compress
def _add_compress(sub):
    p = sub.add_parser(
        "compress", help="quantize, prune or distill a saved model; prints the trade-off report"
    )
    p.add_argument("--model", required=True, metavar="DIR", help="a saved ALS or fraud model")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="where to save the compressed model (replaced)"
    )
    p.add_argument("--method", required=True, choices=["fp16", "int8", "int4", "prune", "distill"])
    p.add_argument(
        "--data",
        metavar="INPUT",
        default=None,
        help="ALS: holdout interactions (NDCG@10); fraud: labelled transactions (required)",
    )
    p.add_argument("--student", choices=["xgboost", "sgd"], default="xgboost", help="distill only")
    _scheduler_arg(p)


def _run_compress(args):

    from .compression import compress
    from .errors import ArtifactError
    from .storage import read_artifact

    so = _so(args)
    kind = read_artifact(args.model, verify=False, storage_options=so)["kind"]
    if kind in ("ALSRecommender", "QuantizedALSRecommender", "PopularityRecommender"):
        from .data import read_interactions
        from .recommend import load_model

        data = read_interactions(args.data, storage_options=so) if args.data else None
    elif kind in ("XGBoostFraudClassifier", "SGDFraudClassifier"):
        from .data import read_transactions
        from .fraud import load_model

        data = read_transactions(args.data, storage_options=so) if args.data else None
    else:
        raise ArtifactError(f"{args.model} holds a {kind!r} artifact, which compress does not take.")
    model = load_model(args.model, storage_options=so)
    with _client(args) as client:
        small = compress(model, args.method, data, student=args.student, client=client)
    small.save(args.out, storage_options=so)
    print_json({"model": args.model, "out": str(args.out), **small.compression_report_})


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
        from .storage import _original_message

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
