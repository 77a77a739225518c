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

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute, persist
from ..errors import DaskMLScaleError, ParameterError, check_in
from ..storage import committed, read_parquet, record_meta, same_place
from ._quantiles import quantile_summary, quantiles_from_summary
from ._validate import (
    HELPERS,
    MASK,
    ORDER,
    PART,
    ROW,
    Rules,
    ValidationReport,
    annotate,
    build_rules,
    counts,
    first_copy_order,
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
    df = df.drop(columns=[c for c in (*HELPERS, ORDER) if c in df.columns])
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
    out = df.drop(columns=[c for c in (*HELPERS, ORDER) if c in df.columns])
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
    read_once: bool = True,
    storage_options: dict | None = None,
    client=None,
) -> CleanResult:
    """Split a table into clean rows and a quarantine, conserving every row.

    The checks are those of :func:`validate`. Clean rows get canonical dtypes (int64 ids, float64
    amounts, datetime64[ns] timestamps, int64 labels, lower-case stripped categories) and stay in the
    partition they were read from, in their order: a table partitioned by time stays so. With
    ``duplicates=True`` the later copies of a key are found by shuffling the valid rows' key, time
    and source position only (24 bytes a row, the position as the index; not the whole row: on one
    disk a full-row shuffle of a billion rows needs ~80 GB of scratch), sorting each shuffled
    partition by key (an ``argsort``, then only the runs of equal keys by time and position); their
    positions, few, are then routed back to the partitions they came from.

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

        Passes over the input with ``out=``: **one** when nothing is learned (no ``impute``/``clip``):
        each input partition is written (one task per partition, clean and quarantined parts) in
        the pass that counts and shuffles the keys, and only the partitions found to hold later
        copies are read again and rewritten (none when there are no duplicates); **two** with
        ``impute``/``clip`` (the counts, the quantile summary and the later copies' positions;
        then the writes, once the spec is known). Without ``out=`` the first pass runs now and
        the returned frames are the second, lazily.
    npartitions : int, optional
        Partitions of the shuffle by key (default: as the input).
    read_once : bool, default True
        With ``out=``, nothing to learn and duplicates checked: write the parts in the pass that
        shuffles the keys (one read). Its disk peak, where the output and the shuffle's scratch
        share a disk, is their sum (~27 + ~28 bytes a transaction row). ``False``: find the later
        copies first, then write (two reads), for a peak of the larger of the two: the order for a
        disk that cannot hold both.
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
    dedupe = duplicates and bool(rules.key)
    learn = (feats, impute, clip) if spec is None and (impute or clip) else None
    summary = quantile_summary(valid, feats) if learn and feats else None
    total_lazy = counts(ann, rules)
    later, total, n_dup = None, None, None
    # with out= and nothing to learn first, the parts are written in the pass that finds the later
    # copies; only the input partitions holding later copies are then read again and rewritten
    one_read = dedupe and out is not None and learn is None and read_once
    if dedupe and not one_read:
        # pass 1: the counts, the quantile summary and, from a shuffle of the valid rows' keys, times
        # and source positions only, where the later copies were read (few; kept on the workers,
        # each input partition's copies in one partition)
        later = _later_copies(valid, rules, npartitions, ann.npartitions)
        extra = [summary] if summary is not None else []
        later, total, n_dup, *s = _persist_with(
            later, [total_lazy, later.map_partitions(len).sum(), *extra], client
        )
        n_dup = int(n_dup)
        if summary is not None:
            spec = _spec_from_summary(s[0], *learn)
    elif summary is not None and out is not None:
        # nothing separates reading from writing here: learn the spec first (two passes)
        (s,) = compute(summary, client=client)  # small: summary
        spec, summary = _spec_from_summary(s, *learn), None
    if out is None and total is None:
        # small: counts and the quantile summary
        total, *s = compute(total_lazy, *([summary] if summary is not None else []), client=client)
        if summary is not None:
            spec = _spec_from_summary(s[0], *learn)
    spec = spec or CleaningSpec()

    if out is None:
        cmeta = _finish_clean(ann._meta.iloc[:0].copy(), rules, spec)
        qmeta = _finish_quarantine(ann._meta.iloc[:0], rules, False)
        rows_q = int(total["invalid"]) + (n_dup or 0)
        report = _report(rules, total, n_dup, int(total["rows"]) - rows_q, rows_q, spec)
        return CleanResult(
            _split_frames(ann, later, "clean", rules, spec, cmeta),
            _split_frames(ann, later, "quarantine", rules, spec, qmeta),
            report,
        )

    # the writing pass (pass 2 with duplicates): one task per input partition writes its clean rows,
    # its quarantined rows and its later copies, in the input's order and partitioning
    wmeta = _split_record_meta()
    with committed(out, storage_options) as st_out, committed(quarantine_out, storage_options) as st_q:
        writers = (st_out.writer, st_q.writer)
        if one_read:
            later = _later_copies(valid, rules, npartitions, ann.npartitions)
            records, total, n_dup = _write_then_rewrite(ann, later, total_lazy, writers, rules, spec, client)
        elif later is None:
            w = ann.map_partitions(_write_split, None, *writers, rules, spec, meta=wmeta)
            total, records = compute(total_lazy, w, client=client)  # small: counts, records
        else:
            w = dd.map_partitions(
                _write_split, ann, later, *writers, rules, spec, meta=wmeta, align_dataframes=False
            )
            (records,) = compute(w, client=client)  # small: one record per part written
        st_out.add(records[records["side"] == "out"])
        st_q.add(records[records["side"] == "quarantine"])
        n_dup_written = int(records["dups"].sum()) if dedupe else None
        if dedupe and n_dup_written != n_dup:
            raise DaskMLScaleError(
                f"clean: {n_dup_written} later copies were written, {n_dup} were found. Nothing was "
                "written; this is a bug, please report it."
            )
        report = _report(rules, total, n_dup_written, st_out.rows, st_q.rows, spec)
        st_out.metadata["report"] = report.to_dict() if hasattr(report, "to_dict") else None
    return CleanResult(
        read_parquet(out, storage_options=storage_options),
        read_parquet(quarantine_out, storage_options=storage_options),
        report,
    )


SOURCE = "_dms_source"  # the input partition a later copy was read from


def _key_frame(df: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """What pass 1 shuffles of the valid rows: the key and the time that decide the first copy, and
    as the index the source position packed in one int64 (P2P always carries the index: using it
    for the position makes a row 24 bytes instead of 32)."""
    keep = df[MASK].to_numpy() == 0
    time_col = rules.order[len(rules.key)] if len(rules.order) > len(rules.key) + 2 else None
    cols = list(rules.key) + ([time_col] if time_col is not None else [])
    order = (df[PART].to_numpy(dtype=np.int64) << 32) | df[ROW].to_numpy(dtype=np.int64)
    out = df[cols].set_axis(pd.Index(order, name=ORDER))
    return out if keep.all() else out[keep]


def _later_frame(df: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """The source positions of the later copies in one key-shuffled partition."""
    order = df.index.to_numpy(dtype=np.int64)
    perm, dup = first_copy_order(df.assign(**{ORDER: order}), rules)
    order = order[perm[dup]]
    return pd.DataFrame({SOURCE: order >> 32, ORDER: order})


def _later_copies(valid: dd.DataFrame, rules: Rules, npartitions, n_in: int) -> dd.DataFrame:
    """Lazy: partition ``i`` holds (as ``ORDER``) the positions of the later copies read from input
    partition ``i``. Two shuffles: the keys by key, then the (few) later copies by source."""
    slim = valid.map_partitions(_key_frame, rules, meta=_key_frame(valid._meta, rules))
    shuffled = slim.shuffle(on=list(rules.key), npartitions=npartitions or valid.npartitions)
    meta = _later_frame(shuffled._meta, rules)
    later = shuffled.map_partitions(_later_frame, rules, meta=meta, enforce_metadata=False)
    # partition i of the result covers sources [i, i + 1): the input's partitioning
    return later.set_index(SOURCE, divisions=list(range(n_in)) + [n_in - 1])


def _persist_with(collection, small: list, client):
    """Persist ``collection`` and compute the ``small`` results of the same graph: one pass."""
    persisted = persist(collection, *small, client=client)
    return [persisted[0], *compute(*persisted[1:], client=client)]


def _write_then_rewrite(ann, later, total_lazy, writers, rules: Rules, spec, client):
    """Clean with one read of the input where no later copies are: every input partition is written
    (clean and quarantined parts) in the pass that shuffles the keys and counts; the partitions that
    turn out to hold later copies (few when duplicates are rare) are read again and rewritten, their
    parts replaced under the same names. Returns (records of the parts, counts, number of later copies)."""
    wmeta = _split_record_meta()
    w = ann.map_partitions(_write_split, None, *writers, rules, spec, meta=wmeta)
    # one pass: the parts written, the counts, and the later copies (kept on the workers) with their
    # number per input partition (small: one int a partition)
    later, records, total, per_part = _persist_with(later, [w, total_lazy, later.map_partitions(len)], client)
    per_part = np.asarray(per_part, dtype=np.int64)
    again = np.flatnonzero(per_part)
    if len(again):
        ann_parts, later_parts = ann.to_delayed(), later.to_delayed()
        rewrite = dask.delayed(_write_split, pure=True)
        rewritten = compute(
            *[
                rewrite(
                    ann_parts[i], later_parts[i], *writers, rules, spec, partition_info={"number": int(i)}
                )
                for i in again
            ],
            client=client,
        )  # small: one record per part written
        records = pd.concat([records, *rewritten], ignore_index=True).drop_duplicates("path", keep="last")
    return records, total, int(per_part.sum())


def _split_later(df: pd.DataFrame, later) -> np.ndarray:
    """Which rows of an annotated input partition are later copies (from pass 1's positions)."""
    if later is None or not len(later):
        return np.zeros(len(df), dtype=bool)
    # ``later`` holds this partition's copies only: match on the row (the partition number from
    # partition_info would be 0 in a selection such as ``result.clean.partitions[4]``)
    rows = later[ORDER].to_numpy(dtype=np.int64) & 0xFFFFFFFF
    return np.isin(df[ROW].to_numpy(dtype=np.int64), rows)


def _split_part(df, later, side: str, rules: Rules, spec: CleaningSpec) -> pd.DataFrame:
    ok = df[MASK].to_numpy() == 0
    dup = _split_later(df, later) & ok
    if side == "clean":
        return _finish_clean(df[ok & ~dup], rules, spec)
    bad = _finish_quarantine(df[~ok], rules, False)
    if not dup.any():
        return bad
    return pd.concat([bad, _finish_quarantine(df[dup], rules, True)], ignore_index=True)


def _split_frames(ann, later, side: str, rules: Rules, spec: CleaningSpec, meta) -> dd.DataFrame:
    if later is None:
        return ann.map_partitions(_split_part, None, side, rules, spec, meta=meta)
    return dd.map_partitions(_split_part, ann, later, side, rules, spec, meta=meta, align_dataframes=False)


def _split_record_meta() -> pd.DataFrame:
    return record_meta().assign(side=pd.Series([], dtype=object), dups=pd.Series([], dtype="int64"))


def _write_split(df, later, out_w, q_w, rules: Rules, spec, partition_info=None):
    """Write one input partition: its clean rows, its quarantined rows (every failed check in
    ``reason``) and its later copies (``duplicate_<key>``). ``out_w`` and ``q_w`` are the staged
    outputs' part writers; returns the records of the parts written."""
    i = 0 if partition_info is None else int(partition_info["number"])
    ok = df[MASK].to_numpy() == 0
    dup = _split_later(df, later) & ok
    recs = [out_w.write_parquet(_finish_clean(df[ok & ~dup], rules, spec), f"part.{i:06d}.parquet")]
    recs[-1] |= {"side": "out", "dups": 0}
    # even empty: fixes the schema
    q = _finish_quarantine(df[~ok], rules, False)
    recs.append(q_w.write_parquet(q, f"bad.{i:06d}.parquet") | {"side": "quarantine", "dups": 0})
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
