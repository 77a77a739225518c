"""Fraud classifiers: quality against raw columns, oracles against xgboost / scikit-learn, bad inputs.

Why not ``sklearn.utils.estimator_checks.parametrize_with_checks``: these estimators take canonical
transaction tables (``transaction_id, timestamp, card_id, ..., is_fraud``), not an ``X`` matrix and a
``y`` vector, so scikit-learn's generic checks (which feed random numeric arrays) cannot apply. The
contract pieces that do apply (get_params/set_params/clone, parameters checked in fit, learned state
ending in ``_``, NotFittedError before fit) are tested here directly.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.base import clone
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import average_precision_score as sk_average_precision

from daskml_scale.data import make_transactions
from daskml_scale.errors import NotFittedError, ParameterError, SchemaError
from daskml_scale.evaluation import average_precision_score
from daskml_scale.fraud import SGDFraudClassifier, XGBoostFraudClassifier
from daskml_scale.fraud._base import one_hot_matrix

SPLIT = pd.Timestamp("2025-01-31")  # 30 days of training, then 10 days to score
FAST = {"learning_rate": 0.3, "n_estimators": 60, "early_stopping_rounds": 10, "max_depth": 4, "n_jobs": 1}


@pytest.fixture(scope="module")
def data():
    """60k transactions over 40 days: (train pandas, test pandas)."""
    with dask.config.set(scheduler="sync"):
        tx = make_transactions(60_000, days=40, npartitions=4, seed=0).compute()
    return tx[tx.timestamp < SPLIT].reset_index(drop=True), tx[tx.timestamp >= SPLIT].reset_index(drop=True)


@pytest.fixture(scope="module")
def small():
    """A small labelled frame for quick checks (pandas), with enough fraud for both splits."""
    with dask.config.set(scheduler="sync"):
        tx = make_transactions(12_000, days=10, npartitions=3, fraud_rate=0.03, seed=3).compute()
    return tx.reset_index(drop=True)


def _pr_auc(model, train, test):
    p = model.predict_proba(test, history=train)[:, 1]
    return float(average_precision_score(test["is_fraud"].to_numpy(), p))


# ------------------------------------------------------------------------------------ must show
@pytest.fixture(scope="module")
def raw_xgb_pr_auc(data):
    train, test = data
    with dask.config.set(scheduler="sync"):
        model = XGBoostFraudClassifier(features=None, **FAST).fit(train)
        return _pr_auc(model, train, test)


def test_xgboost_pipeline_far_above_raw_columns(data, raw_xgb_pr_auc):
    train, test = data
    with dask.config.set(scheduler="sync"):
        model = XGBoostFraudClassifier(**FAST).fit(train)
        pr_auc = _pr_auc(model, train, test)
    # raw columns: amount, category, channel overlap between the classes; behaviour separates them
    assert raw_xgb_pr_auc < 0.15
    assert pr_auc > 0.8
    assert pr_auc > 5 * raw_xgb_pr_auc
    assert model.validation_metrics_["pr_auc"] > 0.6
    assert model.best_iteration_ < model.n_estimators  # early stopping kept the best iteration
    assert model.booster_.num_boosted_rounds() == model.best_iteration_ + 1


def test_sgd_pipeline_above_raw_xgboost(data, raw_xgb_pr_auc):
    train, test = data
    with dask.config.set(scheduler="sync"):
        model = SGDFraudClassifier(epochs=3).fit(train)
        pr_auc = _pr_auc(model, train, test)
    assert pr_auc > 3 * raw_xgb_pr_auc
    assert pr_auc > 0.3


def test_our_pr_auc_equals_sklearn_oracle(data):
    train, test = data
    with dask.config.set(scheduler="sync"):
        model = XGBoostFraudClassifier(features=None, n_estimators=8, n_jobs=1).fit(train)
    p = model.predict_proba(test)[:, 1]
    assert average_precision_score(test["is_fraud"].to_numpy(), p) == pytest.approx(
        sk_average_precision(test["is_fraud"], p), rel=1e-9
    )


# ------------------------------------------------------------------------------------ xgboost
def test_xgboost_in_memory_equals_native_xgboost(small):
    """features=None, valid_size=0: our model is xgboost.train on the same matrix and parameters."""
    model = XGBoostFraudClassifier(features=None, valid_size=0, n_estimators=15, max_depth=3, n_jobs=1).fit(
        small
    )
    X = model.model_input(small)
    assert list(X.columns) == ["amount", "merchant_category", "channel"]
    # categoricals reach xgboost as their codes in the categories learned in fit, typed "c"
    # float32, what xgboost stores: the native model below trains on the float64 matrix and agrees
    assert (X.dtypes == np.float32).all()
    assert model._feature_types() == ["q", "c", "c"]
    assert set(X["channel"].dropna().unique()) <= set(range(len(model.categories_["channel"])))
    n_pos = int(small.is_fraud.sum())
    assert model.scale_pos_weight_ == pytest.approx((len(small) - n_pos) / n_pos)
    native = xgb.train(
        {**model._params()},
        xgb.QuantileDMatrix(
            X.astype("float64"),
            small.is_fraud,
            enable_categorical=True,
            max_bin=256,
            feature_types=model._feature_types(),
        ),
        num_boost_round=15,
    )
    # issue 13: predict_proba is now calibrated by default (prior correction of scale_pos_weight), so
    # the booster's own probabilities are those of calibrate=False; the raw margin stays reachable
    np.testing.assert_allclose(
        model.decision_function(small), native.inplace_predict(X, predict_type="margin"), rtol=1e-6, atol=1e-6
    )
    margin = native.inplace_predict(X, predict_type="margin")
    calibrated = 1.0 / (1.0 + np.exp(-(margin - np.log(model.scale_pos_weight_))))
    np.testing.assert_allclose(model.predict_proba(small)[:, 1], calibrated, rtol=1e-5, atol=1e-7)
    raw = clone(model).set_params(calibrate=False)
    raw.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    np.testing.assert_allclose(
        raw.predict_proba(small)[:, 1], native.inplace_predict(X), rtol=1e-6, atol=1e-7
    )
    # to_local: a plain XGBClassifier with the same booster, i.e. the raw (uncalibrated) probabilities
    np.testing.assert_allclose(
        model.to_local().predict_proba(X)[:, 1], raw.predict_proba(small)[:, 1], rtol=1e-6
    )
    assert ((model.predict(small) == 1) == (model.predict_proba(small)[:, 1] >= 0.5)).all()


def test_xgboost_categories_fixed_at_fit(small):
    model = XGBoostFraudClassifier(features=None, valid_size=0, n_estimators=5, n_jobs=1).fit(small)
    assert model.categories_["channel"] == ["online", "pos"]
    # a batch with a single channel, and an unseen category: codes still agree with training
    batch = small.head(200).copy()
    batch["channel"] = "pos"
    batch.loc[batch.index[:3], "merchant_category"] = "never-seen"
    X = model.model_input(batch)
    assert (X["channel"] == model.categories_["channel"].index("pos")).all()  # the code learned in fit
    assert X["merchant_category"].isna().sum() == 3
    p = model.predict_proba(batch)[:, 1]
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_feature_contributions_sum_to_margin(small):
    model = XGBoostFraudClassifier(features=None, valid_size=0, n_estimators=10, n_jobs=1).fit(small)
    contrib = model.feature_contributions(small.head(500))
    assert list(contrib.columns) == ["transaction_id", *model.model_columns_, "bias"]
    margin = model.booster_.predict(
        xgb.DMatrix(
            model.model_input(small.head(500)), enable_categorical=True, feature_types=model._feature_types()
        ),
        output_margin=True,
    )
    np.testing.assert_allclose(
        contrib.drop(columns="transaction_id").sum(axis=1), margin, rtol=1e-4, atol=1e-4
    )


def test_xgboost_distributed_parity_with_in_memory_booster(client, spread, small):
    """xgboost.dask predictions equal the same booster's in-memory predictions (rtol 1e-6)."""
    ddf = dd.from_pandas(small, npartitions=3)
    with spread() as ts:
        model = XGBoostFraudClassifier(features=None, n_estimators=10, valid_size=0.3).fit(ddf, client=client)
    ts.assert_spread(prefix="fn-")  # xgboost.dask's per-worker tasks (DMatrix, training) ran on both
    assert 0 < model.n_valid_ < len(small)
    X_local = model.model_input(small)
    local = model.booster_.inplace_predict(X_local)
    X_dask = dd.from_pandas(X_local, npartitions=3, sort=False)
    via_dask = xgb.dask.predict(client, model.booster_, X_dask).compute()
    np.testing.assert_allclose(via_dask, local, rtol=1e-6)
    # and our lazy per-partition scoring gives the same numbers (issue 13: calibrated by default, so
    # Platt's a, b, fitted on the cluster over the validation part, on the booster's margin minus the
    # prior offset of scale_pos_weight)
    ours = model.predict_proba(ddf).compute().set_index("transaction_id").loc[small.transaction_id, "score"]
    margin = model.booster_.inplace_predict(X_local, predict_type="margin")
    cal = model.calibration_
    assert cal["method"] == "platt" and cal["n_rows"] == model.n_valid_
    z = cal["a"] * (margin - model.prior_offset_) + cal["b"]
    np.testing.assert_allclose(ours.to_numpy(), 1 / (1 + np.exp(-z)), rtol=1e-5)
    # the validation fraud rate is matched where Platt was fitted (its intercept equation)
    valid = (small.timestamp >= pd.Timestamp(model.valid_from_)).to_numpy()
    assert ours.to_numpy()[valid].mean() == pytest.approx(small.is_fraud[valid].mean(), rel=1e-4)
    # SHAP values per partition, lazily
    contrib = model.feature_contributions(ddf)
    assert contrib.npartitions == 3
    assert len(contrib.compute()) == len(small)


