"""What the fraud classifiers share: input checks, behaviour features, the model matrix, time splits.

A fraud classifier takes canonical transactions (``daskml_scale.schema.TRANSACTIONS``) and computes
its model matrix itself, partition by partition:

1. behaviour features (``TransactionFeatures`` by default; ``features=None`` keeps raw columns only),
2. the model columns: ``amount``, any extra numeric pass-through column, the category columns
   (``merchant_category``, ``channel``) with the categories learned in ``fit`` (so codes agree between
   training and scoring; unseen values become missing), then the feature columns.

Everything ``fit`` learns from the data (categories, the features' frequency encodings, class counts,
scaler statistics) comes from the training rows, before the time cut of the validation part.

Only small results ever reach the client: counts, time bounds, distinct categories, models.
"""

from __future__ import annotations

import contextlib
import contextvars

import dask
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, clone

from .. import schema as S
from ..cluster import compute, get_client
from ..cluster import persist as cluster_persist
from ..errors import ParameterError, SchemaError, check_fitted

CATEGORY_COLUMNS = (S.MERCHANT_CATEGORY, S.CHANNEL)
_NOT_FEATURES = frozenset(
    {S.TRANSACTION_ID, S.TIMESTAMP, S.CARD_ID, S.MERCHANT_ID, S.IS_FRAUD, S.SCORE, S.IS_ALERT}
)


def is_dask(obj) -> bool:
    return hasattr(obj, "dask") and hasattr(obj, "npartitions")


def check_transactions(X, owner: str, *, label: bool, dtypes: bool = True) -> None:
    """Raise SchemaError unless ``X`` (pandas or Dask) has the canonical transaction columns (and,
    with ``dtypes``, a numeric amount and a datetime64 timestamp)."""
    if not (is_dask(X) or isinstance(X, pd.DataFrame)):
        raise SchemaError(
            f"{owner} takes a pandas or Dask DataFrame of canonical transactions; got "
            f"{type(X).__name__}. Read it with dask.dataframe.read_parquet or daskml_scale.data."
        )
    required = list(S.TRANSACTIONS.required) + ([S.IS_FRAUD] if label else [])
    missing = [c for c in required if c not in X.columns]
    if missing:
        raise SchemaError(
            f"{owner}: column {missing[0]!r} is missing ({len(missing)} of the required columns "
            f"{required} are absent). Rename your columns to the canonical names "
            "(daskml_scale.schema.TRANSACTIONS).",
            column=missing[0],
        )
    if not dtypes:
        return
    if not pd.api.types.is_numeric_dtype(X[S.AMOUNT].dtype):
        raise SchemaError(
            f"{owner}: column 'amount' must be numeric, got dtype {X[S.AMOUNT].dtype}. Cast it with "
            "astype('float64').",
            column=S.AMOUNT,
        )
    if not pd.api.types.is_datetime64_any_dtype(X[S.TIMESTAMP].dtype):
        raise SchemaError(
            f"{owner}: column 'timestamp' must be datetime64, got dtype {X[S.TIMESTAMP].dtype}. "
            "Convert it with dd.to_datetime.",
            column=S.TIMESTAMP,
        )


def to_dask(X):
    """A Dask DataFrame for ``X`` (pandas frames become one partition)."""
    if is_dask(X):
        return X
    import dask.dataframe as dd

    return dd.from_pandas(X, npartitions=1, sort=False)


_LOCAL = contextvars.ContextVar("daskml_scale_fraud_in_memory", default=False)


@contextlib.contextmanager
def in_memory():
    """Run everything inside in this process (pandas input), even when a Dask client is current."""
    token = _LOCAL.set(True)
    try:
        with dask.config.set({"scheduler": "sync", "dataframe.shuffle.method": "tasks"}):
            yield
    finally:
        _LOCAL.reset(token)


def maybe_in_memory(X):
    """:func:`in_memory` for pandas input, nothing for Dask input."""
    return contextlib.nullcontext() if is_dask(X) else in_memory()


def active_client(client=None):
    """The client to compute on: None inside :func:`in_memory`, else ``get_client(client)``."""
    return None if _LOCAL.get() else get_client(client)


def compute_small(*collections, client=None):
    """``cluster.compute`` of small results, or in this process inside :func:`in_memory`."""
    if _LOCAL.get():
        return dask.compute(*collections)
    return compute(*collections, client=client)


