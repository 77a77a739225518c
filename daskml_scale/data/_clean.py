"""Cleaning: clean rows, a quarantine of the rest with a ``reason``, exact conservation, and a spec.

A row failing any check goes to the quarantine once, with every failed check in ``reason`` joined by
``";"`` (``"negative_amount;missing_card_id"`` in check order). Later copies of a key among the valid
rows follow, with ``reason="duplicate_transaction_id"`` (see :mod:`._validate` for which copy is
first). ``rows_in == rows_out + rows_quarantined`` is checked on independent counts at the end of
the run; a mismatch raises instead of returning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import DaskMLScaleError, ParameterError, check_in
from ..storage import committed, read_parquet, record_meta, same_place
from ._quantiles import quantile_summary, quantiles_from_summary
from ._validate import (
    DUP,
    HELPERS,
    MASK,
    ORDER,
    Rules,
    ValidationReport,
    annotate,
    build_rules,
    counts,
    mark_duplicates,
    report_counts,
    source_position,
    token,
)

__all__ = ["CleanResult", "CleaningSpec", "clean"]

SOURCE_PARTITION, SOURCE_ROW = "source_partition", "source_row"


@dataclass
class CleaningSpec:
    """Imputation and clipping values learned on clean rows, to apply identically when scoring.

    Attributes
    ----------
    impute : dict
        ``{column: value}``: missing or non-finite values are replaced by ``value`` (an approximate
        median, computed distributedly from mergeable per-partition summaries, see ``_quantiles``).
    clip : dict
        ``{column: [low, high]}``: values are clipped to these approximate quantiles.
    quantiles : list of float or None
        The quantiles ``clip`` was learned at.

    Examples
    --------
    >>> spec = CleaningSpec(impute={"V1": 0.1}, clip={"V1": [-3.0, 3.0]})
    >>> CleaningSpec.from_dict(spec.to_dict()) == spec
    True
    """

    impute: dict = field(default_factory=dict)
    clip: dict = field(default_factory=dict)
    quantiles: list | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "impute": {k: float(v) for k, v in self.impute.items()},
            "clip": {k: [float(a), float(b)] for k, (a, b) in self.clip.items()},
            "quantiles": None if self.quantiles is None else [float(q) for q in self.quantiles],
        }

    @classmethod
    def from_dict(cls, d: dict) -> CleaningSpec:
        """Rebuild from :meth:`to_dict` output (or its JSON)."""
        if isinstance(d, str):
            d = json.loads(d)
        unknown = set(d) - {"impute", "clip", "quantiles"}
        if unknown:
            raise ParameterError(f"CleaningSpec.from_dict got unknown keys {sorted(unknown)}.")
        return cls(
            impute={k: float(v) for k, v in (d.get("impute") or {}).items()},
            clip={k: [float(a), float(b)] for k, (a, b) in (d.get("clip") or {}).items()},
            quantiles=d.get("quantiles"),
        )

    @property
    def columns(self) -> list[str]:
        return sorted(set(self.impute) | set(self.clip))

    def apply_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """Apply to one pandas frame: impute, then clip."""
        if not self.impute and not self.clip:
            return df
        df = df.copy()
        for col in self.columns:
            v = df[col].to_numpy(dtype="float64", na_value=np.nan)
            if col in self.impute:
                v = np.where(np.isfinite(v), v, self.impute[col])
            if col in self.clip:
                lo, hi = self.clip[col]
                v = np.clip(v, lo, hi)  # NaN stays NaN
            df[col] = v
        return df

    def apply(self, ddf: dd.DataFrame) -> dd.DataFrame:
        """Apply lazily to a Dask DataFrame (the scoring path).

        Examples
        --------
        >>> import pandas as pd, dask.dataframe as dd
        >>> ddf = dd.from_pandas(pd.DataFrame({"V1": [float("nan"), 9.0]}), npartitions=1)
        >>> CleaningSpec(impute={"V1": 0.0}, clip={"V1": [-1.0, 1.0]}).apply(ddf)["V1"].compute().tolist()  # small: 3 rows
        [0.0, 1.0]
        """
        missing = [c for c in self.columns if c not in ddf.columns]
        if missing:
            raise ParameterError(
                f"CleaningSpec applies to column(s) {missing}, absent from this table; apply it to data "
                "with the columns it was learned on."
            )
        meta = self.apply_frame(ddf._meta)
        return ddf.map_partitions(self.apply_frame, meta=meta)


class CleanResult(NamedTuple):
    """What :func:`clean` returns: ``clean, quarantine, report = clean(...)``."""

    clean: dd.DataFrame
    quarantine: dd.DataFrame
    report: ValidationReport

    @property
    def spec(self) -> CleaningSpec:
        """The imputation/clipping applied, to reuse at scoring time."""
        return CleaningSpec.from_dict(self.report.spec or {})


def _default_features(ddf, schema):
    return [
        c
        for c in ddf.columns
        if c not in schema.kinds
        and pd.api.types.is_numeric_dtype(ddf.dtypes[c])
        and not pd.api.types.is_bool_dtype(ddf.dtypes[c])
    ]


def _spec_from_summary(summary, columns, impute, clip) -> CleaningSpec:
    """The CleaningSpec learned from a computed quantile summary of the valid rows."""
    spec = CleaningSpec(quantiles=list(clip) if clip else None)
    if not columns:
        return spec
    qs = ([0.5] if impute else []) + (list(clip) if clip else [])
    q = quantiles_from_summary(summary, columns, qs)
    for col in columns:
        vals = dict(zip(qs, q[col]))
        if impute:
            spec.impute[col] = 0.0 if math.isnan(vals[0.5]) else vals[0.5]
        if clip and not (math.isnan(vals[clip[0]]) or math.isnan(vals[clip[1]])):
            spec.clip[col] = [vals[clip[0]], vals[clip[1]]]
    return spec


def _final_dtypes(df: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    for col, target in rules.plan.items():
        if target == "int":
            df[col] = df[col].astype("int64")
        elif target == "label":
            df[col] = df[col].astype("int64")
    return df


def _finish_clean(df, rules: Rules, spec: CleaningSpec):
    df = df.drop(columns=[c for c in (*HELPERS, ORDER, DUP) if c in df.columns])
    return spec.apply_frame(_final_dtypes(df, rules))


def _reason_strings(mask: np.ndarray, rules: Rules) -> np.ndarray:
    """``";"``-joined tokens of each row's failed checks: built once per distinct mask, then gathered."""
    if not len(mask):
        return np.array([], dtype=object)
    tokens = [token(r, c) for r, c in rules.checks]
    distinct, inverse = np.unique(mask, return_inverse=True)
    names = np.array(
        [";".join(t for i, t in enumerate(tokens) if (int(m) >> i) & 1) for m in distinct], dtype=object
    )
    return names[inverse.reshape(-1)]


