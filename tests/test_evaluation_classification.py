"""Classification metrics: exact equality with scikit-learn on tied scores across many partitions."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.exceptions import UndefinedMetricWarning

from daskml_scale import compute
from daskml_scale.errors import ParameterError, SchemaError
from daskml_scale.evaluation import (
    average_precision_score,
    brier_score_loss,
    calibration_curve,
    choose_threshold,
    classification_metrics,
    expected_cost,
    log_loss,
    pr_curve,
    precision_at_k,
    recall_at_fpr,
    roc_auc_score,
    roc_curve,
    score_histogram,
)

TOL = 1e-9


def _data(n=6000, decimals=2, seed=0, weights=False, amount=False):
    rng = np.random.default_rng(seed)
    s = rng.beta(1, 4, n)
    if decimals is not None:
        s = np.round(s, decimals)
    y = (rng.random(n) < 0.05 + 0.6 * s).astype(np.int64)
    df = pd.DataFrame({"is_fraud": y, "score": s})
    if weights:
        w = rng.exponential(1.0, n)
        w[rng.random(n) < 0.05] = 0.0  # zero weights, as sklearn allows
        df["w"] = w
    if amount:
        df["amount"] = np.round(rng.lognormal(3, 1, n), 2)
    return df


def _piece(df):
    return df


def _partitioned(df, nparts, seed=0):
    """Dask frame with ``nparts`` partitions of uneven sizes, several of them empty."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, len(df), nparts - 1))
    cuts[: nparts // 4] = 0  # leading empty partitions
    edges = np.concatenate([[0], cuts, [len(df)]])
    pieces = [df.iloc[edges[i] : edges[i + 1]].reset_index(drop=True) for i in range(nparts)]
    ddf = dd.from_map(_piece, pieces)
    assert ddf.npartitions == nparts
    return ddf


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("decimals,nparts", [(1, 13), (2, 29), (3, 7), (None, 11)])
def test_auc_and_ap_equal_sklearn(weights, decimals, nparts):
    df = _data(decimals=decimals, seed=nparts, weights=weights)
    ddf = _partitioned(df, nparts, seed=nparts)
    w_d = ddf["w"] if weights else None
    w = df["w"].to_numpy() if weights else None
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy()
    assert roc_auc_score(ddf["is_fraud"], ddf["score"], sample_weight=w_d) == pytest.approx(
        skm.roc_auc_score(y, s, sample_weight=w), abs=TOL
    )
    assert average_precision_score(ddf["is_fraud"], ddf["score"], sample_weight=w_d) == pytest.approx(
        skm.average_precision_score(y, s, sample_weight=w), abs=TOL
    )


@pytest.mark.parametrize("score_ranges", [None, 1, 4, [0.05, 0.1, 0.3, 0.31]])
def test_classification_metrics_one_pass_equal_sklearn(score_ranges):
    df = _data(decimals=2, weights=True, amount=True)
    ddf = _partitioned(df, 17)
    m = classification_metrics(ddf, weight="w", amount="amount", threshold=0.3, score_ranges=score_ranges)
    y, s, w = df["is_fraud"].to_numpy(), df["score"].to_numpy(), df["w"].to_numpy()
    pred = s >= 0.3
    expected = {
        "roc_auc": skm.roc_auc_score(y, s, sample_weight=w),
        "pr_auc": skm.average_precision_score(y, s, sample_weight=w),
        "log_loss": skm.log_loss(y, s, sample_weight=w),
        "brier": skm.brier_score_loss(y, s, sample_weight=w),
        "precision": skm.precision_score(y, pred, sample_weight=w),
        "recall": skm.recall_score(y, pred, sample_weight=w),
        "f1": skm.f1_score(y, pred, sample_weight=w),
        "n_positive": float(np.sum(w * y)),
        "fraud_amount": float(np.sum(w * y * df["amount"])),
        "fraud_amount_caught": float(np.sum(w * y * pred * df["amount"])),
    }
    for key, v in expected.items():
        assert m[key] == pytest.approx(v, rel=1e-9, abs=TOL), key
    assert m["n"] == len(df)
    assert m["alerts"] == int(pred.sum())


def test_score_ranges_auto():
    from daskml_scale.evaluation import _classification, _ranges

    df = _data(n=8000, decimals=None, weights=True)
    ddf = _partitioned(df, 8)
    src = _classification._Source.from_frame(ddf, "is_fraud", "score", "w")
    with dask.config.set({"daskml_scale.evaluation.max_scores_per_task": 1000}):
        plan = _ranges.make_plan(src, "auto", None, compute=True, client=None, spec=_ranges.Spec())
        assert plan.distinct_estimate == len(np.unique(df["score"]))  # below the sketch size: exact
        assert plan.n_ranges >= 8  # continuous: 1.5 x 8000 / 1000 = 12 ranges
        tied = _classification._Source.from_frame(
            _partitioned(_data(n=8000, decimals=1), 8), "is_fraud", "score"
        )
        one = _ranges.make_plan(tied, "auto", None, compute=True, client=None, spec=_ranges.Spec())
        assert one.n_ranges == 1 and one.passes == 1  # 11 distinct scores: one range
        m = classification_metrics(ddf, weight="w")  # the default is "auto"
    y, s, w = df["is_fraud"], df["score"], df["w"]
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s, sample_weight=w), abs=TOL)
    with pytest.raises(ParameterError, match="score_ranges must be None, 'auto'"):
        classification_metrics(ddf, score_ranges="many")