def persist(*collections, client=None):
    """``cluster.persist`` on ``client`` (or the default one), or in this process inside
    :func:`in_memory`."""
    client = active_client(client)
    if client is None:
        return dask.persist(*collections)
    return cluster_persist(*collections, client=client)


def model_frame(pdf: pd.DataFrame, numeric, categories: dict) -> pd.DataFrame:
    """The model columns of one partition, all float32: numerics, then each categorical column as its
    code in the categories learned in fit (NaN for missing or unseen values).

    float32 is what xgboost stores and predicts from (it converts float64 input), so the values the
    booster sees are the same at half the memory.

    xgboost is told which columns are categorical with :func:`feature_types` rather than by pandas
    categorical dtypes: with those, xgboost infers the categories on every worker and refuses a
    worker whose share of the data is empty (xgboost 3.2), which a time-based validation set or a
    filtered table easily produces. The codes come from fit, so training and scoring always agree.
    """
    out = {c: pdf[c].astype("float32") for c in numeric}
    for c, cats in categories.items():
        codes = _codes(pdf[c], cats).astype("float32")
        codes[codes < 0] = np.nan
        out[c] = codes
    return pd.DataFrame(out, index=pdf.index)


def feature_types(numeric, categories: dict) -> list[str]:
    """xgboost feature types of :func:`model_frame`'s columns: ``"q"`` numeric, ``"c"`` categorical."""
    return ["q"] * len(numeric) + ["c"] * len(categories)


