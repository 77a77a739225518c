"""The :class:`TransactionFeatures` transformer: per-entity time-window behaviour features on Dask."""

from __future__ import annotations

import re

import dask.dataframe as dd
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from .. import schema as S
from ..cluster import compute
from ..errors import ParameterError, SchemaError, check_fitted
from ._history import cut_by_start, history_columns, stack_history, to_ns
from ._hot_keys import hot_key_queries, hot_keys_from, split_shuffle
from ._partition import NEW, apply_stage, stage_columns

__all__ = ["AGGREGATIONS", "DEFAULT_OTHER_ENTITIES", "DEFAULT_WINDOWS", "TransactionFeatures"]

AGGREGATIONS = ("count", "sum", "mean", "std", "nunique")
DEFAULT_WINDOWS = {
    "1h": ("count", "sum"),
    "24h": ("count", "sum", "mean", "nunique"),
    "7d": ("count", "mean", "std"),
}
DEFAULT_OTHER_ENTITIES = {S.MERCHANT_ID: {"1h": ("count",), "24h": ("count", "mean")}}
_AUTO_CATEGORICALS = (S.MERCHANT_CATEGORY, S.CHANNEL)
_FORMAT_VERSION = 1


def _prefix(column: str) -> str:
    return column[:-3] if column.endswith("_id") and len(column) > 3 else column


_UNITS_NS = {"s": 10**9, "min": 60 * 10**9, "h": 3600 * 10**9, "d": 86_400 * 10**9, "w": 604_800 * 10**9}
_DURATION = re.compile(r"^([1-9][0-9]*)(s|min|h|d|w)$")


def parse_duration(label, name: str = "windows", owner: str = "TransactionFeatures") -> int:
    """Nanoseconds of a window label such as ``"90s"``, ``"30min"``, ``"1h"``, ``"7d"``, ``"2w"``.

    The label is used verbatim in feature names, so only this compact form is accepted.
    """
    m = _DURATION.match(label) if isinstance(label, str) else None
    if m is None:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must use positive durations written as an integer "
            f"and a unit among s, min, h, d, w, such as '1h', '24h', '7d', '30min'. Got {label!r} instead."
        )
    return int(m.group(1)) * _UNITS_NS[m.group(2)]


