"""Safe defaults: score ranges and passes planned automatically, per-range summaries, one read per pass.

Budgets are lowered through dask config so that small data exercise what 30M+ distinct scores do
with the defaults (benchmarks/bench_evaluation.py --mode safe-defaults shows the real size).
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from daskml_scale.errors import ParameterError
from daskml_scale.evaluation import (
    Report,
    average_precision_score,
    choose_threshold,
    classification_metrics,
    expected_cost,
    precision_at_k,
    recall_at_fpr,
    roc_auc_score,
    score_histogram,
)

TOL = 1e-9
TASK = "daskml_scale.evaluation.max_scores_per_task"
PASS = "daskml_scale.evaluation.max_scores_per_pass"
SKETCH = "daskml_scale.evaluation.sketch_size"


def _continuous(n, seed=0, weights=False, amount=False, nparts=12):
    """Every score distinct; uneven partitions (some empty)."""
    rng = np.random.default_rng(seed)
    s = rng.beta(1, 4, n)
    y = (rng.random(n) < 0.05 + 0.6 * s).astype(np.int64)
    df = pd.DataFrame({"is_fraud": y, "score": s})
    if weights:
        df["w"] = rng.exponential(1.0, n)
    if amount:
        df["amount"] = np.round(rng.lognormal(3, 1, n), 2)
    cuts = np.sort(rng.integers(0, n, nparts - 1))
    cuts[:2] = 0
    edges = np.concatenate([[0], cuts, [n]])
    pieces = [df.iloc[edges[i] : edges[i + 1]].reset_index(drop=True) for i in range(nparts)]
    return df, dd.from_map(_identity, pieces)


def _identity(df):
    return df


def test_defaults_split_into_ranges_bounded_by_the_task_budget_on_the_cluster(client, spread):
    from distributed import get_task_stream

    df, ddf = _continuous(20_000, weights=True, nparts=12)
    y, s, w = df["is_fraud"], df["score"], df["w"]
    budget = 1000
    with dask.config.set({TASK: budget}), spread() as ts, get_task_stream(client) as stream:
        m = classification_metrics(ddf, weight="w", client=client)  # no option: the defaults
        r = Report.classification(ddf, weight="w", client=client)
    ts.assert_spread(prefix="hist_from_frame")  # range pieces built on both workers
    ts.assert_spread(prefix="range_summary")  # and ranges reduced on both workers
    for got in (m, r.metrics):
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=TOL)
        assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, s, sample_weight=w), abs=TOL)
        assert got["log_loss"] == pytest.approx(skm.log_loss(y, s, sample_weight=w), abs=TOL)
    assert r.metrics["distinct_scores"] == 20_000
    assert r.metrics["score_ranges"] >= 20  # 1.5 x 20,000 / 1,000 = 30 planned
    assert 0 < r.metrics["max_range_scores"] <= budget  # the largest histogram any task held
    # the merged histograms in the task stream: none larger than the budget's rows (4 float64 each)
    sizes = [d["nbytes"] for d in stream.data if "merge_hists" in str(d["key"]) and "nbytes" in d]
    assert sizes and max(sizes) <= budget * 4 * 8 + 4096


def test_upstream_is_computed_once_per_pass():
    """Two Series of one frame are read together: the upstream runs once per pass, not per Series."""
    calls = []

    def scored(df):
        calls.append(len(df))
        return df.assign(score=df["x"] * 0.5)

    rng = np.random.default_rng(1)
    pdf = pd.DataFrame({"is_fraud": (rng.random(4000) < 0.2).astype(int), "x": rng.random(4000)})
    ddf = dd.from_pandas(pdf, npartitions=5).map_partitions(scored)
    y, s = pdf["is_fraud"], pdf["x"] * 0.5
    calls.clear()
    assert roc_auc_score(ddf["is_fraud"], ddf["score"]) == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    assert len(calls) == 5 * 2  # one sizing pass + one binning pass, each reading the frame once
    calls.clear()
    assert classification_metrics(ddf)["pr_auc"] == pytest.approx(skm.average_precision_score(y, s), abs=TOL)
    assert len(calls) == 5 * 2
    calls.clear()
    with dask.config.set({TASK: 300, PASS: 1000}):  # 4000 distinct: >= 4 binning passes
        got = average_precision_score(ddf["is_fraud"], ddf["score"])
    assert got == pytest.approx(skm.average_precision_score(y, s), abs=TOL)
    assert len(calls) == 5 * (1 + 4)
    calls.clear()
    assert choose_threshold(ddf["is_fraud"], ddf["score"], method="budget", budget=100) > 0
    assert len(calls) == 5 * 2


def _count_numbers(x) -> int:
    if isinstance(x, np.ndarray):
        return x.size
    if isinstance(x, dict):
        return sum(_count_numbers(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_count_numbers(v) for v in x)
    return 1


@pytest.fixture
def gathered(monkeypatch):
    """Record how many numbers each compute brings back to the client."""
    import daskml_scale.cluster as cluster

    sizes = []
    real = cluster.compute

    def recording(*collections, **kw):
        out = real(*collections, **kw)
        sizes.append(_count_numbers(out))
        return out

    monkeypatch.setattr(cluster, "compute", recording)
    return sizes


def test_report_and_thresholds_bring_only_small_results_to_the_client(gathered):
    n = 100_000
    df, ddf = _continuous(n, seed=3, amount=True, nparts=10)
    y, s, a = df["is_fraud"].to_numpy(), df["score"].to_numpy(), df["amount"].to_numpy()
    h = score_histogram(y, s, amount=a)  # in memory: the oracle
    with dask.config.set({TASK: 2000, PASS: 30_000, SKETCH: 4096}):
        r = Report.classification(ddf, amount="amount", max_points=60, threshold=0.3)
        thr = {
            "cost": choose_threshold(
                ddf["is_fraud"], ddf["score"], method="cost", cost_fn=0.2, cost_fp=1.0, amount=ddf["amount"]
            ),
            "budget": choose_threshold(ddf["is_fraud"], ddf["score"], method="budget", budget=0.01),
            "fpr": choose_threshold(ddf["is_fraud"], ddf["score"], method="fpr", target_fpr=0.02),
        }
        rec = recall_at_fpr(ddf["is_fraud"], ddf["score"], target_fpr=0.02)
        prec = precision_at_k(ddf["is_fraud"], ddf["score"], k=777)
        cost = expected_cost(
            ddf["is_fraud"], ddf["score"], threshold=0.4, cost_fn=3, cost_fp=1, amount=ddf["amount"]
        )
        with pytest.raises(ParameterError, match="max_scores_per_task"):
            score_histogram(ddf["is_fraud"], ddf["score"])  # would gather 100k scores: refused
    # nothing of the size of the distinct scores came back: the sketch (4096 values) is the largest
    assert max(gathered) <= 12_000 < n
    assert r.metrics["score_ranges"] >= 50 and r.metrics["passes"] >= 3
    assert r.metrics["max_range_scores"] <= 2000 and r.metrics["distinct_scores"] == n
    for name in ("roc", "pr", "gain"):
        assert 10 <= len(r.tables[name]) <= 2 * 60
    # thinned points are exact points of the full curves
    roc = r.tables["roc"].iloc[1:]
    neg = (y == 0).sum()
    want = [((s >= t) & (y == 0)).sum() / neg for t in roc["threshold"]]
    np.testing.assert_allclose(roc["fpr"], want, atol=TOL)
    assert r.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    assert r.metrics["pr_auc"] == pytest.approx(skm.average_precision_score(y, s), abs=TOL)
    assert r.metrics["recall@fpr=0.01"] == pytest.approx(recall_at_fpr(hist=h, target_fpr=0.01), abs=TOL)
    assert r.metrics["precision"] == pytest.approx(skm.precision_score(y, s >= 0.3), abs=TOL)
    # thresholds, exactly as from the full histogram in memory
    assert thr["cost"] == choose_threshold(hist=h, method="cost", cost_fn=0.2, cost_fp=1.0)
    assert thr["budget"] == choose_threshold(hist=h, method="budget", budget=0.01)
    assert thr["fpr"] == choose_threshold(hist=h, method="fpr", target_fpr=0.02)
    assert rec == pytest.approx(recall_at_fpr(hist=h, target_fpr=0.02), abs=TOL)
    assert prec == pytest.approx(precision_at_k(hist=h, k=777), abs=TOL)
    assert cost == pytest.approx(expected_cost(hist=h, threshold=0.4, cost_fn=3, cost_fp=1), rel=1e-12)
    pd.testing.assert_frame_equal(
        r.tables["calibration"],
        Report.classification(df, amount="amount", max_points=60).tables["calibration"],
        rtol=1e-12,
    )


def test_cost_threshold_over_ranges_keeps_the_fewest_alerts_among_ties():
    # every threshold between the two positives costs the same: the highest one is kept
    df = pd.DataFrame({"is_fraud": [0, 1, 0, 0, 1, 0], "score": [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]})
    ddf = dd.from_pandas(df, npartitions=3)
    want = choose_threshold(df["is_fraud"], df["score"], method="cost", cost_fn=2.0, cost_fp=1.0)
    assert want == 0.9
    for budget in (None, 2):  # one range; five ranges of about 2 scores
        with dask.config.set({TASK: budget}):
            got = choose_threshold(ddf["is_fraud"], ddf["score"], method="cost", cost_fn=2.0, cost_fp=1.0)
        assert got == want, budget


def test_sketch_estimates_distinct_scores_and_cuts_even_ranges():
    from daskml_scale.evaluation._sketch import (
        estimate_distinct,
        merge_sketches,
        plan_from_sketch,
        sketch_arrays,
    )

    rng = np.random.default_rng(5)
    s = np.round(rng.random(400_000), 6)  # ~330k distinct of 1M possible values
    y = (rng.random(len(s)) < 0.1).astype(float)
    k = 4096
    parts = [sketch_arrays(y[i::4], s[i::4], k=k) for i in range(4)]
    merged = merge_sketches(*parts, k=k)
    true = len(np.unique(s))
    assert estimate_distinct(merged[2], k) == pytest.approx(true, rel=0.06)
    plan = plan_from_sketch(merged, "auto", None, per_task=20_000, per_pass=10**9, k=k)
    sizes = np.diff(np.searchsorted(np.unique(s), np.concatenate([[0], plan.boundaries, [2]])))
    assert plan.n_ranges == int(np.ceil(1.5 * estimate_distinct(merged[2], k) / 20_000))
    assert sizes.max() <= 20_000 and sizes.sum() == true
    assert merged[1][0] == len(s) and merged[1][1] == y.sum()  # exact totals


def test_compute_false_is_one_lazy_binning_pass():
    df, ddf = _continuous(5000, nparts=6)
    with dask.config.set({TASK: 500}):
        auc = roc_auc_score(ddf["is_fraud"], ddf["score"], compute=False)
    assert dask.is_dask_collection(auc)
    assert auc.compute() == pytest.approx(skm.roc_auc_score(df["is_fraud"], df["score"]), abs=TOL)
    with pytest.raises(ParameterError, match="passes must be a positive integer or 'auto'"):
        roc_auc_score(ddf["is_fraud"], ddf["score"], passes=0)