@pytest.mark.parametrize("passes", [2, 3, 10])
def test_multi_pass_equals_single_pass(passes):
    df = _data(n=6000, decimals=None, weights=True, amount=True)
    ddf = _partitioned(df, 9)
    one = classification_metrics(ddf, weight="w", amount="amount", threshold=0.2)
    many = classification_metrics(
        ddf, weight="w", amount="amount", threshold=0.2, score_ranges=5, passes=passes
    )
    assert set(one) == set(many)
    for key, v in one.items():
        assert many[key] == pytest.approx(v, rel=1e-9, abs=TOL), key
    y, s = df["is_fraud"], df["score"]
    got = average_precision_score(ddf["is_fraud"], ddf["score"], score_ranges=[0.1, 0.2, 0.5], passes=passes)
    assert got == pytest.approx(skm.average_precision_score(y, s), abs=TOL)
    got = roc_auc_score(ddf["is_fraud"], ddf["score"], score_ranges=[0.1, 0.2, 0.5], passes=passes)
    assert got == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    with pytest.raises(ParameterError, match="give score_ranges > 1 or 'auto'"):
        classification_metrics(ddf, score_ranges=1, passes=2)
    auto = classification_metrics(ddf, weight="w", amount="amount", threshold=0.2, passes=passes)
    for key, v in one.items():  # passes alone: the default score_ranges="auto" gives >= passes ranges
        assert auto[key] == pytest.approx(v, rel=1e-9, abs=TOL), key
    with pytest.raises(ParameterError, match="needs compute=True"):
        roc_auc_score(ddf["is_fraud"], ddf["score"], score_ranges=3, passes=2, compute=False)
    with pytest.raises(ParameterError, match="positive integer"):
        classification_metrics(ddf, score_ranges=3, passes=0)
    bad = ddf.assign(score=ddf["score"].where(ddf["score"] < 0.5))
    with pytest.raises(SchemaError, match=rf"\({int((df['score'] >= 0.5).sum())} NaN, 0 infinite\)"):
        classification_metrics(bad, score_ranges=3, passes=2)