def test_xgboost_with_features_distributed(client, spread, small):
    ddf = dd.from_pandas(small, npartitions=2)
    with spread() as ts:
        model = XGBoostFraudClassifier(n_estimators=10).fit(ddf)
    ts.assert_spread(prefix="apply_stage")  # behaviour features per shuffled partition, both workers
    ts.assert_spread(prefix="fn-")  # and xgboost trained on both
    assert "card_txn_count_1h" in model.model_columns_
    out = model.predict_proba(ddf).compute()
    assert sorted(out.transaction_id) == sorted(small.transaction_id)
    assert out.score.between(0, 1).all()
    assert set(model.validation_metrics_) >= {"pr_auc", "roc_auc", "n", "n_positive"}


def test_xgboost_dask_input_needs_a_client(small):
    with pytest.raises(ParameterError, match="distributed Client"):
        XGBoostFraudClassifier(features=None).fit(dd.from_pandas(small, npartitions=2))


@pytest.mark.gpu
def test_xgboost_cuda_same_quality_as_cpu(client, small):
    ddf = dd.from_pandas(small, npartitions=2)
    cpu = XGBoostFraudClassifier(features=None, n_estimators=20, device="cpu").fit(ddf)
    gpu = XGBoostFraudClassifier(features=None, n_estimators=20, device="cuda").fit(ddf)
    assert gpu.booster_ is not None
    assert abs(cpu.validation_metrics_["pr_auc"] - gpu.validation_metrics_["pr_auc"]) < 0.05


