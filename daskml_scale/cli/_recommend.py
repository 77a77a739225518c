"""``train als`` and ``recommend``: ALS recommenders and their top-N for every user."""

from __future__ import annotations

from ..errors import ParameterError
from ._common import _client, _scheduler_arg, _so, print_json


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
    from ..data import read_interactions
    from ..recommend import ALSRecommender

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
    from ..data import read_interactions
    from ..recommend import load_model, recommend_all
    from ..storage import write_parquet

    so = _so(args)
    model = load_model(args.model, storage_options=so)
    seen = read_interactions(args.exclude_seen, storage_options=so) if args.exclude_seen else False
    with _client(args) as client:
        recs = recommend_all(model, n=args.n, exclude_seen=seen, client=client)
        write_parquet(recs, args.out, storage_options=so, client=client)
    print_json({"model": args.model, "out": args.out, "n": args.n, "users": len(model.user_ids_)})
