"""The main job, ``daskml-scale demo``: the whole product end to end on synthetic data.

1. Fraud: generate transactions, split by time, train the xgboost.dask fraud model (behaviour
   features included), score the test period in batch (history = the training period), evaluate.
2. Recommendations: generate interactions, hold out a seeded random 20%, train ALS (implicit engine)
   and the popularity baseline, recommend the top 10 for every user, evaluate both.
3. Write ``metrics.json``, ``scores/`` and ``recommendations/`` (parquet), PNG plots; print a table.

Examples
--------
>>> from daskml_scale.demo import run_demo
>>> metrics = run_demo(rows=50_000, out="demo-output")  # doctest: +SKIP
>>> metrics["fraud"]["xgboost"]["roc_auc"] > 0.9  # doctest: +SKIP
True
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dask.dataframe as dd
import pandas as pd

from . import schema as S
from .cluster import get_client
from .errors import ParameterError
from .storage import atomic_dir, write_json_atomic, write_parquet

__all__ = ["run_demo"]

DEFAULT_ROWS = 200_000


class _Stages:
    """Stage-by-stage progress on stderr (rich), with elapsed times."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)
        self.t0 = time.perf_counter()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        with self.console.status(f"[bold]{name}[/bold] ..."):
            result = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - t
        self.console.log(f"{name}: {self.times[name]:.1f} s")
        return result


def _fraud(txns, days_train, stages, out_tmp, client, seed):
    from .evaluation import Report, time_split
    from .fraud import XGBoostFraudClassifier, score

    start = pd.Timestamp("2025-01-01")
    train, test = time_split(txns, start + pd.Timedelta(days=days_train))
    model = XGBoostFraudClassifier(n_estimators=300, random_state=seed)
    stages.run("fraud: train xgboost.dask (features + early stopping)", model.fit, train, client=client)
    stages.run(
        "fraud: batch score the test period",
        score,
        model,
        test,
        history=train,
        out=out_tmp / "scores",
        client=client,
    )
    scored = dd.read_parquet(out_tmp / "scores")  # evaluate what was written
    labelled = scored.merge(test[[S.TRANSACTION_ID, S.IS_FRAUD]], on=S.TRANSACTION_ID)
    report = stages.run(
        "fraud: evaluate",
        Report.classification,
        labelled,
        label=S.IS_FRAUD,
        score=S.SCORE,
        title="Fraud: xgboost on the test period",
        client=client,
    )
    report.save(out_tmp / "plots" / "fraud")
    metrics = {k: v for k, v in report.metrics.items() if not isinstance(v, (list, dict))}
    return {"xgboost": metrics}


def _recommend(inter, stages, out_tmp, client, seed):
    from .evaluation import Report, random_split
    from .recommend import ALSRecommender, PopularityRecommender, recommend_all

    train, test = random_split(inter, test_size=0.2, seed=seed)
    train = train.persist() if client is not None else train
    als = ALSRecommender(
        factors=16, regularization=0.1, alpha=5.0, iterations=10, engine="implicit", random_state=seed
    )
    stages.run("recommend: train ALS (implicit engine)", als.fit, train, client=client)
    pop = PopularityRecommender()
    stages.run("recommend: popularity baseline", pop.fit, train, client=client)
    out = {}
    for name, model in (("als", als), ("popularity", pop)):
        recs = recommend_all(model, n=10, exclude_seen=train, client=client)
        if name == "als":
            write_parquet(recs, out_tmp / "recommendations", client=client)
            recs = dd.read_parquet(out_tmp / "recommendations")  # evaluate what was written
        report = stages.run(
            f"recommend: evaluate {name}",
            Report.ranking,
            recs,
            test,
            k=10,
            ks=(1, 3, 5, 10),
            train=train,
            title=f"Recommendations: {name}",
            client=client,
        )
        report.save(out_tmp / "plots" / f"recommend-{name}")
        out[name] = report.metrics
    return out


def _summary(metrics) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="daskml-scale demo")
    table.add_column("task")
    table.add_column("model")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for model, m in metrics["fraud"].items():
        for k in ("roc_auc", "pr_auc"):
            table.add_row("fraud", model, k, f"{m[k]:.4f}")
    for model, m in metrics["recommend"].items():
        for k in ("precision@10", "ndcg@10"):
            table.add_row("recommend", model, k, f"{m[k]:.4f}")
    console = Console(file=sys.stdout, width=80)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def run_demo(
    *,
    rows: int = DEFAULT_ROWS,
    out: str | Path = "demo-output",
    seed: int = 0,
    client=None,
    quiet: bool = False,
) -> dict:
    """Run the end-to-end demo and write its outputs into ``out``.

    Parameters
    ----------
    rows : int
        Rows of transactions, and of interactions, to generate (default 200,000).
    out : path-like
        Output directory, replaced atomically: ``metrics.json``, ``scores/``, ``recommendations/``,
        ``plots/``, ``summary.txt``.
    seed : int
    client : distributed.Client, optional
        Default: the current client.
    quiet : bool
        No progress on stderr.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.
    """
    from .data import make_interactions, make_transactions

    if rows < 20_000:
        raise ParameterError(
            f"The 'rows' parameter of run_demo must be >= 20000 to hold fraud to learn. Got {rows}."
        )
    client = get_client(client)
    stages = _Stages(quiet)
    nparts = max(2, rows // 50_000)
    txns = make_transactions(rows, days=60, npartitions=nparts, seed=seed)
    inter = make_interactions(rows, npartitions=nparts, seed=seed + 1)
    with atomic_dir(out) as tmp:
        metrics = {
            "fraud": _fraud(txns, 45, stages, tmp, client, seed),
            "recommend": _recommend(inter, stages, tmp, client, seed),
            "rows": rows,
            "seed": seed,
            "seconds": {k: round(v, 2) for k, v in stages.times.items()},
        }
        write_json_atomic(tmp / "metrics.json", metrics)
        summary = _summary(metrics)
        (tmp / "summary.txt").write_text(summary)
    if not quiet:
        print(summary, end="")
        stages.console.log(f"wrote {out} in {time.perf_counter() - stages.t0:.1f} s")
    return metrics