# ------------------------------------------------------------------------------------ SGD
def _scaled_oracle(frame, model):
    X = one_hot_matrix(frame, model.numeric_columns_, model.categories_)
    mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    std = np.where(std > 0, std, 1.0)
    return np.nan_to_num((X - mean) / std), mean, std


def test_sgd_sequential_equals_sklearn_partial_fit(small):
    """One partition, no validation: our SGD is scikit-learn's partial_fit on the standardised matrix."""
    frame = small.assign(amount=small.amount.where(small.index % 97 != 0))  # NaN amounts -> the mean
    model = SGDFraudClassifier(features=None, valid_size=0, epochs=2).fit(frame)
    X, mean, std = _scaled_oracle(frame, model)
    np.testing.assert_allclose(model.mean_, mean, rtol=1e-10)
    np.testing.assert_allclose(model.scale_, std, rtol=1e-10)
    n, pos = len(frame), int(frame.is_fraud.sum())
    assert model.class_weight_ == pytest.approx({0: n / (2 * (n - pos)), 1: n / (2 * pos)})
    oracle = SGDClassifier(
        loss="log_loss",
        random_state=0,
        class_weight=model.class_weight_,
        learning_rate="invscaling",
        eta0=0.05,
    )
    for _ in range(2):
        oracle.partial_fit(X, frame.is_fraud.to_numpy(), classes=[0, 1])
    np.testing.assert_allclose(model.coef_, oracle.coef_, rtol=1e-9)
    np.testing.assert_allclose(model.intercept_, oracle.intercept_, rtol=1e-9)
    # issue 13: predict_proba is calibrated by default (the balanced class weights' prior taken out of
    # the log-odds); the raw margin is scikit-learn's decision_function
    np.testing.assert_allclose(model.decision_function(frame), oracle.decision_function(X), rtol=1e-9)
    w = model.class_weight_[1] / model.class_weight_[0]
    calibrated = 1.0 / (1.0 + np.exp(-(oracle.decision_function(X) - np.log(w))))
    np.testing.assert_allclose(model.predict_proba(frame)[:, 1], calibrated, rtol=1e-9)
    raw = clone(model).set_params(calibrate=False)
    raw.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    np.testing.assert_allclose(raw.predict_proba(frame)[:, 1], oracle.predict_proba(X)[:, 1], rtol=1e-9)
    assert model.n_rows_seen_ == 2 * n