def test_unweighted_metrics_and_in_memory_inputs():
    df = _data(decimals=3, seed=5)
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy()
    m = classification_metrics(df)  # pandas: computed in process
    assert m["n_positive"] == int(y.sum()) and isinstance(m["n_positive"], int)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, s), abs=TOL)
    assert roc_auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    assert average_precision_score(list(y), list(s)) == pytest.approx(
        skm.average_precision_score(y, s), abs=TOL
    )
    assert log_loss(y, s) == pytest.approx(skm.log_loss(y, s), abs=TOL)
    assert brier_score_loss(df["is_fraud"], df["score"]) == pytest.approx(skm.brier_score_loss(y, s), abs=TOL)


def test_dask_arrays_one_partition_and_float32():
    df = _data(decimals=2, seed=3)
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy().astype(np.float32)
    assert roc_auc_score(da.from_array(y, chunks=700), da.from_array(s, chunks=700)) == pytest.approx(
        skm.roc_auc_score(y, s), abs=TOL
    )
    one = dd.from_pandas(df.assign(score=s), npartitions=1)
    assert average_precision_score(one["is_fraud"], one["score"]) == pytest.approx(
        skm.average_precision_score(y, s), abs=TOL
    )


def test_boolean_labels_and_all_tied():
    y = np.array([True, False, True, False])
    assert roc_auc_score(y, np.full(4, 0.3)) == 0.5
    assert average_precision_score(y, np.full(4, 0.3)) == pytest.approx(
        skm.average_precision_score(y, np.full(4, 0.3))
    )


def test_one_class_matches_sklearn_behaviour():
    y0, s = np.zeros(10, int), np.linspace(0, 1, 10)
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):
        assert np.isnan(roc_auc_score(y0, s))
    with pytest.warns(UserWarning, match="No positive class"):
        assert average_precision_score(y0, s) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(roc_auc_score(np.ones(10), s))
    assert average_precision_score(np.ones(10), s) == 1.0


def test_nan_scores_error_names_count():
    df = _data(n=500)
    df.loc[[3, 100, 400], "score"] = np.nan
    ddf = _partitioned(df, 5)
    with pytest.raises(SchemaError, match=r"3 non-finite value\(s\) \(3 NaN, 0 infinite\) out of 500 rows"):
        roc_auc_score(ddf["is_fraud"], ddf["score"])
    with pytest.raises(SchemaError, match=r"3 non-finite value\(s\) \(3 NaN, 0 infinite\) out of 500 rows"):
        classification_metrics(ddf)


def test_bad_inputs():
    df = _data(n=300)
    bad = df.assign(is_fraud=df["is_fraud"].replace({1: 2}))
    with pytest.raises(SchemaError, match=r"\d+ value\(s\) that are not 0/1"):
        classification_metrics(bad)
    with pytest.raises(SchemaError, match="negative, infinite or missing"):
        classification_metrics(df.assign(w=-1.0), weight="w")
    with pytest.raises(SchemaError, match=r"Column\(s\) \['label'\] not found"):
        classification_metrics(df, label="label")
    with pytest.raises(SchemaError, match="dtype"):
        classification_metrics(df.assign(score=df["score"].astype(str)))
    a = dd.from_pandas(df, npartitions=3)
    b = dd.from_pandas(df, npartitions=4)
    with pytest.raises(SchemaError, match="different numbers of partitions"):
        roc_auc_score(a["is_fraud"], b["score"])
    with pytest.raises(SchemaError, match="all be Dask collections or all be in memory"):
        roc_auc_score(a["is_fraud"], df["score"])
    with pytest.raises(SchemaError, match="different lengths"):
        roc_auc_score([0, 1, 1], [0.1, 0.2])
    with pytest.raises(SchemaError, match="probabilities in"):
        log_loss([0, 1], [-1.0, 2.0])
    with pytest.raises(ParameterError, match="threshold"):
        classification_metrics(df, threshold="high")
    with pytest.raises(ParameterError, match="strictly increasing"):
        classification_metrics(df, score_ranges=[0.5, 0.2])
    assert np.isnan(classification_metrics(df.assign(score=df["score"] * 3))["log_loss"])


