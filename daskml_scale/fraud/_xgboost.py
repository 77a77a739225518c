"""Distributed gradient-boosted trees for fraud: ``xgboost.dask`` with behaviour features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import get_client
from ..errors import ParameterError, check_fitted, check_in
from ..storage import register_kind
from . import _recovery
from ._artifacts import load_from
from ._base import (
    FraudClassifierBase,
    check_transactions,
    compute_small,
    feature_types,
    in_memory,
    is_dask,
    maybe_in_memory,
    model_frame,
    persist,
    to_dask,
)

__all__ = ["XGBoostFraudClassifier"]

_WEIGHT = "_dms_stop_weight"  # the early-stopping sample's row weights
# early stopping samples the validation negatives only when the sample keeps at least this many
# rows: below it the whole part is cheap, and a sample of a few thousand rows (a few dozen frauds)
# moves PR-AUC by 0.04-0.19 (measured on 9k validation rows with 20 frauds)
MIN_STOPPING_SAMPLE = 100_000


def _sample_negatives(pdf: pd.DataFrame, rate: float, seed: int, partition_info=None) -> pd.DataFrame:
    """One partition of the early-stopping set: every fraud row (weight 1) and the legitimate rows
    drawn at ``rate`` by a generator seeded with ``seed`` and the partition number (weight
    ``1 / rate``)."""
    i = 0 if partition_info is None else int(partition_info["number"])
    pos = pdf[S.IS_FRAUD].to_numpy() == 1
    keep = pos | (np.random.default_rng([int(seed), 0x5709, i]).random(len(pdf)) < rate)
    weight = np.where(pos[keep], 1.0, 1.0 / rate).astype("float32")
    return pdf[keep].assign(**{_WEIGHT: weight})


class XGBoostFraudClassifier(FraudClassifierBase):
    """Gradient-boosted trees on transactions and their per-card behaviour, trained with ``xgboost.dask``.

    ``fit`` computes the behaviour features, holds out the latest ``valid_size`` of the time span
    (or everything from ``valid_from``) for early stopping, weighs the rare fraud class by
    ``scale_pos_weight`` (counted distributedly), and trains with ``DaskQuantileDMatrix`` and
    ``tree_method="hist"`` on every worker. Categories (merchant category, channel) use xgboost's
    native categorical support with the categories learned in ``fit``. The same code path runs on
    ``device="cpu"`` or ``"cuda"``.

    A pandas DataFrame trains in memory with ``xgboost.train`` (same parameters, same model).

    Parameters
    ----------
    features : 'auto', None or TransactionFeatures
        Behaviour features computed from the transactions: ``'auto'`` is
        ``TransactionFeatures()``; None uses the raw columns only (the baseline).
    n_estimators : int
        Maximum number of boosting rounds.
    learning_rate, max_depth, min_child_weight, subsample, colsample_bytree, reg_lambda, max_bin
        xgboost tree parameters.
    scale_pos_weight : 'auto' or float
        Weight of fraud rows; ``'auto'`` is negatives / positives of the training part (after
        ``negative_rate``). The weight inflates the model's raw odds by that factor; ``calibrate``
        takes it out again.
    early_stopping_rounds : int or None
        Stop when the validation ``eval_metric`` has not improved for this many rounds; the model
        keeps the best iteration.
    valid_size : float in [0, 1)
        Fraction of the time span (latest part) held out for early stopping; 0 trains on
        everything for ``n_estimators`` rounds.
    valid_from : str or Timestamp, optional
        Validation set = transactions at or after this time (overrides ``valid_size``).
    eval_metric : str
        Validation metric for early stopping (``'aucpr'`` by default).
    device : {'cpu', 'cuda'}
    n_jobs : int, optional
        Threads of in-memory training (pandas input); default all cores. With Dask input each
        worker uses its own threads.
    threshold : float
        Probability at or above which a transaction is an alert (on the scores ``predict_proba``
        gives, so calibrated ones by default).
    calibrate : {True, 'platt', 'prior', False}
        What ``predict_proba`` (and so ``predict``, ``score``, ``tune_threshold``, the validation
        metrics and thresholds) gives. ``'prior'``: probabilities corrected for the class weight and
        the negative downsampling (prior correction: calibrated odds = raw odds * negative_rate /
        scale_pos_weight_). ``'platt'``: then Platt's two parameters, ``expit(a * m + b)`` on the
        prior-corrected margin ``m``, fitted on the validation part (never on test data; needs one).
        True (default): ``'platt'`` when there is a validation part, ``'prior'`` otherwise. False:
        the booster's raw probabilities. :meth:`decision_function` gives the raw margin either way.
    negative_rate : float in (0, 1]
        Fraction of the legitimate training rows kept (each chosen by a hash of its id and
        ``random_state``); fraud rows and the validation part are all kept. Below 1, when that
        fraction of the validation part is at least ``MIN_STOPPING_SAMPLE`` (100,000) rows, early
        stopping evaluates ``eval_metric`` each round on the validation part's fraud rows and that
        fraction of its legitimate rows, weighted by ``1 / negative_rate`` (an estimate of the
        metric over all of it, at that fraction of the per-round cost); calibration and
        ``validation_metrics_`` always use all of the validation part.
    random_state : int
    checkpoint : str or path-like, optional
        Directory or fsspec URL (shared storage on a multi-machine cluster) where the booster is
        checkpointed every ``checkpoint_every`` rounds during a Dask fit. A worker lost mid-fit is
        noticed (its peers' collective calls fail), the fit waits for the cluster to recover (or
        goes on with the workers left) and resumes from the last checkpoint to the same number of
        rounds, early stopping included. Without it a lost worker restarts training from round 0.
        See :mod:`daskml_scale.fraud._recovery` for what is and is not recovered.
    checkpoint_every : int
        Rounds between checkpoints.
    max_restarts : int
        Worker losses survived in one fit before it fails with :class:`~daskml_scale.errors.FitError`.
    collective_timeout : float
        Seconds a worker's collective call (allreduce) may wait for the others: a worker that hangs
        without dying makes the fit fail after this long instead of hanging (it is not restarted).
        Raise it if one round can take longer than this on a worker.
    storage_options : dict, optional
        Passed to the filesystem of ``checkpoint``.

    Attributes
    ----------
    booster_ : xgboost.Booster
        The trained model, cut at the best iteration.
    best_iteration_ : int
    scale_pos_weight_ : float
    prior_offset_ : float
        ``log(scale_pos_weight_) - log(negative_rate)``: subtracted from the margin when calibrating.
    calibration_ : dict
        ``{"method": "platt" | "prior", "a", "b", "prior_offset", ...}``: the fitted calibration
        (``a=1, b=0`` for the prior correction alone).
    model_columns_ : list of str
        Columns of the model matrix, in order.
    categories_ : dict
        Column -> sorted categories learned in ``fit``.
    features_ : TransactionFeatures or None
        The fitted behaviour features.
    validation_metrics_ : dict
        ``classification_metrics`` on the validation part, plus ``ece`` (10 equal-width bins).
    n_stopping_ : int
        Rows early stopping evaluated each round (the validation part, or its sample).
    restarts_ : list of dict
        One entry per worker loss survived during ``fit``: the lost workers, seconds to detection,
        seconds waited for the cluster, the round resumed from.

    Examples
    --------
    >>> from daskml_scale.data import make_transactions
    >>> from daskml_scale.fraud import XGBoostFraudClassifier
    >>> tx = make_transactions(20_000, days=20, seed=0)
    >>> clf = XGBoostFraudClassifier(n_estimators=50).fit(tx)  # doctest: +SKIP
    >>> clf.predict_proba(tx).head()  # doctest: +SKIP
    """

    _kind = "XGBoostFraudClassifier"

    def __init__(
        self,
        *,
        features="auto",
        n_estimators: int = 500,
        learning_rate: float = 0.1,
        max_depth: int = 6,
        min_child_weight: float = 1.0,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_lambda: float = 1.0,
        max_bin: int = 256,
        scale_pos_weight="auto",
        early_stopping_rounds: int | None = 20,
        valid_size: float = 0.2,
        valid_from=None,
        eval_metric: str = "aucpr",
        device: str = "cpu",
        n_jobs: int | None = None,
        threshold: float = 0.5,
        calibrate: bool | str = True,
        negative_rate: float = 1.0,
        random_state: int = 0,
        checkpoint=None,
        checkpoint_every: int = 10,
        max_restarts: int = 3,
        collective_timeout: float = 60.0,
        storage_options: dict | None = None,
    ):
        self.features = features
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.scale_pos_weight = scale_pos_weight
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_size = valid_size
        self.valid_from = valid_from
        self.eval_metric = eval_metric
        self.device = device
        self.n_jobs = n_jobs
        self.threshold = threshold
        self.calibrate = calibrate
        self.negative_rate = negative_rate
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.max_restarts = max_restarts
        self.collective_timeout = collective_timeout
        self.storage_options = storage_options

    # ----------------------------------------------------------------------------- fit
    def _check_params(self):
        owner = type(self).__name__
        check_in("device", self.device, ("cpu", "cuda"), owner)
        for name in ("n_estimators", "max_depth", "max_bin"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ParameterError(
                    f"The {name!r} parameter of {owner} must be an int >= 1. Got {v!r} instead."
                )
        esr = self.early_stopping_rounds
        if esr is not None and (not isinstance(esr, (int, np.integer)) or esr < 1):
            raise ParameterError(
                f"The 'early_stopping_rounds' parameter of {owner} must be an int >= 1 or None. "
                f"Got {esr!r} instead."
            )
        spw = self.scale_pos_weight
        if not (spw == "auto" or (isinstance(spw, (int, float)) and not isinstance(spw, bool) and spw > 0)):
            raise ParameterError(
                f"The 'scale_pos_weight' parameter of {owner} must be 'auto' or a float > 0. "
                f"Got {spw!r} instead."
            )

    def _params(self):
        return {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "device": self.device,
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "max_bin": self.max_bin,
            "scale_pos_weight": self.scale_pos_weight_,
            "eval_metric": self.eval_metric,
            "seed": self.random_state,
            **({} if self.n_jobs is None else {"nthread": self.n_jobs}),
        }

    def _feature_types(self):
        return feature_types(self.numeric_columns_, self.categories_)

    def _matrix(self, ddf):
        """Lazy model matrix (:func:`model_frame`) of a featurized Dask DataFrame."""
        meta = model_frame(ddf._meta, self.numeric_columns_, self.categories_)
        return ddf.map_partitions(model_frame, self.numeric_columns_, self.categories_, meta=meta)

    def _training_frame(self, pdf):
        """The model matrix (float32, see :func:`model_frame`) and the label: all that fit keeps."""
        out = model_frame(pdf, self.numeric_columns_, self.categories_)
        out[S.IS_FRAUD] = pdf[S.IS_FRAUD].to_numpy()
        return out

    def _stopping_set(self, valid, client):
        """What early stopping evaluates each round: ``valid``, or (``negative_rate < 1``) its fraud
        rows and a seeded sample of its legitimate rows at that rate, weighted ``1 / rate``, kept in
        (cluster) memory beside it. Returns ``(frame or None, weighted)``."""
        if valid is None:
            self.n_stopping_ = 0
            return None, False
        if self.negative_rate >= 1.0 or self.negative_rate * self.n_valid_ < MIN_STOPPING_SAMPLE:
            self.n_stopping_ = int(self.n_valid_)
            return valid, False
        meta = valid._meta.assign(**{_WEIGHT: np.zeros(0, dtype="float32")})
        sample = valid.map_partitions(
            _sample_negatives, float(self.negative_rate), int(self.random_state), meta=meta
        )
        (sample,) = persist(sample, client=client)
        self.n_stopping_ = int(compute_small(sample[S.IS_FRAUD].count(), client=client)[0])  # small: a count
        return sample, True

    def _valid_margins(self, valid):
        meta = pd.DataFrame({S.IS_FRAUD: valid._meta[S.IS_FRAUD], "margin": np.empty(0, dtype="float64")})
        return valid.map_partitions(self._margins_of_matrix, meta=meta)

    def _margins_of_matrix(self, pdf):
        X = pdf[self.model_columns_]
        m = self._scoring_booster().inplace_predict(X, predict_type="margin", validate_features=False)
        return pd.DataFrame(
            {S.IS_FRAUD: pdf[S.IS_FRAUD].to_numpy(), "margin": np.asarray(m, dtype="float64")}
        )

    def fit(self, X, y=None, *, client=None):
        """Train on canonical transactions with labels (``is_fraud``).

        Parameters
        ----------
        X : pandas or Dask DataFrame
            Canonical transactions including ``is_fraud``.
        y : None
            Ignored: the label is the ``is_fraud`` column.
        client : distributed.Client, optional
            Needed for Dask input (None: the current default client).

        Returns
        -------
        self
        """
        with maybe_in_memory(X):
            return self._fit(X, client=None if not is_dask(X) else client)

    def _fit(self, X, client):
        import xgboost as xgb
        import xgboost.dask  # noqa: F401 - registers xgb.dask

        self._check_params()
        distributed = is_dask(X)
        if distributed and get_client(client) is None:
            raise ParameterError(
                "XGBoostFraudClassifier.fit on a Dask DataFrame trains with xgboost.dask, which needs a "
                "distributed Client: start one with daskml_scale.connect() (or pass client=), or fit a "
                "pandas DataFrame in memory."
            )
        featurized, cutoff = self._prepare_fit(X, client)
        # train and valid: the model matrix and the label, persisted (one pass, one float32 copy)
        train, valid = self._split(featurized, cutoff, client)
        del featurized  # (without features, the raw columns persisted for the checks)
        n_neg = self.n_train_ - self.n_train_positive_
        self.scale_pos_weight_ = (
            n_neg / self.n_train_positive_
            if self.scale_pos_weight == "auto"
            else float(self.scale_pos_weight)
        )
        params = self._params()
        esr = self.early_stopping_rounds if valid is not None else None
        stop, weighted = self._stopping_set(valid, client if distributed else None)
        if distributed:
            client = get_client(client)
            # xgboost cannot infer categories on a worker whose input is empty: drop empty partitions
            train, valid = _non_empty(train, client), None if valid is None else _non_empty(valid, client)

            def build():  # again after a lost worker: Dask recomputes the partitions it held
                dtrain = xgb.dask.DaskQuantileDMatrix(
                    client,
                    train[self.model_columns_],
                    train[S.IS_FRAUD],
                    enable_categorical=True,
                    max_bin=self.max_bin,
                    feature_types=self._feature_types(),
                )
                if stop is None:
                    return dtrain, []
                dvalid = xgb.dask.DaskQuantileDMatrix(
                    client,
                    stop[self.model_columns_],
                    stop[S.IS_FRAUD],
                    weight=stop[_WEIGHT] if weighted else None,
                    enable_categorical=True,
                    ref=dtrain,
                    feature_types=self._feature_types(),
                )
                return dtrain, [(dvalid, "valid")]

            booster, history, self.restarts_ = _recovery.train(
                client,
                params,
                build,
                num_boost_round=self.n_estimators,
                early_stopping_rounds=esr,
                eval_metric=self.eval_metric,
                checkpoint=self.checkpoint,
                every=self.checkpoint_every,
                max_restarts=self.max_restarts,
                timeout_s=self.collective_timeout,
                storage_options=self.storage_options,
                owner=f"{type(self).__name__}.fit",
            )
        else:
            with in_memory():
                tr = train.compute()  # small: pandas input, in memory already
                va = stop.compute() if stop is not None else None  # small: pandas input
            dtrain = xgb.QuantileDMatrix(
                tr[self.model_columns_],
                tr[S.IS_FRAUD],
                enable_categorical=True,
                max_bin=self.max_bin,
                feature_types=self._feature_types(),
            )
            evals = []
            if va is not None:
                dvalid = xgb.QuantileDMatrix(
                    va[self.model_columns_],
                    va[S.IS_FRAUD],
                    weight=va[_WEIGHT] if weighted else None,
                    enable_categorical=True,
                    ref=dtrain,
                    feature_types=self._feature_types(),
                )
                evals = [(dvalid, "valid")]
            history = {}
            booster = xgb.train(
                params,
                dtrain,
                num_boost_round=self.n_estimators,
                evals=evals,
                early_stopping_rounds=esr,
                evals_result=history,
                verbose_eval=False,
            )
            self.restarts_ = []
        if esr is not None and getattr(booster, "best_iteration", None) is not None:
            booster = booster[: booster.best_iteration + 1]
        self.best_iteration_ = int(booster.num_boosted_rounds()) - 1
        self.evals_result_ = {k: {m: [float(x) for x in v] for m, v in d.items()} for k, d in history.items()}
        self.booster_ = booster
        self._fit_validation(valid, client if distributed else None)
        return self

    # ----------------------------------------------------------------------------- predict
    def _scoring_booster(self):
        booster = getattr(self, "_cpu_booster", None)
        if booster is None:
            booster = self.booster_.copy()
            booster.set_param({"device": "cpu", "nthread": 1})
            self._cpu_booster = booster
        return booster

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cpu_booster", None)
        return state

    def _positive_weight(self) -> float:
        return float(self.scale_pos_weight_)

    def _margin_partition(self, pdf):
        X = model_frame(pdf, self.numeric_columns_, self.categories_)
        booster = self._scoring_booster()
        return booster.inplace_predict(X, predict_type="margin", validate_features=False).astype("float64")

    def _predict_partition(self, pdf):
        if self._calibration_method() != "none":
            return super()._predict_partition(pdf)
        X = model_frame(pdf, self.numeric_columns_, self.categories_)  # xgboost's own probabilities
        return self._scoring_booster().inplace_predict(X, validate_features=False)

    def model_input(self, X, history=None):
        """The model matrix the booster sees (features computed, categories fixed).

        Parameters
        ----------
        X : pandas or Dask DataFrame of canonical transactions
        history : same kind, optional

        Returns
        -------
        pandas or Dask DataFrame
            For pandas input: the columns ``model_columns_`` in the rows' order (what
            ``to_local().predict_proba`` takes). For Dask input: a lazy frame with ``transaction_id``
            first, one row per transaction.
        """
        check_fitted(self, "booster_")
        check_transactions(X, type(self).__name__, label=False)
        featurized = self._featurize(to_dask(X), None if history is None else to_dask(history))
        cols = [S.TRANSACTION_ID, *self.model_columns_]
        meta = model_frame(featurized._meta, self.numeric_columns_, self.categories_)
        meta.insert(0, S.TRANSACTION_ID, featurized._meta[S.TRANSACTION_ID])
        out = featurized[cols].map_partitions(_with_id, self.numeric_columns_, self.categories_, meta=meta)
        if is_dask(X):
            return out

        with in_memory():
            out = out.compute()  # small: pandas input, in memory already
        aligned = X[[S.TRANSACTION_ID]].merge(out, on=S.TRANSACTION_ID, how="left")
        aligned.index = X.index
        return aligned[self.model_columns_]

    def feature_contributions(self, X, history=None):
        """SHAP values per transaction from xgboost (``pred_contribs``), computed per partition.

        Returns a frame ``transaction_id``, one column per model column and ``bias`` (in log-odds:
        they sum to the margin). Lazy Dask DataFrame for Dask input, pandas for pandas input.
        """
        check_fitted(self, "booster_")
        check_transactions(X, type(self).__name__, label=False)
        featurized = self._featurize(to_dask(X), None if history is None else to_dask(history))
        cols = [*self.model_columns_, "bias"]
        meta = pd.DataFrame({S.TRANSACTION_ID: featurized._meta[S.TRANSACTION_ID]})
        for c in cols:
            meta[c] = np.empty(0, dtype="float32")
        out = featurized.map_partitions(self._contrib_partition, cols, meta=meta)
        if is_dask(X):
            return out

        with in_memory():
            return out.compute().reset_index(drop=True)  # small: pandas input

    def _contrib_partition(self, pdf, cols):
        import xgboost as xgb

        frame = pd.DataFrame({S.TRANSACTION_ID: pdf[S.TRANSACTION_ID].to_numpy()})
        if len(pdf):
            dm = xgb.DMatrix(
                model_frame(pdf, self.numeric_columns_, self.categories_),
                enable_categorical=True,
                feature_types=self._feature_types(),
            )
            contrib = self._scoring_booster().predict(dm, pred_contribs=True, validate_features=False)
        else:
            contrib = np.empty((0, len(cols)), dtype="float32")
        return pd.concat([frame, pd.DataFrame(contrib, columns=cols)], axis=1)

    def to_local(self):
        """The trained model as an in-memory ``xgboost.XGBClassifier`` (input: :meth:`model_input`)."""
        import xgboost as xgb

        check_fitted(self, "booster_")
        clf = xgb.XGBClassifier(enable_categorical=True, tree_method="hist", device="cpu")
        clf.load_model(bytearray(self.booster_.save_raw("ubj")))
        return clf


def _with_id(pdf, numeric, categories):
    out = model_frame(pdf, numeric, categories)
    out.insert(0, S.TRANSACTION_ID, pdf[S.TRANSACTION_ID].to_numpy())
    return out


def _non_empty(ddf, client):
    (lengths,) = compute_small(ddf.map_partitions(len), client=client)  # small: one count per partition
    keep = [i for i, n in enumerate(lengths) if n > 0]
    return ddf if len(keep) == ddf.npartitions else ddf.partitions[keep]


# load_model finds the class by its kind: the artifact code imports no model
register_kind(XGBoostFraudClassifier, load_from)