def test_sgd_scaler_merges_partitions_exactly(small):
    ddf = dd.from_pandas(small, npartitions=5)
    model = SGDFraudClassifier(features=None, valid_size=0, epochs=1).fit(ddf)
    _, mean, std = _scaled_oracle(small, model)
    np.testing.assert_allclose(model.mean_, mean, rtol=1e-9)
    np.testing.assert_allclose(model.scale_, std, rtol=1e-9)
    assert model.columns_[:1] == ["amount"] and "channel=pos" in model.columns_


def test_sgd_average_with_one_group_equals_sequential(small):
    seq = SGDFraudClassifier(features=None, valid_size=0, epochs=2).fit(small)
    avg = SGDFraudClassifier(features=None, valid_size=0, epochs=2, strategy="average", n_groups=1).fit(small)
    np.testing.assert_allclose(avg.coef_, seq.coef_, rtol=1e-12)


def test_sgd_partial_fit_continues(small):
    first = small[small.timestamp < small.timestamp.quantile(0.8)]
    new_day = small[small.timestamp >= small.timestamp.quantile(0.8)]
    model = SGDFraudClassifier(features=None, valid_size=0, epochs=1).fit(first)
    coef, intercept, t, seen = model.coef_.copy(), model.intercept_.copy(), model.t_, model.n_rows_seen_
    model.partial_fit(new_day)
    assert model.n_rows_seen_ == seen + len(new_day)
    assert model.t_ == pytest.approx(t + len(new_day))
    assert not np.allclose(model.coef_, coef)
    # equals continuing scikit-learn's own partial_fit from the same weights on the same rows
    X_new = np.nan_to_num(
        (one_hot_matrix(new_day, model.numeric_columns_, model.categories_) - model.mean_) / model.scale_
    )
    oracle = SGDClassifier(
        loss="log_loss",
        random_state=0,
        class_weight=model.class_weight_,
        learning_rate="invscaling",
        eta0=0.05,
    )
    oracle.coef_, oracle.intercept_, oracle.t_, oracle.classes_ = coef, intercept, t, np.array([0, 1])
    oracle.partial_fit(X_new, new_day.is_fraud.to_numpy())
    np.testing.assert_allclose(model.coef_, oracle.coef_, rtol=1e-9)