def test_compute_false_gives_lazy_values_for_one_pass():
    df = _data(decimals=2)
    ddf = _partitioned(df, 9)
    auc = roc_auc_score(ddf["is_fraud"], ddf["score"], compute=False)
    ap = average_precision_score(ddf["is_fraud"], ddf["score"], compute=False)
    m = classification_metrics(ddf, compute=False)
    assert all(dask.is_dask_collection(x) for x in (auc, ap, m))
    auc_v, ap_v, m_v = compute(auc, ap, m)
    y, s = df["is_fraud"], df["score"]
    assert auc_v == pytest.approx(skm.roc_auc_score(y, s), abs=TOL) == pytest.approx(m_v["roc_auc"], abs=TOL)
    assert ap_v == pytest.approx(skm.average_precision_score(y, s), abs=TOL)


# ---------------------------------------------------------------------------------- operating points
def test_curves_match_sklearn():
    df = _data(n=2000, decimals=2)
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy()
    h = score_histogram(
        dd.from_pandas(df, npartitions=4)["is_fraud"], dd.from_pandas(df, npartitions=4)["score"]
    )
    assert len(h) == len(np.unique(s)) and h.n == len(df)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    rc = roc_curve(h)
    np.testing.assert_allclose(rc["fpr"], fpr, atol=TOL)
    np.testing.assert_allclose(rc["tpr"], tpr, atol=TOL)
    p, r, _ = skm.precision_recall_curve(y, s)
    pc = pr_curve(h)
    np.testing.assert_allclose(pc["precision"][::-1], p[:-1], atol=TOL)
    np.testing.assert_allclose(pc["recall"][::-1], r[:-1], atol=TOL)
    pt, pp = sk_calibration_curve(y, s, n_bins=10)
    cc = calibration_curve(h, n_bins=10)
    np.testing.assert_allclose(cc["prob_true"], pt, atol=TOL)
    np.testing.assert_allclose(cc["prob_pred"], pp, atol=TOL)
    thin = roc_curve(h, max_points=20)
    assert len(thin) <= 40 and thin["fpr"].iloc[0] == 0 and thin["tpr"].iloc[-1] == 1


def _brute_cost(y, s, a, t, cost_fn, cost_fp):
    alert = s >= t
    missed = (y == 1) & ~alert
    fn = a[missed].sum() if a is not None else missed.sum()
    return cost_fn * fn + cost_fp * ((y == 0) & alert).sum()


@pytest.mark.parametrize("use_amount", [False, True])
def test_choose_threshold_cost_is_brute_force_optimum(use_amount):
    df = _data(n=3000, decimals=2, amount=True)
    ddf = _partitioned(df, 6)
    y, s, a = df["is_fraud"].to_numpy(), df["score"].to_numpy(), df["amount"].to_numpy()
    amt_d, amt = (ddf["amount"], a) if use_amount else (None, None)
    t = choose_threshold(ddf["is_fraud"], ddf["score"], method="cost", cost_fn=3.0, cost_fp=1.0, amount=amt_d)
    candidates = np.concatenate([np.unique(s), [np.inf]])
    costs = np.array([_brute_cost(y, s, amt, c, 3.0, 1.0) for c in candidates])
    assert _brute_cost(y, s, amt, t, 3.0, 1.0) == pytest.approx(costs.min())
    got = expected_cost(ddf["is_fraud"], ddf["score"], threshold=t, cost_fn=3.0, cost_fp=1.0, amount=amt_d)
    assert got == pytest.approx(costs.min())
    for thr in (0.0, 0.15, 0.155, 2.0):
        assert expected_cost(y, s, threshold=thr, cost_fn=3, cost_fp=1, amount=amt) == pytest.approx(
            _brute_cost(y, s, amt, thr, 3, 1)
        )