def _codes(values: pd.Series, cats) -> np.ndarray:
    """Category codes of ``values`` in ``cats``; -1 (missing) for NaN and values unseen in fit.

    The column's distinct values are found first (a factorize, fast on Arrow strings) and only they
    are looked up in ``cats``: 10x less than converting every value to a Python object."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = pd.Index(cats, dtype="object").get_indexer(np.asarray(uniques, dtype=object))
    # a missing value keeps -1: index -1 of the lookup with -1 appended
    return np.append(lookup, -1)[codes]


def one_hot_matrix(pdf: pd.DataFrame, numeric, categories: dict) -> np.ndarray:
    """Numerics then one indicator column per learned category, as a float64 array (NaN kept)."""
    blocks = [pdf[list(numeric)].to_numpy(dtype="float64", na_value=np.nan)] if numeric else []
    for c, cats in categories.items():
        codes = _codes(pdf[c], cats)
        blocks.append((codes[:, None] == np.arange(len(cats))[None, :]).astype("float64"))
    if not blocks:
        return np.empty((len(pdf), 0))
    return np.hstack(blocks)


_CALIBRATE = (True, "platt", "prior", False)


class FraudClassifierBase(BaseEstimator):
    """Shared machinery; subclasses implement ``_fit_model`` and ``_predict_partition``."""

    _kind = "FraudClassifier"

    # ----------------------------------------------------------------------------- parameters
    def _check_common(self):
        owner = type(self).__name__
        if not (self.features is None or self.features == "auto" or hasattr(self.features, "transform")):
            raise ParameterError(
                f"The 'features' parameter of {owner} must be 'auto', None or a TransactionFeatures. "
                f"Got {self.features!r} instead."
            )
        if not isinstance(self.valid_size, (int, float)) or not 0.0 <= self.valid_size < 1.0:
            raise ParameterError(
                f"The 'valid_size' parameter of {owner} must be a float in [0, 1). "
                f"Got {self.valid_size!r} instead."
            )
        c = self.calibrate
        if not (isinstance(c, bool) or (isinstance(c, str) and c in _CALIBRATE)):
            raise ParameterError(
                f"The 'calibrate' parameter of {owner} must be one of {{True, 'platt', 'prior', False}}. "
                f"Got {self.calibrate!r} instead."
            )
        if self.calibrate == "platt" and self.valid_size == 0 and self.valid_from is None:
            raise ParameterError(
                f"{owner}: calibrate='platt' fits its two parameters on the validation part, and "
                "valid_size=0 leaves none. Pass valid_size > 0 (or valid_from), or calibrate=True (Platt "
                "when there is a validation part, the prior correction otherwise) or 'prior'."
            )
        r = self.negative_rate
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 < r <= 1.0:
            raise ParameterError(
                f"The 'negative_rate' parameter of {owner} must be a float in (0, 1] (the fraction of "
                f"legitimate training rows kept). Got {r!r} instead."
            )
        t = self.threshold
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not t >= 0.0:
            raise ParameterError(
                f"The 'threshold' parameter of {owner} must be a float >= 0 (scores are in [0, 1]; "
                f"inf raises no alert). Got {t!r} instead."
            )

    def _new_features(self):
        if self.features is None:
            return None
        if isinstance(self.features, str):
            from ..features import TransactionFeatures

            return TransactionFeatures()
        return clone(self.features)

    # ----------------------------------------------------------------------------- features
    def _featurize(self, ddf, history=None, start=None):
        """Transactions plus behaviour-feature columns (one row per input row)."""
        if self.features_ is None:
            return ddf
        return self.features_.transform(ddf, history=history, start=start)

    def _prepare_fit(self, X, client):
        """Fit the features, learn the model columns and categories; return (featurized, cutoff).

        The time cut of the validation part is chosen first; the categories and the features' fitted
        state (frequency encodings) are learned on the rows before it only.
        """
        owner = type(self).__name__
        check_transactions(X, owner, label=True)
        self._check_common()
        ddf = to_dask(X)
        cats = [c for c in CATEGORY_COLUMNS if c in ddf.columns]
        extra = [
            c
            for c in ddf.columns
            if c not in S.TRANSACTIONS.columns
            and c not in _NOT_FEATURES
            and pd.api.types.is_numeric_dtype(ddf[c].dtype)
        ]
        if self.features is None:
            # raw columns only: read the input once, the checks and the training then read memory
            (ddf,) = persist(
                ddf[[S.TRANSACTION_ID, S.TIMESTAMP, S.IS_FRAUD, S.AMOUNT, *extra, *cats]], client=client
            )
        ts = ddf[S.TIMESTAMP]
        label = ddf[S.IS_FRAUD]
        # small: two timestamps, three counts and, per category column, the first time each value
        # occurs (the categories of the training rows follow once the cut is known: one pass only)
        t_min, t_max, n, n_pos, n_bad, *first_seen = compute_small(
            ts.min(),
            ts.max(),
            label.count(),
            label.sum(),
            (~label.isin([0, 1])).sum(),
            *[ddf.groupby(c, dropna=True)[S.TIMESTAMP].min(split_out=1) for c in cats],
            client=client,
        )
        if n == 0:
            raise SchemaError(f"{owner}: the training data has 0 rows. Pass at least a few days of data.")
        if n_bad:
            raise SchemaError(
                f"{owner}: column 'is_fraud' must be 0 or 1; {int(n_bad)} rows are not (NaN included). "
                "Drop or fix them first (daskml_scale.data.clean).",
                column=S.IS_FRAUD,
            )
        if n_pos == 0 or n_pos == n:
            raise SchemaError(
                f"{owner}: column 'is_fraud' has a single class ({int(n_pos)} fraud rows of {int(n)}). "
                "Train on data with both fraud and legitimate transactions.",
                column=S.IS_FRAUD,
            )
        cutoff = self._cutoff(pd.Timestamp(t_min), pd.Timestamp(t_max))
        # everything learned from the data is learned on the training rows only (before the
        # validation cut), so that the validation metrics see the validation days as new data
        self.categories_ = {
            c: sorted(str(v) for v, t in first.items() if pd.notna(t) and (cutoff is None or t < cutoff))
            for c, first in zip(cats, first_seen)
        }
        self.features_ = self._new_features()
        if self.features_ is not None:
            self.features_.fit(ddf if cutoff is None else ddf[ts < cutoff], client=client)
            feat_names = [str(c) for c in self.features_.get_feature_names_out()]
        else:
            feat_names = []
        numeric = [S.AMOUNT] + extra + [c for c in feat_names if c not in extra and c != S.AMOUNT]
        self.numeric_columns_ = numeric
        self.model_columns_ = numeric + cats
        self.time_range_ = (pd.Timestamp(t_min).isoformat(), pd.Timestamp(t_max).isoformat())
        self.valid_from_ = None if cutoff is None else cutoff.isoformat()
        keep = [S.TRANSACTION_ID, S.TIMESTAMP, S.IS_FRAUD, *self.model_columns_]
        if self.features_ is None:
            return ddf[keep], cutoff  # in memory already
        # lazy: _split persists what the training reads, after down-sampling. The validation rows
        # are featurized with the training rows as their history (features never read the label)
        return self._featurize(ddf)[keep], cutoff

    def _cutoff(self, t_min, t_max):
        if self.valid_from is not None:
            try:
                cutoff = pd.Timestamp(self.valid_from)
            except (ValueError, TypeError):
                raise ParameterError(
                    f"The 'valid_from' parameter of {type(self).__name__} must be a timestamp such as "
                    f"'2025-01-25'. Got {self.valid_from!r} instead."
                ) from None
            if not t_min < cutoff <= t_max:
                raise ParameterError(
                    f"The 'valid_from' parameter of {type(self).__name__} ({cutoff}) must fall inside "
                    f"the training data's time range ({t_min} to {t_max}], leaving rows on both sides."
                )
            return cutoff
        if self.valid_size == 0:
            return None
        return t_max - (t_max - t_min) * self.valid_size

    def _split(self, featurized, cutoff, client):
        """Train and validation parts by time, and the class counts of each (small)."""
        owner = type(self).__name__
        if cutoff is None:
            train, valid = featurized, None
        else:
            is_valid = featurized[S.TIMESTAMP] >= cutoff
            train, valid = featurized[~is_valid], featurized[is_valid]
        if self.negative_rate < 1.0:
            from ._calibration import _downsample  # (that module builds on this one)

            # negatives kept at negative_rate, each row decided by a hash of its id and the seed
            # (the same rows on any partitioning); positives all kept. The validation part is not
            # sampled: early stopping and validation metrics see the real class balance.
            train = train.map_partitions(
                _downsample, float(self.negative_rate), int(self.random_state), meta=train._meta
            )
        # one pass: featurize, split, down-sample and keep in (cluster) memory what the training reads
        parts = self._materialize([train] + ([valid] if valid is not None else []), client)
        train, valid = parts[0], (parts[1] if len(parts) > 1 else None)
        # small: two counts per part
        flat = compute_small(
            *[s for p in parts for s in (p[S.IS_FRAUD].count(), p[S.IS_FRAUD].sum())], client=client
        )
        (n_tr, pos_tr), *rest = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        if pos_tr == 0 or pos_tr == n_tr:
            raise SchemaError(
                f"{owner}: the training part before {cutoff} has {pos_tr} fraud rows of {n_tr}; both "
                "classes are needed. Pass an later valid_from or a smaller valid_size."
            )
        if rest:
            n_va, pos_va = rest[0]
            if pos_va == 0 or pos_va == n_va:
                raise SchemaError(
                    f"{owner}: the validation part from {cutoff} has {pos_va} fraud rows of {n_va}; "
                    "early stopping needs both classes. Pass an earlier valid_from, a larger valid_size, "
                    "or valid_size=0 to train without a validation set."
                )
        self.n_train_ = n_tr
        self.n_train_positive_ = pos_tr
        self.n_valid_ = rest[0][0] if rest else 0
        return train, valid

    def _materialize(self, parts, client):
        """Persist the training (down-sampled) and validation parts in one pass over the input.

        What is kept is each estimator's training input (``_training_frame``): one copy, nothing else.
        """
        frames = [p.map_partitions(self._training_frame, meta=self._training_frame(p._meta)) for p in parts]
        return list(persist(*frames, client=client))

    def _training_frame(self, pdf):
        """The columns of a featurized partition that training reads (the label included)."""
        return pdf

    def _valid_margins(self, valid):
        """Lazy frame ``is_fraud, margin`` of the (materialized) validation part."""
        return self._score_frame(valid, keep=[S.IS_FRAUD], margin=True)[[S.IS_FRAUD, "margin"]]

    # ----------------------------------------------------------------------------- prediction
    @property
    def prior_offset_(self) -> float:
        """Log-odds the training added to every score: ``log(w) - log(negative_rate)``.

        ``w`` is the weight of a fraud row relative to a legitimate one (``scale_pos_weight_`` for
        XGBoost, ``class_weight_[1] / class_weight_[0]`` for SGD, 1 without weights). Weighting
        positives by ``w`` and keeping negatives at rate ``r`` multiply the odds the model learns by
        ``w / r``; the calibrated log-odds are the raw margin minus this offset (prior correction).
        """
        return float(np.log(self._positive_weight()) - np.log(self.negative_rate))

    def _positive_weight(self) -> float:
        raise NotImplementedError

    def _calibration_method(self) -> str:
        """What ``predict_proba`` applies: 'platt', 'prior' or 'none'.

        ``calibrate=True`` or ``'platt'`` applies the fitted Platt parameters when ``calibration_``
        holds them (a model fitted with a validation part), else the prior correction (no validation
        part, or an artifact saved before Platt recalibration existed).
        """
        if self.calibrate is False:
            return "none"
        if self.calibrate == "prior":
            return "prior"
        cal = getattr(self, "calibration_", None)
        return "platt" if cal is not None and cal.get("method") == "platt" else "prior"

    def _fit_validation(self, valid, client):
        """``calibration_`` and ``validation_metrics_`` from one pass of the model over the validation
        part (its raw margins, kept in memory: Platt's fit and the metrics all read them)."""
        if valid is None:
            self._fit_calibration(None, client)
            self.validation_metrics_ = {}
            return
        (margins,) = persist(self._valid_margins(valid), client=client)
        self._fit_calibration(margins, client)
        self.validation_metrics_ = self._validation_metrics(margins, client)

    def _fit_calibration(self, margins, client):
        """``calibration_``: Platt's (a, b) on the prior-corrected margins of the validation part.

        The validation part is never downsampled, so its fraud rate is the real one; the test data are
        never used. Without a validation part, or with ``calibrate='prior'`` / False, only the prior
        offset is recorded.
        """
        offset = self.prior_offset_
        if margins is None or self.calibrate in (False, "prior"):
            self.calibration_ = {"method": "prior", "a": 1.0, "b": 0.0, "prior_offset": offset}
            return
        frame = margins.assign(margin=margins["margin"] - offset)
        from ._calibration import fit_platt  # (that module builds on this one)

        a, b, n_iter = fit_platt(frame, client=client)
        self.calibration_ = {
            "method": "platt",
            "a": a,
            "b": b,
            "prior_offset": offset,
            "n_iter": n_iter,
            "fitted_on": "validation",
            "n_rows": int(self.n_valid_),
        }

    def _calibrated(self, m):
        """Probabilities from raw margins ``m`` with the model's calibration."""
        method = self._calibration_method()
        if method == "none":
            return expit(m)
        z = m - self.prior_offset_
        if method == "platt":
            z = self.calibration_["a"] * z + self.calibration_["b"]
        return expit(z)

    def _scores_from_margins(self, pdf):
        out = pdf[[S.IS_FRAUD]].copy()
        out[S.SCORE] = np.asarray(self._calibrated(pdf["margin"].to_numpy()), dtype="float64")
        return out

    def _predict_partition(self, pdf):
        """Fraud probabilities of one featurized partition, calibrated as ``calibrate`` says."""
        return self._calibrated(self._margin_partition(pdf))

    def _score_frame(self, featurized, keep=(), margin=False):
        """Lazy Dask DataFrame ``transaction_id, *keep, score`` of featurized transactions (the raw
        margin in a column ``margin`` instead of ``score`` with ``margin=True``)."""
        cols = [S.TRANSACTION_ID, *keep]
        name = "margin" if margin else S.SCORE
        meta = featurized._meta[cols].assign(**{name: np.empty(0, dtype="float64")})
        return featurized.map_partitions(self._score_partition, cols, margin, meta=meta)

    def _score_partition(self, pdf, cols, margin=False):
        predict = self._margin_partition if margin else self._predict_partition
        p = predict(pdf) if len(pdf) else np.empty(0)
        out = pdf[cols].reset_index(drop=True)
        out["margin" if margin else S.SCORE] = np.asarray(p, dtype="float64")
        return out

    def decision_function(self, X, history=None):
        """Raw margin (log-odds) of the trained model, before any calibration.

        ``predict_proba`` is ``expit(a * (margin - prior_offset_) + b)`` with Platt's ``a, b`` from
        ``calibration_`` (``calibrate=True`` or ``'platt'``, fitted on the validation part),
        ``expit(margin - prior_offset_)`` with ``calibrate='prior'`` (or without a validation part),
        and ``expit(margin)`` with ``calibrate=False``.

        Returns
        -------
        numpy.ndarray or dask.dataframe.DataFrame
            For pandas input an array in the rows' order; for Dask input a lazy frame
            ``transaction_id, margin``.
        """
        check_fitted(self, "model_columns_")
        check_transactions(X, type(self).__name__, label=False)
        if is_dask(X):
            return self._score_frame(self._featurize(X, history), margin=True)
        return self._score_pandas(X, history, margin=True)

    def predict_proba(self, X, history=None):
        """Fraud probability of each transaction.

        Parameters
        ----------
        X : pandas or Dask DataFrame
            Canonical transactions (``is_fraud`` not needed).
        history : same kind as X, optional
            Earlier transactions of the same cards, so behaviour features see their past.

        Returns
        -------
        numpy.ndarray or dask.dataframe.DataFrame
            For pandas input, an ``(n, 2)`` array in the rows' order (column 1 is fraud). For Dask
            input, a lazy Dask DataFrame ``transaction_id, score`` with one row per transaction (join
            on ``transaction_id``: behaviour features may reorder rows).
        """
        check_fitted(self, "model_columns_")
        check_transactions(X, type(self).__name__, label=False)
        if is_dask(X):
            return self._score_frame(self._featurize(X, history))
        scores = self._score_pandas(X, history)
        return np.column_stack([1.0 - scores, scores])

    def _score_pandas(self, X, history=None, margin=False):
        col = "margin" if margin else S.SCORE
        with in_memory():
            hist = None if history is None else to_dask(history)
            featurized = self._featurize(to_dask(X), hist)
            out = self._score_frame(featurized, margin=margin).compute()  # small: pandas input
        if self.features_ is None:
            return out[col].to_numpy()
        if not X[S.TRANSACTION_ID].is_unique:
            raise SchemaError(
                f"{type(self).__name__}: column 'transaction_id' has "
                f"{int(X[S.TRANSACTION_ID].duplicated().sum())} duplicate values; behaviour features "
                "need unique ids to align rows. Deduplicate first (daskml_scale.data.clean).",
                column=S.TRANSACTION_ID,
            )
        aligned = X[[S.TRANSACTION_ID]].merge(out, on=S.TRANSACTION_ID, how="left")
        return aligned[col].to_numpy()

    def predict(self, X, history=None):
        """1 where the fraud probability is at or above ``threshold``.

        Returns an array for pandas input and a lazy Dask DataFrame
        ``transaction_id, score, is_alert`` for Dask input.
        """
        proba = self.predict_proba(X, history=history)
        if is_dask(proba):
            return proba.assign(**{S.IS_ALERT: proba[S.SCORE] >= self.threshold})
        return (proba[:, 1] >= self.threshold).astype("int64")

    # ----------------------------------------------------------------------------- reporting
    def _validation_metrics(self, margins, client):
        from ..evaluation import classification_metrics, expected_calibration_error

        meta = margins._meta[[S.IS_FRAUD]].assign(**{S.SCORE: np.empty(0, dtype="float64")})
        scored = margins.map_partitions(self._scores_from_margins, meta=meta)
        if _LOCAL.get():
            scored = scored.compute()  # small: pandas input, in memory already
        out = classification_metrics(
            scored, label=S.IS_FRAUD, score=S.SCORE, threshold=self.threshold, client=client
        )
        # 10 equal-width bins, as the reliability plot of Report.classification
        out["ece"] = expected_calibration_error(scored, label=S.IS_FRAUD, score=S.SCORE, client=client)
        return out

    # ----------------------------------------------------------------------------- artifacts
    def save(self, path, *, format: str = "ubj", storage_options: dict | None = None):
        """Save to the directory or URL ``path`` (open formats, sha256 manifest); see :func:`load_model`."""
        from ._artifacts import save_model

        return save_model(self, path, format=format, storage_options=storage_options)

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None):
        """Load a model of this class saved with :meth:`save` (files verified)."""
        from ..errors import ArtifactError
        from ._artifacts import load_model

        model = load_model(path, storage_options=storage_options)
        if not isinstance(model, cls):
            raise ArtifactError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}.")
        return model