def test_sgd_distributed_strategies(client, spread, small):
    """Both strategies learn from the raw columns on the cluster: validation PR-AUC several times the
    fraud rate (measured 0.35-0.36 at a rate of 0.034); averaging ran its groups on both workers."""
    ddf = dd.from_pandas(small, npartitions=4)
    for strategy in ("sequential", "average"):
        with spread() as ts:
            model = SGDFraudClassifier(strategy=strategy, epochs=2, features=None).fit(ddf, client=client)
        assert model.n_rows_seen_ == 2 * model.n_train_
        metrics = model.validation_metrics_
        assert metrics["pr_auc"] > 5 * metrics["n_positive"] / metrics["n"]
        if strategy == "average":
            assert model.n_groups_ == 2
            ts.assert_spread(prefix="_local_epoch")
    model.partial_fit(ddf.partitions[:1], client=client)
    assert model.n_epochs_ == 3


# ------------------------------------------------------------------------------------ contract & edges
def test_params_contract():
    model = XGBoostFraudClassifier(max_depth=4)
    assert clone(model).get_params()["max_depth"] == 4
    model.set_params(max_depth=3, features=None)
    assert model.max_depth == 3 and model.features is None
    with pytest.raises(NotFittedError, match="call fit first"):
        model.predict_proba(pd.DataFrame({"x": [1]}))
    with pytest.raises(NotFittedError, match="call fit first"):
        SGDFraudClassifier().predict_proba(pd.DataFrame({"x": [1]}))


def test_empty_partitions_and_one_partition(client, small):
    # a filter that empties most partitions
    ddf = dd.from_pandas(small, npartitions=6)
    ddf = ddf[ddf.transaction_id < 5000]
    model = XGBoostFraudClassifier(features=None, n_estimators=10).fit(ddf)
    out = model.predict_proba(ddf).compute()
    assert len(out) == (small.transaction_id < 5000).sum()
    sgd = SGDFraudClassifier(features=None, strategy="average", epochs=1).fit(ddf)
    # empty partitions change nothing: the same model as on the non-empty partitions alone
    lengths = ddf.map_partitions(len).compute().tolist()
    nonempty = [i for i, n in enumerate(lengths) if n > 0]
    assert len(nonempty) < ddf.npartitions
    direct = SGDFraudClassifier(features=None, strategy="average", epochs=1).fit(ddf.partitions[nonempty])
    np.testing.assert_allclose(sgd.coef_, direct.coef_, rtol=0, atol=1e-12)
    assert sgd.n_groups_ == direct.n_groups_ >= 1
    assert all(lengths[i] > 0 for g in sgd.partition_groups_ for i in g)


def test_skewed_card_and_nan_features(small):
    frame = small.copy()
    frame.loc[frame.index[::3], "card_id"] = 7  # one card with a third of the rows
    frame.loc[frame.index[::11], "merchant_category"] = None
    model = XGBoostFraudClassifier(n_estimators=10, n_jobs=1).fit(frame)
    p = model.predict_proba(frame)[:, 1]
    assert len(p) == len(frame) and np.isfinite(p).all()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.drop(columns="card_id"), "'card_id' is missing"),
        (lambda f: f.drop(columns="is_fraud"), "'is_fraud' is missing"),
        (lambda f: f.assign(amount=f.amount.astype(str)), "'amount' must be numeric"),
        (lambda f: f.assign(is_fraud=f.is_fraud.where(f.index > 5, 2)), "6 rows are not"),
        (lambda f: f.assign(is_fraud=0), "single class"),
        (lambda f: f.head(0), "0 rows"),
    ],
)
def test_bad_data(small, change, match):
    with pytest.raises(SchemaError, match=match):
        XGBoostFraudClassifier(features=None).fit(change(small))