def test_choose_threshold_budget_and_fpr():
    df = _data(n=3000, decimals=2)
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy()
    h = score_histogram(y, s)
    t = choose_threshold(hist=h, method="budget", budget=100)
    assert (s >= t).sum() <= 100
    lower = np.unique(s)[np.unique(s) < t]
    assert len(lower) == 0 or (s >= lower[-1]).sum() > 100
    assert choose_threshold(hist=h, method="budget", budget=0.05) == choose_threshold(
        hist=h, method="budget", budget=0.05 * len(s)
    )
    t = choose_threshold(y, s, method="fpr", target_fpr=0.02)
    fpr_at = ((s >= t) & (y == 0)).sum() / (y == 0).sum()
    assert fpr_at <= 0.02
    fpr, tpr, _ = skm.roc_curve(y, s)
    assert recall_at_fpr(hist=h, target_fpr=0.02) == pytest.approx(tpr[fpr <= 0.02].max(), abs=TOL)
    assert choose_threshold(hist=h, method="budget", budget=1e-9) == np.inf
    with pytest.raises(ParameterError, match="'method' parameter of choose_threshold must be one of"):
        choose_threshold(y, s, method="best")
    with pytest.raises(ParameterError, match="needs budget"):
        choose_threshold(y, s, method="budget")
    with pytest.raises(ParameterError, match="target_fpr"):
        choose_threshold(y, s, method="fpr", target_fpr=2)
    with pytest.raises(ParameterError, match="amount-weighted costs need amount"):
        choose_threshold(hist=h, method="cost", amount=np.ones(3))


def test_precision_at_k():
    df = _data(n=2000, decimals=None)  # continuous: no ties at the cut
    y, s = df["is_fraud"].to_numpy(), df["score"].to_numpy()
    top = np.argsort(-s)[:50]
    assert precision_at_k(y, s, k=50) == pytest.approx(y[top].mean(), abs=TOL)
    # ties at the cut enter fractionally: 2 of 4 tied rows are positives -> expected half
    assert precision_at_k([1, 0, 1, 0, 1], [0.9, 0.5, 0.5, 0.5, 0.5], k=3) == pytest.approx((1 + 2 * 0.5) / 3)
    assert precision_at_k([1, 0], [0.9, 0.1], k=10) == 0.5
    with pytest.raises(ParameterError, match="k must be a positive integer"):
        precision_at_k(y, s, k=0)


def test_distributed_path_matches_sklearn(client, spread):
    df = _data(n=10000, decimals=2, weights=True)
    ddf = _partitioned(df, 12)
    y, s, w = df["is_fraud"], df["score"], df["w"]
    with spread() as ts:
        m = classification_metrics(ddf, weight="w", client=client)
    ts.assert_spread(prefix="hist_from_frame")  # the per-partition histograms ran on both workers
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s, sample_weight=w), abs=TOL)
    m4 = classification_metrics(ddf, weight="w", score_ranges=4, client=client)
    assert m4["pr_auc"] == pytest.approx(m["pr_auc"], abs=TOL)
    assert m4["roc_auc"] == pytest.approx(m["roc_auc"], abs=TOL)
    bad = ddf.assign(score=ddf["score"].where(ddf["score"] < 0.5))
    n_nan = int((df["score"] >= 0.5).sum())
    with pytest.raises(SchemaError, match=rf"\({n_nan} NaN, 0 infinite\)"):
        classification_metrics(bad, client=client)


# ------------------------------------------------------------------- issue 11, defect 6: refused inputs
def _inf_case():
    df = _data(n=100, decimals=2, seed=11)
    df.loc[7, "score"] = np.inf  # one +inf score among 100 rows
    return df, _partitioned(df, 4, seed=11)