def _finish_quarantine(df, rules: Rules, duplicate: bool):
    if duplicate:
        reason = np.full(len(df), rules.duplicate_token, dtype=object)
    else:
        reason = _reason_strings(df[MASK].to_numpy(), rules)
    part, row = source_position(df)
    out = df.drop(columns=[c for c in (*HELPERS, ORDER, DUP) if c in df.columns])
    out[SOURCE_PARTITION] = part
    out[SOURCE_ROW] = row
    out[S.REASON] = pd.array(reason, dtype="str")
    return out


def clean(
    ddf: dd.DataFrame,
    schema: S.TableSchema | str,
    *,
    bounds: dict | None = None,
    categories: str = "normalize",
    allowed: dict | None = None,
    duplicates: bool = True,
    impute: str | None = None,
    clip: tuple[float, float] | None = None,
    features: list[str] | None = None,
    spec: CleaningSpec | dict | None = None,
    time_unit: str | None = None,
    out=None,
    quarantine_out=None,
    npartitions: int | None = None,
    storage_options: dict | None = None,
    client=None,
) -> CleanResult:
    """Split a table into clean rows and a quarantine, conserving every row.

    The checks are those of :func:`validate`. Clean rows get canonical dtypes (int64 ids, float64
    amounts, datetime64[ns] timestamps, int64 labels, lower-case stripped categories). With
    ``duplicates=True`` the clean rows are hash-partitioned by key (one shuffle of the valid rows,
    without the bookkeeping columns but one int64 of source order) and sorted by key and time inside
    each partition (an ``argsort`` of the key, then only the runs of equal keys by time and order);
    otherwise the input partitioning is kept.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Canonical column names.
    schema : TableSchema or {"transactions", "interactions"}
    bounds, categories, allowed, duplicates, time_unit
        As in :func:`validate`.
    impute : {"median"}, optional
        Replace missing/non-finite values of ``features`` by their (approximate) median on valid rows.
    clip : (float, float), optional
        Clip ``features`` to these quantiles of the valid rows, e.g. ``(0.001, 0.999)``.
    features : list of str, optional
        Columns to impute/clip; default every numeric column outside the schema (``V1..V28``).
    spec : CleaningSpec or dict, optional
        Apply this learned spec instead of learning one (the scoring path). Excludes impute/clip.
    out, quarantine_out : str or path-like, optional
        Directories or fsspec URLs: write both as parquet in the same pass that counts, each
        committed by its manifest (rows and sha256 of every part) only once every part is written
        (:mod:`daskml_scale.storage`). Without them the report is computed now (one pass) and the
        returned collections stay lazy.

        Passes over the input: **one** in every case (counts, quantile summary for ``impute``/
        ``clip``, shuffle and writes share it; the writers receive the summary, as they run after
        the shuffle anyway), except ``impute``/``clip`` with ``out=`` and ``duplicates=False``:
        there no shuffle separates reading from writing, so the spec is learned in a first pass
        rather than holding every partition until it is known (two passes).
    npartitions : int, optional
        Partitions of the shuffle by key (default: as the input).
    storage_options : dict, optional
        Passed to the filesystem of ``out`` and ``quarantine_out``.
    client : distributed.Client, optional

    Returns
    -------
    CleanResult
        ``(clean, quarantine, report)``; ``quarantine`` holds the coerced columns plus
        ``source_partition``, ``source_row`` and ``reason``; ``result.spec`` is the CleaningSpec.

    Raises
    ------
    SchemaError
        Before any work and before anything is written, when the table is unusable.

    Examples
    --------
    >>> from daskml_scale.data import clean, make_transactions
    >>> res = clean(make_transactions(5_000, seed=0), "transactions")
    >>> res.report.rows_in == res.report.rows_out + res.report.rows_quarantined
    True
    """
    owner = "clean"
    rules = build_rules(
        ddf, schema, bounds=bounds, categories=categories, allowed=allowed, time_unit=time_unit, owner=owner
    )
    if impute is not None:
        check_in("impute", impute, ("median",), owner)
    if clip is not None:
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and 0.0 <= clip[0] < clip[1] <= 1.0):
            raise ParameterError(
                f"The 'clip' parameter of {owner} must be a pair of quantiles 0 <= low < high <= 1. Got {clip!r}."
            )
        clip = (float(clip[0]), float(clip[1]))
    if spec is not None and (impute is not None or clip is not None):
        raise ParameterError(f"{owner}: give spec= (learned before) or impute=/clip= (learn now), not both.")
    if (out is None) != (quarantine_out is None):
        raise ParameterError(f"{owner}: give both out= and quarantine_out=, or neither.")
    if out is not None and same_place(out, quarantine_out):
        raise ParameterError(f"{owner}: out and quarantine_out must be different directories.")
    feats = list(features) if features is not None else _default_features(ddf, rules.schema)
    absent = [c for c in feats if c not in ddf.columns]
    if absent:
        raise ParameterError(f"features= names column(s) {absent} not in the table.")
    if isinstance(spec, dict):
        spec = CleaningSpec.from_dict(spec)
    if spec is not None:
        missing = [c for c in spec.columns if c not in ddf.columns]
        if missing:
            raise ParameterError(f"The spec applies to column(s) {missing}, absent from this table.")

    ann = annotate(ddf, rules)
    valid = ann[ann[MASK] == 0]
    bad = ann[ann[MASK] != 0]
    dedupe = duplicates and bool(rules.key)
    learn = (feats, impute, clip) if spec is None and (impute or clip) else None
    summary = quantile_summary(valid, feats) if learn and feats else None
    if learn is None and spec is None:
        spec = CleaningSpec()
    elif learn is not None and (summary is None or (out is not None and not dedupe)):
        # without a shuffle, writers that waited for the spec would hold every partition: learn first
        (s,) = compute(summary, client=client) if summary is not None else (None,)  # small: summary
        spec, learn, summary = _spec_from_summary(s, *learn), None, None
    # else: the spec is learned in the same pass (the summary is computed with the counts, or, with
    # out=, handed to the writers, which run after the shuffle anyway)

    qmeta = _finish_quarantine(ann._meta.iloc[:0], rules, False)
    qparts = [bad.map_partitions(_finish_quarantine, rules, False, meta=qmeta)]
    if dedupe:
        marked = mark_duplicates(ann, rules, npartitions)
        keep, dups = marked[~marked[DUP]], marked[marked[DUP]]
        qparts.append(dups.map_partitions(_finish_quarantine, rules, True, meta=qmeta))
        n_dup = marked[DUP].sum()
    else:
        keep, n_dup = valid, None
    quarantine = dd.concat(qparts) if len(qparts) > 1 else qparts[0]
    total_lazy = counts(ann, rules)
    lazies = [total_lazy] + ([n_dup] if dedupe else []) + ([summary] if summary is not None else [])

    if out is None:
        res = compute(
            *lazies,
            keep.map_partitions(len).sum(),
            quarantine.map_partitions(len).sum(),
            client=client,
        )  # small: counts and the quantile summary
        if summary is not None:
            spec = _spec_from_summary(res[len(lazies) - 1], *learn)
        rows_out, rows_q = int(res[-2]), int(res[-1])
        report = _report(rules, res[0], res[1] if dedupe else None, rows_out, rows_q, spec)
        cmeta = _finish_clean(ann._meta.iloc[:0].copy(), rules, spec)
        clean_ddf = keep.map_partitions(_finish_clean, rules, spec, meta=cmeta)
        return CleanResult(clean_ddf, quarantine, report)

    # one writer task per partition on each side, so that no partition waits in memory for a second
    # consumer (a task writing clean rows and another writing duplicates would both need it)
    wmeta = _split_record_meta()
    with committed(out, storage_options) as st_out, committed(quarantine_out, storage_options) as st_q:
        writers = (st_out.writer, st_q.writer)
        w_bad = bad.map_partitions(_write_split, *writers, "bad", rules, spec, meta=wmeta)
        w_ok = (marked if dedupe else valid).map_partitions(
            _write_split, *writers, "ok", rules, spec, summary, learn, meta=wmeta, align_dataframes=False
        )
        extra = [summary] if summary is not None else []
        res = compute(total_lazy, w_bad, w_ok, *extra, client=client)  # small: counts, records, summary
        if summary is not None:
            spec = _spec_from_summary(res[-1], *learn)
        records = pd.concat([res[1], res[2]], ignore_index=True)
        st_out.add(records[records["side"] == "out"])
        st_q.add(records[records["side"] == "quarantine"])
        n_dup_written = int(records["dups"].sum()) if dedupe else None
        report = _report(rules, res[0], n_dup_written, st_out.rows, st_q.rows, spec)
        st_out.metadata["report"] = report.to_dict() if hasattr(report, "to_dict") else None
    return CleanResult(
        read_parquet(out, storage_options=storage_options),
        read_parquet(quarantine_out, storage_options=storage_options),
        report,
    )