@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (XGBoostFraudClassifier, {"device": "tpu"}, "'device' parameter"),
        (XGBoostFraudClassifier, {"n_estimators": 0}, "'n_estimators' parameter"),
        (XGBoostFraudClassifier, {"scale_pos_weight": -1}, "'scale_pos_weight' parameter"),
        (XGBoostFraudClassifier, {"valid_from": "2030-01-01"}, "must fall inside"),
        (XGBoostFraudClassifier, {"valid_from": "yesterday-ish"}, "'valid_from' parameter"),
        (XGBoostFraudClassifier, {"valid_size": 1.5}, "'valid_size' parameter"),
        (XGBoostFraudClassifier, {"features": "bogus"}, "'features' parameter"),
        (SGDFraudClassifier, {"strategy": "parallel"}, "'strategy' parameter"),
        (SGDFraudClassifier, {"epochs": 0}, "'epochs' parameter"),
        (SGDFraudClassifier, {"threshold": -0.1}, "'threshold' parameter"),
    ],
)
def test_bad_params(small, cls, params, match):
    with pytest.raises(ParameterError, match=match):
        cls(features=None, **params).fit(small) if "features" not in params else cls(**params).fit(small)


def test_validation_without_fraud_is_refused(small):
    last = small.timestamp.max() - pd.Timedelta("1h")
    frame = small[~((small.timestamp >= last) & (small.is_fraud == 1))]
    with pytest.raises(SchemaError, match="validation part .* has 0 fraud rows"):
        XGBoostFraudClassifier(features=None, valid_from=last).fit(frame)


def test_average_strategy_advances_the_step_counter_like_sequential():
    """Parameter mixing must advance SGD's step counter by every row seen across the groups: with the
    counter of one group only, the learning rate stays sqrt(groups) times higher and quality drops."""
    data = make_transactions(12_000, npartitions=4, days=20, seed=11)
    seq = SGDFraudClassifier(features=None, strategy="sequential", epochs=2, valid_size=0).fit(data)
    avg = SGDFraudClassifier(features=None, strategy="average", epochs=2, valid_size=0, n_groups=2).fit(data)
    assert avg.n_rows_seen_ == seq.n_rows_seen_ == 2 * 12_000
    assert avg.t_ == seq.t_ == 1.0 + 2 * 12_000


def test_time_ordered_partitions_validation_on_one_worker(client, spread, small):
    """Daily files give time-ordered partitions: the validation days (the latest) then sit on one worker
    while training rows sit on both. xgboost must not need validation rows on every worker."""
    ordered = small.sort_values("timestamp").reset_index(drop=True)
    ddf = dd.from_pandas(ordered, npartitions=8, sort=False)
    workers = sorted(client.scheduler_info()["workers"])
    parts = []
    for i in range(ddf.npartitions):  # pin: early partitions on both workers, the last two on the first
        w = workers[0] if i >= 6 else workers[i % 2]
        parts.append(client.persist(ddf.partitions[i], workers=[w]))
    pinned = dd.concat(parts)
    with spread() as ts:
        model = XGBoostFraudClassifier(features=None, n_estimators=20, valid_size=0.2).fit(pinned)
    ts.assert_spread(prefix="fn-")  # trained on both workers
    assert model.booster_.num_boosted_rounds() > 0
    assert len(model.evals_result_["valid"]["aucpr"]) > 0  # early stopping saw the validation days
    assert model.validation_metrics_["n"] > 0


# ------------------------------------------------------------------------------------ issue 11
def _late_category(frame, cut):
    """``frame`` with a merchant category and a channel that occur only at or after ``cut``."""
    out = frame.copy()
    late = out.index[(out.timestamp >= cut).to_numpy()][::7]
    out.loc[late, "merchant_category"] = "late_only"
    out.loc[late[::2], "channel"] = "atm"
    return out