_EVERY_MODE = [
    ("roc_auc_score", {}),
    ("roc_auc_score", {"score_ranges": 3}),
    ("roc_auc_score", {"score_ranges": [0.1, 0.3], "passes": 2}),
    ("average_precision_score", {}),
    ("average_precision_score", {"score_ranges": "auto"}),
    ("average_precision_score", {"score_ranges": 3, "passes": 3}),
    ("log_loss", {}),
    ("brier_score_loss", {}),
    ("score_histogram", {}),
]


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("name,kw", _EVERY_MODE)
def test_infinite_scores_refused_in_every_function_and_mode(name, kw, lazy):
    import daskml_scale.evaluation as ev

    df, ddf = _inf_case()
    src = ddf if lazy else df
    with pytest.raises(ValueError, match="Input contains infinity"):  # the oracle refuses them too
        skm.roc_auc_score(df["is_fraud"], df["score"])
    with pytest.raises(SchemaError, match=r"y_score has 1 non-finite value\(s\) \(0 NaN, 1 infinite\)"):
        getattr(ev, name)(src["is_fraud"], src["score"], **kw)
    neg = df.assign(score=df["score"].replace(np.inf, -np.inf))
    with pytest.raises(SchemaError, match=r"1 non-finite value\(s\) \(0 NaN, 1 infinite\)"):
        getattr(ev, name)(neg["is_fraud"], neg["score"], **kw)


@pytest.mark.parametrize("kw", [{}, {"score_ranges": 3}, {"score_ranges": 3, "passes": 2}])
def test_infinite_scores_refused_by_classification_metrics_and_report(kw):
    from daskml_scale.evaluation import Report, choose_threshold

    df, ddf = _inf_case()
    with pytest.raises(SchemaError, match=r"1 non-finite value\(s\)"):
        classification_metrics(ddf, **kw)
    with pytest.raises(SchemaError, match=r"1 non-finite value\(s\)"):
        classification_metrics(df, **kw)
    with pytest.raises(SchemaError, match=r"1 non-finite value\(s\)"):
        Report.classification(ddf)
    with pytest.raises(SchemaError, match=r"1 non-finite value\(s\)"):
        choose_threshold(df["is_fraud"], df["score"], method="budget", budget=10)  # in memory too


def _log_loss_oracle(y, p, eps, w=None):
    """scikit-learn's formula in plain float64 numpy: clip to [eps, 1 - eps], mean cross-entropy."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return float(np.average(loss, weights=w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_loss_clips_at_the_input_dtype_eps_as_sklearn(dtype):
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.0, 0.2, 1.0, 1.0, 0.7], dtype=dtype)  # p=0 on a positive, p=1 on a negative
    eps = np.finfo(dtype).eps
    want = _log_loss_oracle(y, p, eps)
    sk = skm.log_loss(y, p)
    # scikit-learn computes float32 inputs in float32 arithmetic (~1e-7 relative); we compute in
    # float64 with the same clipping, so we equal its formula to 1e-12 and its float32 result to 1e-6
    assert sk == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
    s = pd.Series(p)
    ddf = dd.from_pandas(pd.DataFrame({"is_fraud": y, "score": p}), npartitions=2)
    for got in (
        log_loss(y, p),
        log_loss(pd.Series(y), s),
        log_loss(ddf["is_fraud"], ddf["score"]),
        log_loss(da.from_array(y, chunks=2), da.from_array(p, chunks=2)),
        classification_metrics(ddf)["log_loss"],
        classification_metrics(ddf, score_ranges=[0.5], passes=2)["log_loss"],
        score_histogram(y, p).metrics()["log_loss"],
    ):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert got == pytest.approx(sk, rel=1e-6 if dtype == np.float32 else 1e-12)


def test_log_loss_of_mixed_precision_partitions_uses_the_common_dtype():
    """A float32 and a float64 partition concatenate to float64 (as numpy): float64's eps."""
    a = pd.DataFrame({"is_fraud": [1, 0], "score": np.array([0.0, 0.2], dtype=np.float32)})
    b = pd.DataFrame({"is_fraud": [0, 1], "score": np.array([0.1, 0.9], dtype=np.float64)})
    ddf = dd.from_map(_piece, [a, b])
    y = np.array([1, 0, 0, 1])
    p = np.concatenate([a["score"].to_numpy(), b["score"].to_numpy()])
    assert p.dtype == np.float64
    assert log_loss(ddf["is_fraud"], ddf["score"]) == pytest.approx(skm.log_loss(y, p), rel=1e-12)


