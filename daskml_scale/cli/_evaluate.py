"""``evaluate``: exact classification or ranking metrics of parquet tables."""

from __future__ import annotations

from ._common import _client, _scheduler_arg, _so, print_json


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
    from .. import evaluation as ev
    from ..storage import read_parquet

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