@pytest.mark.parametrize("cls", [XGBoostFraudClassifier, SGDFraudClassifier])
def test_fit_learns_only_from_the_training_rows(small, cls):
    """Issue 11, defect 2: categories, frequency encodings, scaler statistics and class counts are
    learned on the rows before the early-stopping cut, never on the validation days."""
    cut = pd.Timestamp("2025-01-09")
    frame = _late_category(small, cut)
    train = frame[frame.timestamp < cut]
    params = {"n_estimators": 5, "n_jobs": 1} if cls is XGBoostFraudClassifier else {"epochs": 1}
    model = cls(valid_from=cut, **params).fit(frame)
    assert model.n_train_ == len(train) and model.n_valid_ == len(frame) - len(train)
    # categories: those of the training rows; the validation-only values are unknown to the model
    assert model.categories_ == {
        "merchant_category": sorted(train.merchant_category.dropna().unique()),
        "channel": sorted(train.channel.dropna().unique()),
    }
    assert "late_only" not in model.categories_["merchant_category"]
    # frequency encodings: pandas' value_counts of the training rows
    for col in ("merchant_category", "channel"):
        learned = {v: f for v, f in model.features_.frequencies_[col]}
        expected = train[col].value_counts(normalize=True, dropna=False)
        assert learned.keys() == set(expected.index)
        for v, f in expected.items():
            assert learned[v] == pytest.approx(f, rel=1e-12)
    n_pos = int(train.is_fraud.sum())
    if cls is XGBoostFraudClassifier:
        assert model.scale_pos_weight_ == pytest.approx((len(train) - n_pos) / n_pos, rel=1e-12)
        X = model.model_input(frame[frame.timestamp >= cut])
        late = frame.loc[frame.timestamp >= cut, "merchant_category"].eq("late_only").to_numpy()
        assert late.sum() > 50 and np.isnan(X["merchant_category"].to_numpy()[late]).all()  # no code
        assert (X["merchant_category_freq"].to_numpy()[late] == 0.0).all()  # unseen in training
    else:
        n = len(train)
        assert model.class_weight_ == pytest.approx({0: n / (2 * (n - n_pos)), 1: n / (2 * n_pos)})
        featurized = model.features_.transform(dd.from_pandas(frame, npartitions=1)).compute()
        featurized = featurized[featurized.timestamp < cut]
        _, mean, std = _scaled_oracle(featurized, model)
        np.testing.assert_allclose(model.mean_, mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(model.scale_, std, rtol=1e-9)


def _group_oracle(model, parts, epochs):
    """Parameter mixing computed with scikit-learn directly: per epoch, one ``partial_fit`` per
    partition (one partition per group) from the same weights, then the row-weighted mean."""
    params = {
        "loss": "log_loss",
        "alpha": model.alpha,
        "learning_rate": model.learning_rate,
        "eta0": model.eta0,
        "power_t": model.power_t,
        "class_weight": model.class_weight_,
        "random_state": model.random_state,
    }
    mats = [
        np.nan_to_num(
            (one_hot_matrix(p, model.numeric_columns_, model.categories_) - model.mean_) / model.scale_
        )
        for p in parts
    ]
    coef = intercept = None
    t = 1.0
    for _ in range(epochs):
        fits = []
        for X, p in zip(mats, parts):
            est = SGDClassifier(**params)
            if coef is not None:
                est.coef_, est.intercept_, est.t_ = coef.copy(), intercept.copy(), t
                est.classes_ = np.array([0, 1])
            est.partial_fit(X, p.is_fraud.to_numpy(), classes=np.array([0, 1]))
            fits.append((est.coef_, est.intercept_, len(p)))
        rows = sum(n for _, _, n in fits)
        coef = sum(n * c for c, _, n in fits) / rows
        intercept = sum(n * i for _, i, n in fits) / rows
        t += rows
    return coef, intercept, t


def test_sgd_average_is_the_row_weighted_mean_of_group_partial_fits(small):
    """Three partitions of unequal size, three groups: each epoch is scikit-learn's partial_fit on
    each partition from the same weights, averaged by rows (keeping one group, or an unweighted
    mean, fails)."""
    sizes = [2_000, 6_500, len(small) - 8_500]
    bounds = np.cumsum([0, *sizes])
    parts = [small.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])
    model = SGDFraudClassifier(features=None, valid_size=0, epochs=2, strategy="average", n_groups=3).fit(ddf)
    assert model.n_groups_ == 3
    assert sorted(i for g in model.partition_groups_ for i in g) == [0, 1, 2]
    coef, intercept, t = _group_oracle(model, parts, epochs=2)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-12, atol=1e-14)
    assert model.t_ == t == 1.0 + 2 * len(small)
    # a single group is not the mean (the averaging step matters on this data)
    assert np.abs(model.coef_ - _group_oracle(model, parts[:1], epochs=2)[0]).max() > 1e-3