def _parse_windows(windows, name: str, owner: str, allow_nunique: bool) -> list:
    if not isinstance(windows, dict):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a dict of window -> aggregations, such as "
            f"{{'1h': ['count'], '24h': ['count', 'sum']}}. Got {type(windows).__name__} instead."
        )
    out = []
    for label, aggs in windows.items():
        width = parse_duration(label, name, owner)
        if not isinstance(aggs, list | tuple) or not aggs or not all(isinstance(a, str) for a in aggs):
            raise ParameterError(
                f"The {name!r} parameter of {owner}: window {label!r} needs a non-empty list of "
                f"aggregations among {AGGREGATIONS}. Got {aggs!r} instead."
            )
        for agg in aggs:
            allowed = AGGREGATIONS if allow_nunique else tuple(a for a in AGGREGATIONS if a != "nunique")
            if agg not in allowed:
                raise ParameterError(
                    f"The {name!r} parameter of {owner}: aggregation {agg!r} of window {label!r} must "
                    f"be one of {allowed}."
                    + (" 'nunique' needs counterparty=<column>." if agg == "nunique" else "")
                )
        if len(set(aggs)) != len(aggs):
            raise ParameterError(
                f"The {name!r} parameter of {owner}: window {label!r} repeats an aggregation."
            )
        out.append((label, width, list(aggs)))
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain(value):
    """A category value as a JSON scalar (None for missing)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


class TransactionFeatures(TransformerMixin, BaseEstimator):
    """Per-entity time-window behaviour features of transactions, exact at any scale.

    For a transaction of entity ``e`` at time ``t``, a window ``w`` covers the transactions of ``e``
    with timestamp in ``[t - w, t)``: earlier ones only, the current one and any others at exactly
    ``t`` excluded (as pandas' ``rolling(w, closed="left")`` on time). The data is shuffled so that
    each entity's rows share a partition, sorted by (entity, time, transaction id) inside it, and the
    windows are computed with vectorised searches on those sorted arrays: the result is the same
    whatever the input partitioning. ``is_fraud`` is never read.

    Every feature looks back a bounded, declared time (its window, ``profile_window`` or
    ``gap_horizon``; none for the row-local ones), and ``required_history_`` is the longest: scoring
    new rows with that much ``history`` gives the all-at-once values bit for bit, for every entity,
    however long it was idle.

    Parameters
    ----------
    entity : str
        The main entity (default ``"card_id"``): its windows, time since its previous transaction,
        its amount profile and its first-time use of a counterparty.
    windows : dict, optional
        Window -> aggregations over the main entity's earlier transactions. Aggregations: ``count``
        (transactions), ``sum``, ``mean``, ``std`` (of the amount), ``nunique`` (distinct
        ``counterparty`` values). Default :data:`DEFAULT_WINDOWS`, which includes the required
        ``card_txn_count_1h``, ``card_txn_count_24h``, ``card_amount_sum_24h`` and
        ``card_amount_mean_7d``.
    counterparty : str or None
        Column for ``nunique`` and the first-time features (default ``"merchant_id"``).
    profile_window : str or None
        Window of the entity's amount profile (``<p>_amount_ratio_<w>``, ``<p>_amount_zscore_<w>``)
        and first-time features (``<p>_<cp>_txn_count_<w>``, ``<p>_new_<cp>_<w>``: first use of
        the counterparty *within this window*); default ``"30d"``. None: no profile or first-time
        features. Every look-back is bounded, so there is no unbounded ("all") profile: use a long
        window such as ``"365d"`` (and pass that much history when scoring).
    gap_horizon : str
        How far back ``<p>_seconds_since_prev`` looks (default ``"30d"``): the seconds since the
        entity's latest earlier transaction within ``[t - gap_horizon, t)``, NaN when there is none
        (a first transaction and one after a longer idle spell get the same value, so scoring with
        ``required_history_`` of history gives the all-at-once value).
    other_entities : dict, optional
        Entity column -> windows dict (no ``nunique``), e.g. merchant-side counts. Each costs one more
        shuffle. Default :data:`DEFAULT_OTHER_ENTITIES`; ``{}`` for none.
    time_features : bool
        Add ``hour_sin``, ``hour_cos``, ``dow_sin``, ``dow_cos`` (local wall-clock time).
    categoricals : list of str, optional
        Columns to frequency-encode (``<col>_freq``, learned in ``fit``). None: those of
        ``merchant_category`` and ``channel`` present at fit; ``[]``: none.
    max_categories : int
        Refuse to frequency-encode a column with more distinct values than this.
    timestamp, amount, transaction_id : str
        Column names (canonical by default).
    npartitions : int, optional
        Partitions after each shuffle (default: those of the input, history included). A worker's
        peak memory follows the rows a partition holds (2.6 GiB at 1M rows, 1.6 GiB at 0.5M, for
        the default features at 1B rows; see ``docs/features.md``): more partitions, less memory.
    shuffle_method : {None, "p2p", "tasks", "disk"}
        Dask's shuffle method (None: Dask's default, p2p on a distributed cluster).
    hot_key_rows : int, "auto" or None
        Split an entity (of any shuffle: merchant, card, ...) so that no task holds more than about
        this many of its rows (default ``"auto"``: the rows of an average partition after the
        shuffle, ``rows / npartitions`` of the ``fit`` data; None: never split). Every entity with
        more than ``hot_key_rows / 16`` rows in the ``fit`` data is listed, and its rows are cut
        into time buckets ``bucket_ns`` wide: the time it takes to reach ``hot_key_rows`` rows at
        its fit rate, at least the stage's look-back ``L`` (so a transform over more time than the
        fit data, up to 16 times more, still splits what is hot in it); each bucket also gets the
        entity's rows of the ``L`` before it as context (read, not returned), so the values are
        bit-identical to the unsplit ones. Cost: ``fit`` computes one distributed count per entity
        column, in the same pass as the frequency tables; ``transform`` shuffles a second copy of at most ``L / bucket_ns`` of
        the hot entities' rows. Memory per task: a bucket holds the entity's rows of a span
        ``bucket_ns + L`` instead of its whole history (at a steady rate, about
        ``hot_key_rows * (1 + L / bucket_ns)``, or the rows of ``2 L`` when ``bucket_ns = L``). See ``docs/features.md`` (Hot keys).

    Attributes
    ----------
    feature_names_out_ : list of str
    frequencies_ : dict
        Column -> list of ``[value, frequency]`` learned in fit.
    categoricals_ : list of str
    input_columns_ : list of str
        The columns the features read. Selecting them before ``transform`` (keeping what you need
        besides) makes the shuffles carry less: ``tf.transform(ddf[tf.input_columns_])``.
    hot_keys_ : dict
        Entity column -> list of ``[value, bucket_ns]``: the entities split by ``transform`` and
        their bucket width in ns (empty when none is hot or ``hot_key_rows=None``).
    required_history_ : pandas.Timedelta
        How much history before the first new transaction ``transform(..., history=)`` needs for
        exact values: the longest look-back of any feature (windows of every entity,
        ``profile_window``, ``gap_horizon``). Every row with a timestamp in
        ``[first_new - required_history_, first_new)`` must be passed.

    Examples
    --------
    >>> from daskml_scale.data import make_transactions
    >>> from daskml_scale.features import TransactionFeatures
    >>> ddf = make_transactions(2_000, npartitions=2, seed=0)
    >>> tf = TransactionFeatures().fit(ddf)
    >>> out = tf.transform(ddf)
    >>> "card_txn_count_1h" in out.columns
    True
    >>> len(out) == len(ddf)
    True
    """

    REQUIRED = (
        "card_txn_count_1h",
        "card_txn_count_24h",
        "card_amount_sum_24h",
        "card_amount_mean_7d",
        "card_seconds_since_prev",
    )
    """The five features every default configuration provides (with ``entity="card_id"``)."""

    def __init__(
        self,
        *,
        entity: str = S.CARD_ID,
        windows: dict | None = None,
        counterparty: str | None = S.MERCHANT_ID,
        profile_window: str | None = "30d",
        gap_horizon: str = "30d",
        other_entities: dict | None = None,
        time_features: bool = True,
        categoricals: list | None = None,
        max_categories: int = 10_000,
        timestamp: str = S.TIMESTAMP,
        amount: str = S.AMOUNT,
        transaction_id: str = S.TRANSACTION_ID,
        npartitions: int | None = None,
        shuffle_method: str | None = None,
        hot_key_rows: int | str | None = "auto",
    ):
        self.entity = entity
        self.windows = windows
        self.counterparty = counterparty
        self.profile_window = profile_window
        self.gap_horizon = gap_horizon
        self.other_entities = other_entities
        self.time_features = time_features
        self.categoricals = categoricals
        self.max_categories = max_categories
        self.timestamp = timestamp
        self.amount = amount
        self.transaction_id = transaction_id
        self.npartitions = npartitions
        self.shuffle_method = shuffle_method
        self.hot_key_rows = hot_key_rows

    # ------------------------------------------------------------------------------ parameters
    def _stages(self, frequencies: dict | None = None) -> list[dict]:
        """Check the parameters and describe each shuffle stage (other entities first, main last)."""
        owner = type(self).__name__
        for name in ("entity", "timestamp", "amount", "transaction_id"):
            if not isinstance(getattr(self, name), str):
                raise ParameterError(f"The {name!r} parameter of {owner} must be a column name (str).")
        if self.counterparty is not None and not isinstance(self.counterparty, str):
            raise ParameterError(f"The 'counterparty' parameter of {owner} must be a column name or None.")
        if self.counterparty is not None and self.counterparty == self.entity:
            raise ParameterError(
                f"The 'counterparty' parameter of {owner} must differ from the entity {self.entity!r} "
                "(use counterparty=None for no counterparty features)."
            )
        if not isinstance(self.time_features, bool):
            raise ParameterError(f"The 'time_features' parameter of {owner} must be a bool.")
        if (
            not isinstance(self.max_categories, int | np.integer)
            or isinstance(self.max_categories, bool)
            or self.max_categories < 1
        ):
            raise ParameterError(
                f"The 'max_categories' parameter of {owner} must be an int >= 1. "
                f"Got {self.max_categories!r} instead."
            )
        if self.npartitions is not None and (
            not isinstance(self.npartitions, int | np.integer) or self.npartitions < 1
        ):
            raise ParameterError(
                f"The 'npartitions' parameter of {owner} must be None or an int >= 1. "
                f"Got {self.npartitions!r} instead."
            )
        if self.shuffle_method not in (None, "p2p", "tasks", "disk"):
            raise ParameterError(
                f"The 'shuffle_method' parameter of {owner} must be one of "
                f"{{None, 'p2p', 'tasks', 'disk'}}. Got {self.shuffle_method!r} instead."
            )
        hot = self.hot_key_rows
        if not (
            hot is None
            or (isinstance(hot, str) and hot == "auto")
            or (isinstance(hot, int | np.integer) and not isinstance(hot, bool) and hot >= 1)
        ):
            raise ParameterError(
                f"The 'hot_key_rows' parameter of {owner} must be an int >= 1, 'auto' or None. "
                f"Got {hot!r} instead."
            )
        windows = DEFAULT_WINDOWS if self.windows is None else self.windows
        main_windows = _parse_windows(windows, "windows", owner, self.counterparty is not None)
        profile = None
        if self.profile_window == "all":
            raise ParameterError(
                f"The 'profile_window' parameter of {owner} must be a duration such as '30d' or "
                "'365d', or None. Got 'all' instead: every look-back is bounded so that scoring with "
                "required_history_ of history gives the all-at-once values; use a long window instead."
            )
        if self.profile_window is not None:
            profile = (self.profile_window, parse_duration(self.profile_window, "profile_window", owner))
        gap_horizon = parse_duration(self.gap_horizon, "gap_horizon", owner)
        others = DEFAULT_OTHER_ENTITIES if self.other_entities is None else self.other_entities
        if not isinstance(others, dict):
            raise ParameterError(
                f"The 'other_entities' parameter of {owner} must be a dict of column -> windows dict "
                f"(or {{}} for none). Got {type(others).__name__} instead."
            )
        common = {
            "timestamp": self.timestamp,
            "amount": self.amount,
            "transaction_id": self.transaction_id,
        }
        stages = []
        for col, w in others.items():
            if col == self.entity:
                raise ParameterError(
                    f"The 'other_entities' parameter of {owner} repeats the main entity {col!r}; put "
                    "its windows in 'windows' instead."
                )
            stages.append(
                {
                    "entity": col,
                    "prefix": _prefix(col),
                    "windows": _parse_windows(w, f"other_entities[{col!r}]", owner, False),
                    "counterparty": None,
                    "cp_prefix": None,
                    "profile": None,
                    "since_prev": None,
                    "row_local": None,
                    **common,
                }
            )
        stages.append(
            {
                "entity": self.entity,
                "prefix": _prefix(self.entity),
                "windows": main_windows,
                "counterparty": self.counterparty,
                "cp_prefix": None if self.counterparty is None else _prefix(self.counterparty),
                "profile": profile,
                "since_prev": gap_horizon,
                "row_local": {"time_features": self.time_features, "frequencies": frequencies or {}},
                **common,
            }
        )
        names = [n for st in stages for n, _ in stage_columns(st)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ParameterError(f"{owner}: the parameters give duplicate feature names {dup}.")
        return stages

    def _needed_columns(self) -> list[str]:
        cols = [self.transaction_id, self.timestamp, self.entity, self.amount]
        if self.counterparty is not None:
            cols.append(self.counterparty)
        others = DEFAULT_OTHER_ENTITIES if self.other_entities is None else self.other_entities
        cols += list(others)
        return list(dict.fromkeys(cols))

    def _check_frame(self, ddf, role: str, extra: list | None = None) -> None:
        owner = type(self).__name__
        if not isinstance(ddf, dd.DataFrame):
            raise SchemaError(
                f"{owner} needs a dask DataFrame as {role}; got {type(ddf).__name__}. Wrap pandas "
                "data with dask.dataframe.from_pandas(df, npartitions=...)."
            )
        present = list(ddf.columns)
        for col in self._needed_columns() + list(extra or []):
            if col not in present:
                raise SchemaError(
                    f"The {role} has no column {col!r}, which {owner} needs. Columns present: "
                    f"{present}. Rename the column or set the matching parameter.",
                    column=col,
                )
        dtypes = ddf.dtypes
        if not pd.api.types.is_datetime64_any_dtype(dtypes[self.timestamp]):
            raise SchemaError(
                f"Column {self.timestamp!r} of the {role} must be datetime64; got "
                f"{dtypes[self.timestamp]}. Convert it first, e.g. "
                f"ddf[{self.timestamp!r}] = dd.to_datetime(ddf[{self.timestamp!r}]).",
                column=self.timestamp,
            )
        a = dtypes[self.amount]
        if not pd.api.types.is_numeric_dtype(a) or pd.api.types.is_bool_dtype(a):
            raise SchemaError(
                f"Column {self.amount!r} of the {role} must be numeric; got {a}. Convert it with "
                f"ddf[{self.amount!r}].astype('float64').",
                column=self.amount,
            )

    # ------------------------------------------------------------------------------ fit
    def fit(self, ddf, y=None, *, client=None):
        """Check the parameters and the data, and learn the category frequencies.

        Parameters
        ----------
        ddf : dask.dataframe.DataFrame
            Transactions (canonical columns).
        y : ignored
        client : distributed.Client, optional
            Client to compute on (the frequency tables and the hot-key counts, in one pass).

        Returns
        -------
        self
        """
        stages = self._stages()
        if self.categoricals is None:
            cats = [c for c in _AUTO_CATEGORICALS if c in ddf.columns]
        else:
            if isinstance(self.categoricals, str) or not all(isinstance(c, str) for c in self.categoricals):
                raise ParameterError(
                    f"The 'categoricals' parameter of {type(self).__name__} must be a list of column "
                    f"names or None. Got {self.categoricals!r} instead."
                )
            cats = list(self.categoricals)
        self._check_frame(ddf, "input", extra=cats)
        frequencies = {}
        counts = [ddf[c].value_counts(dropna=False, split_out=1) for c in cats]
        nparts = self.npartitions or ddf.npartitions
        hot_lazy, limit = hot_key_queries(ddf, stages, self.hot_key_rows, self.timestamp, nparts)
        # one pass: the category counts (small) and the entities over the hot-key limit (few)
        queries = counts + hot_lazy + ([limit] if hot_lazy else [])
        results = compute(*queries, client=client) if queries else []
        if cats:
            for col, vc in zip(cats, results):
                if len(vc) > self.max_categories:
                    raise ParameterError(
                        f"Column {col!r} has {len(vc)} distinct values, more than max_categories="
                        f"{self.max_categories}: frequency-encode only low-cardinality columns (drop it "
                        "from 'categoricals') or raise max_categories."
                    )
                total = float(vc.sum())
                pairs = [[_plain(v), float(c) / total] for v, c in vc.items()]
                frequencies[col] = sorted(pairs, key=lambda p: (-p[1], str(p[0])))
        self.categoricals_ = cats
        self.frequencies_ = frequencies
        self.hot_keys_ = {}
        if hot_lazy:
            self.hot_keys_ = hot_keys_from(stages, results[len(counts) : -1], results[-1], _plain)
        self._finish_fit()
        return self

    def _finish_fit(self) -> None:
        self.frequencies_ = {c: self.frequencies_[c] for c in self.categoricals_}
        self.input_columns_ = self._needed_columns() + [
            c for c in self.categoricals_ if c not in self._needed_columns()
        ]
        stages = self._stages(self.frequencies_)
        self.feature_names_out_ = [n for st in stages for n, _ in stage_columns(st)]
        # every feature's look-back: windows of every stage, the profile, the gap horizon
        widths = [w for st in stages for _, w, _ in st["windows"]]
        for st in stages:
            if st["profile"] is not None:
                widths.append(st["profile"][1])
            if st["since_prev"] is not None:
                widths.append(st["since_prev"])
        self.required_history_ = pd.Timedelta(max(widths), unit="ns")

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the feature columns ``transform`` adds, in order."""
        check_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)

    # ------------------------------------------------------------------------------ transform
    def transform(self, ddf, history=None, *, start=None):
        """Add the features to every row of ``ddf`` (lazy).

        Parameters
        ----------
        ddf : dask.dataframe.DataFrame
            Transactions to compute features for; every column is kept (``is_fraud`` untouched).
        history : dask.dataframe.DataFrame, optional
            Earlier transactions: the result equals computing over ``history`` and ``ddf`` together
            and keeping the rows of ``ddf``, for every feature, bit for bit. Needs every row with a
            timestamp in ``[first_new - required_history_, first_new)``; more is allowed and
            changes no value, but every history row passed is shuffled by every stage (each task
            trims its history to the stage's look-back of its own first new row after the
            shuffle: no reduction over the new rows holds the history in memory). A history row
            with the transaction id of a new row is ignored.
        start : time-like, optional
            With ``history``: the time of the first row of ``ddf``, or any earlier time (naive times
            are UTC). Each stage's history is then cut to its own look-back before ``start`` as it
            is read (for the default features, the merchant shuffle carries one day of history, the
            card shuffle thirty). Values are unchanged; a row of ``ddf`` earlier than ``start``
            raises :class:`~daskml_scale.errors.SchemaError` when computed.
            ``fraud.score(start="auto")`` finds it from the batch.

        Notes
        -----
        Passes: the input (and the history) is read once; each stage shuffles the whole rows by its
        entity (the default: merchant, then card; with ``start``, card then merchant), and the
        history rows are handed on from stage to stage. (A plan that ran the merchant stage on its
        five columns and joined its features to the rows in the card stage's tasks moved fewer
        bytes but was not faster at 1B rows and held more memory a worker; see
        ``benchmarks/RESULTS.md``.)

        Returns
        -------
        dask.dataframe.DataFrame
            One row per input row, the input columns followed by ``get_feature_names_out()``;
            partitioned by entity (join on ``transaction_id``, not on position).
        """
        check_fitted(self, "feature_names_out_")
        self._check_frame(ddf, "input", extra=self.categoricals_)
        clash = [c for c in self.feature_names_out_ if c in ddf.columns]
        if clash:
            raise SchemaError(
                f"The input already has feature column(s) {clash[:5]} ({len(clash)} in all); drop "
                "them before transform (it adds them).",
                column=clash[0],
            )
        if NEW in ddf.columns:
            raise SchemaError(f"Column {NEW!r} is reserved by {type(self).__name__}.", column=NEW)
        stages = self._stages(self.frequencies_)
        hot_keys = getattr(self, "hot_keys_", {})
        hist = None
        if history is not None:
            self._check_frame(history, "history")
            hist = history_columns(ddf, history, self._needed_columns())
        nparts = self.npartitions or (ddf.npartitions + (0 if hist is None else hist.npartitions))
        if start is not None:
            to_ns(start)  # checked first; without history nothing is cut
            if hist is not None:
                stages, hist = cut_by_start(stages, hist, start, self.timestamp)
        frame = ddf
        for i, stage in enumerate(stages):
            if hist is not None:
                if i == 0:  # then each stage hands the history rows on to the next one
                    frame = stack_history(frame, hist)
                stage = {**stage, "new_only": True, "forward_history": i < len(stages) - 1}
            hot = hot_keys.get(stage["entity"])
            if hot:  # hot entities split into overlapping time buckets (same values)
                frame = split_shuffle(frame, stage, hot, nparts, self.shuffle_method)
                continue
            frame = frame.shuffle(on=stage["entity"], npartitions=nparts, shuffle_method=self.shuffle_method)
            frame = frame.map_partitions(apply_stage, stage, meta=apply_stage(frame._meta, stage))
        columns = [*ddf.columns, *self.feature_names_out_]
        return frame if list(frame.columns) == columns else frame[columns]

    # ------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        """A JSON-serialisable description: parameters and fitted state (no pickle).

        Examples
        --------
        >>> import json
        >>> from daskml_scale.data import make_transactions
        >>> tf = TransactionFeatures(categoricals=[]).fit(make_transactions(100, seed=0))
        >>> json.loads(json.dumps(tf.to_dict()))["kind"]
        'TransactionFeatures'
        """
        check_fitted(self, "feature_names_out_")
        params = self.get_params()
        # ordered mappings become lists of pairs: feature order survives JSON writers that sort keys
        if isinstance(params["windows"], dict):
            params["windows"] = list(params["windows"].items())
        if isinstance(params["other_entities"], dict):
            params["other_entities"] = [
                [col, list(w.items()) if isinstance(w, dict) else w]
                for col, w in params["other_entities"].items()
            ]
        return {
            "kind": type(self).__name__,
            "format_version": _FORMAT_VERSION,
            "params": _jsonable(params),
            "fitted": {
                "categoricals_": list(self.categoricals_),
                "frequencies_": _jsonable([[c, self.frequencies_[c]] for c in self.categoricals_]),
                "feature_names_out_": list(self.feature_names_out_),
                "hot_keys_": _jsonable([[c, v] for c, v in getattr(self, "hot_keys_", {}).items()]),
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> TransactionFeatures:
        """Rebuild a fitted transformer from :meth:`to_dict` output."""
        if not isinstance(d, dict) or d.get("kind") != cls.__name__:
            raise ParameterError(
                f"{cls.__name__}.from_dict needs the output of to_dict; got kind "
                f"{d.get('kind') if isinstance(d, dict) else type(d).__name__!r}."
            )
        if d.get("format_version") != _FORMAT_VERSION:
            raise ParameterError(
                f"{cls.__name__}.from_dict reads format_version {_FORMAT_VERSION}; got "
                f"{d.get('format_version')!r}. Fit and save it again with this version."
            )
        params = dict(d["params"])
        if isinstance(params.get("windows"), list):
            params["windows"] = {label: list(aggs) for label, aggs in params["windows"]}
        if isinstance(params.get("other_entities"), list):
            params["other_entities"] = {
                col: {label: list(aggs) for label, aggs in w} for col, w in params["other_entities"]
            }
        obj = cls(**params)
        fitted = d["fitted"]
        obj.categoricals_ = list(fitted["categoricals_"])
        obj.frequencies_ = {col: [list(p) for p in pairs] for col, pairs in fitted["frequencies_"]}
        # specs saved before hot keys existed: nothing split
        obj.hot_keys_ = {col: [list(p) for p in pairs] for col, pairs in fitted.get("hot_keys_", [])}
        obj._finish_fit()
        if obj.feature_names_out_ != list(fitted["feature_names_out_"]):
            raise ParameterError(
                f"{cls.__name__}.from_dict: the stored feature names do not match the parameters; "
                "the dictionary was edited or comes from another version."
            )
        return obj