def test_all_zero_sample_weights_raise_as_sklearn():
    from daskml_scale.evaluation import Report

    df = _data(n=200, decimals=2, seed=4).assign(w=0.0)
    y, s, w = df["is_fraud"], df["score"], df["w"]
    ddf = _partitioned(df, 5)
    for sk_metric in (skm.roc_auc_score, skm.average_precision_score, skm.log_loss, skm.brier_score_loss):
        with pytest.raises(ValueError, match="at least one non-zero"):
            sk_metric(y, s, sample_weight=w)
    with pytest.raises(ValueError, match="at least one non-zero"):
        skm.precision_score(y, s >= 0.5, sample_weight=w)
    with pytest.raises(ValueError, match="at least one non-zero"):
        skm.roc_curve(y, s, sample_weight=w)
    msg = r"sample_weight is 0 on all 200 rows: at least one weight must be non-zero"
    for fn in (roc_auc_score, average_precision_score, log_loss, brier_score_loss, score_histogram):
        for src in (df, ddf):
            with pytest.raises(SchemaError, match=msg):
                fn(src["is_fraud"], src["score"], sample_weight=src["w"])
    for kw in ({}, {"score_ranges": 3}, {"score_ranges": 3, "passes": 2}):
        with pytest.raises(SchemaError, match=msg):
            classification_metrics(ddf, weight="w", **kw)
    with pytest.raises(SchemaError, match=msg):
        roc_auc_score(ddf["is_fraud"], ddf["score"], sample_weight=ddf["w"], score_ranges=3, passes=2)
    with pytest.raises(SchemaError, match=msg):
        Report.classification(ddf, weight="w")
    with pytest.raises(SchemaError, match=msg):
        choose_threshold(y, s, sample_weight=w, method="budget", budget=5)
    # one non-zero weight is enough, as in scikit-learn
    w1 = w.copy()
    w1.iloc[[0, 1]] = 1.0
    assert log_loss(y, s, sample_weight=w1) == pytest.approx(skm.log_loss(y, s, sample_weight=w1), abs=TOL)


def test_distributed_refusals_arrive_from_the_workers(client, spread):
    """Non-finite scores and all-zero weights are refused in every mode on the cluster (the errors
    are raised in worker tasks and pickled back)."""
    df, ddf = _inf_case()
    for kw in ({}, {"score_ranges": 3}, {"score_ranges": 3, "passes": 2}):
        with (
            spread() as ts,
            pytest.raises(SchemaError, match=r"1 non-finite value\(s\) \(0 NaN, 1 infinite\)"),
        ):
            roc_auc_score(ddf["is_fraud"], ddf["score"], client=client, **kw)
        ts.assert_spread(prefix="sketch_")  # refused by the sizing pass, on the workers
    zero = _partitioned(_data(n=400, decimals=2, seed=2).assign(w=0.0), 6)
    with pytest.raises(SchemaError, match="sample_weight is 0 on all 400 rows") as err:
        classification_metrics(zero, weight="w", score_ranges=2, passes=2, client=client)
    assert err.value.column == "weight"
    p = np.array([0.0, 0.2, 0.9, 0.4], dtype=np.float32)
    lazy = dd.from_pandas(pd.DataFrame({"is_fraud": [1, 0, 1, 0], "score": p}), npartitions=2)
    assert log_loss(lazy["is_fraud"], lazy["score"], client=client) == pytest.approx(
        _log_loss_oracle(np.array([1, 0, 1, 0]), p, np.finfo(np.float32).eps), rel=1e-12
    )