def _pinned(client, ddf, placement):
    """``ddf`` with partition ``i`` persisted on worker ``placement[i]``."""
    parts = [client.persist(ddf.partitions[i], workers=[w]) for i, w in enumerate(placement)]
    out = dd.concat(parts)
    from distributed import wait

    wait(out)
    return out


def test_sgd_average_same_coefficients_on_any_placement(client, spread, small):
    """Issue 11, defect 4: groups are drawn from the seed, not from where partitions sit. The same
    seed on the synchronous scheduler and on the cluster with two different placements of the
    partitions gives the same coefficients."""
    from daskml_scale.fraud._base import in_memory

    ddf = dd.from_pandas(small, npartitions=6)
    params = {"features": None, "valid_size": 0, "epochs": 2, "strategy": "average", "n_groups": 2}
    with in_memory():  # no cluster: the synchronous scheduler in this process
        ref = SGDFraudClassifier(**params).fit(ddf)
    w0, w1 = sorted(client.scheduler_info()["workers"])
    layouts = {"all on one worker": [w0] * 6, "alternating": [w1, w0] * 3}
    for name, placement in layouts.items():
        pinned = _pinned(client, ddf, placement)
        with spread() as ts:
            model = SGDFraudClassifier(**params).fit(pinned, client=client)
        np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=0, atol=1e-12, err_msg=name)
        assert model.n_groups_ == ref.n_groups_ == 2
        assert model.partition_groups_ == ref.partition_groups_
        ts.assert_spread(prefix="_local_epoch")  # the two groups ran in parallel, one per worker


@pytest.mark.parametrize(("n_groups", "expected"), [(1, 1), (3, 3), (None, 2)])
def test_sgd_average_honours_n_groups_on_a_cluster(client, small, n_groups, expected):
    """n_groups=1 runs one group even with data on both workers; n_groups=3 runs three groups on two
    workers; None: one group per worker."""
    from distributed import get_task_stream

    ddf = dd.from_pandas(small, npartitions=6)
    model = SGDFraudClassifier(features=None, valid_size=0, epochs=2, strategy="average", n_groups=n_groups)
    with get_task_stream(client) as ts:
        model.fit(ddf, client=client)
    epochs_run = [d for d in ts.data if "_local_epoch" in str(d["key"])]
    assert len(epochs_run) == 2 * expected  # one task per group per epoch
    assert model.n_groups_ == expected
    assert len(model.partition_groups_) == expected
    assert sorted(i for g in model.partition_groups_ for i in g) == list(range(6))
    assert model.n_rows_seen_ == 2 * len(small)


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "object", "category"])
def test_category_codes_equal_a_lookup_of_every_value(dtype):
    """Codes from the distinct values (factorize, then one lookup each) equal looking up every value
    as a Python object (the old path): seen values, unseen ones and missing ones (-1)."""
    from daskml_scale.fraud._base import _codes

    rng = np.random.default_rng(0)
    values = np.array(["online", "pos", "atm", "new", None], dtype=object)[rng.integers(0, 5, 1000)]
    s = pd.Series(values, dtype=dtype)
    cats = ["atm", "online", "pos"]
    want = pd.Index(cats, dtype="object").get_indexer(s.astype("object").to_numpy())
    np.testing.assert_array_equal(_codes(s, cats), want)
    assert set(np.unique(want)) == {-1, 0, 1, 2}
