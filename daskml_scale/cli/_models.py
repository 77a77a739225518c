"""``demo`` and ``compress``: the whole product end to end, and smaller models."""

from __future__ import annotations

from ._common import _client, _scheduler_arg, _so, print_json


def _add_demo(sub):
    from ..demo import DEFAULT_ROWS

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
    from ..demo import run_demo

    with _client(args) as client:
        run_demo(rows=args.rows, out=args.out, seed=args.seed, client=client)


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

    from ..compression import compress
    from ..errors import ArtifactError
    from ..storage import read_artifact

    so = _so(args)
    kind = read_artifact(args.model, verify=False, storage_options=so)["kind"]
    if kind in ("ALSRecommender", "QuantizedALSRecommender", "PopularityRecommender"):
        from ..data import read_interactions
        from ..recommend import load_model

        data = read_interactions(args.data, storage_options=so) if args.data else None
    elif kind in ("XGBoostFraudClassifier", "SGDFraudClassifier"):
        from ..data import read_transactions
        from ..fraud import load_model

        data = read_transactions(args.data, storage_options=so) if args.data else None
    else:
        raise ArtifactError(f"{args.model} holds a {kind!r} artifact, which compress does not take.")
    model = load_model(args.model, storage_options=so)
    with _client(args) as client:
        small = compress(model, args.method, data, student=args.student, client=client)
    small.save(args.out, storage_options=so)
    print_json({"model": args.model, "out": str(args.out), **small.compression_report_})