def _split_record_meta() -> pd.DataFrame:
    return record_meta().assign(side=pd.Series([], dtype=object), dups=pd.Series([], dtype="int64"))


def _write_split(df, out_w, q_w, side, rules: Rules, spec, summary=None, learn=None, partition_info=None):
    """Write one partition's rows: quarantined ones (side "bad"), or clean ones and later duplicates.

    ``out_w`` and ``q_w`` are the staged outputs' part writers; returns the records of the parts
    written. ``summary`` (a computed quantile summary, given whole to every task) and ``learn``
    (columns, impute, clip) replace ``spec`` when the spec is learned in the same pass.
    """
    i = 0 if partition_info is None else int(partition_info["number"])
    if summary is not None:
        spec = _spec_from_summary(summary, *learn)
    recs = []
    if side == "bad":
        q = _finish_quarantine(df, rules, False)
        # even empty: fixes the schema
        recs.append(q_w.write_parquet(q, f"bad.{i:06d}.parquet") | {"side": "quarantine", "dups": 0})
    else:
        dup = df[DUP].to_numpy(dtype=bool) if DUP in df.columns else np.zeros(len(df), dtype=bool)
        keep = _finish_clean(df[~dup], rules, spec)
        recs.append(out_w.write_parquet(keep, f"part.{i:06d}.parquet") | {"side": "out", "dups": 0})
        if dup.any():
            q = _finish_quarantine(df[dup], rules, True)
            recs.append(
                q_w.write_parquet(q, f"dup.{i:06d}.parquet") | {"side": "quarantine", "dups": int(dup.sum())}
            )
    return pd.DataFrame(recs).astype({"rows": "int64", "bytes": "int64", "dups": "int64"})


def _report(rules, total, n_dup, rows_out, rows_q, spec) -> ValidationReport:
    c, fixed = report_counts(total, rules, None if n_dup is None else int(n_dup))
    rows_in, invalid = int(total["rows"]), int(total["invalid"])
    expected_q = invalid + (0 if n_dup is None else int(n_dup))
    if rows_in != rows_out + rows_q or rows_q != expected_q:
        raise DaskMLScaleError(
            f"Row conservation failed: {rows_in} rows in, {rows_out} out + {rows_q} quarantined "
            f"(expected {expected_q} quarantined). Nothing was written; this is a bug, please report it."
        )
    return ValidationReport(rules.schema.name, rows_in, rows_out, rows_q, c, fixed, spec.to_dict())
