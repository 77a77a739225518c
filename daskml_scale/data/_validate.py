"""Validation: the rules, the per-row annotation, duplicate marking and the report.

Every row gets a bitmask, one bit per (rule, column) check, computed partition by partition. A row is
*valid* when its mask is 0. Duplicates are judged among valid rows only, after a shuffle on the key
(``transaction_id``; ``user_id, item_id, timestamp`` for interactions): the **first occurrence** of
a key is the one with the earliest ``timestamp``, ties broken by the original partition number and
then the row's position inside that partition (the order the rows were read in). Later copies are
duplicates. A row with other problems is never also judged a duplicate, so the first *valid* copy of
a key always stays.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import ParameterError, SchemaError, check_in
from ._readers import _meta_for, coerce_frame, plan_coercion

__all__ = ["ValidationReport", "validate"]

MASK, FIX, PART, ROW = "_dms_mask", "_dms_fix", "_dms_part", "_dms_row"
ORDER = "_dms_order"  # partition << 32 | row, in shuffled frames
HELPERS = (MASK, FIX, PART, ROW)


@dataclass(frozen=True)
class Rules:
    """The checks that apply to one table, derived from its schema, its dtypes and the options."""

    schema: S.TableSchema
    plan: dict
    checks: tuple  # ((rule, column), ...): bit i of the mask is checks[i]
    fixes: tuple  # category columns normalised in place (counted, not quarantined)
    bounds: dict
    allowed: dict
    key: tuple
    order: tuple  # sort columns that define "first": key's time column, then partition, row
    time_unit: str | None = None

    @property
    def duplicate_token(self) -> str:
        return f"duplicate_{self.key[0]}" if len(self.key) == 1 else f"duplicate_{self.schema.name[:-1]}"


def token(rule: str, column: str) -> str:
    return f"{rule}_{column}"


def build_rules(
    ddf: dd.DataFrame,
    schema: S.TableSchema,
    *,
    bounds: dict | None = None,
    categories: str = "normalize",
    allowed: dict | None = None,
    time_unit: str | None = None,
    owner: str = "validate",
) -> Rules:
    """Check the schema on metadata only (no data read) and list the checks; SchemaError if unusable."""
    if not isinstance(schema, S.TableSchema):
        if isinstance(schema, str) and schema in S.SCHEMAS:
            schema = S.SCHEMAS[schema]
        else:
            raise ParameterError(
                f"The 'schema' parameter of {owner} must be TRANSACTIONS, INTERACTIONS or one of "
                f"{{'transactions', 'interactions'}}. Got {schema!r} instead."
            )
    if not isinstance(ddf, dd.DataFrame):
        raise ParameterError(
            f"{owner} needs a dask DataFrame; got {type(ddf).__name__}. Use read_transactions / "
            "read_interactions, or dask.dataframe.from_pandas for small frames."
        )
    check_in("categories", categories, ("normalize", "quarantine"), owner)
    reserved = [c for c in ddf.columns if str(c).startswith("_dms_") or c == S.REASON]
    if reserved:
        raise SchemaError(
            f"Column(s) {reserved} use names reserved for validation bookkeeping; rename them.",
            column=reserved[0],
        )
    plan = plan_coercion(ddf.dtypes, schema, time_unit=time_unit)
    present = set(ddf.columns)
    checks, fixes = [], []
    for col in schema.columns:
        if col not in present:
            continue
        kind = schema.kind(col)
        if kind in ("id", "int") and col in schema.required:
            checks.append(("missing", col))
        elif kind == "datetime":
            checks.append(("invalid", col))
        elif kind == "float":
            checks += [("nonfinite", col), ("negative", col)]
        elif kind == "label":
            checks.append(("invalid", col))
        elif kind == "category":
            if categories == "quarantine":
                checks.append(("inconsistent", col))
            else:
                fixes.append(col)
    allowed = dict(allowed or {})
    for col, values in allowed.items():
        if col not in present or schema.kind(col) != "category":
            raise ParameterError(
                f"allowed= names {col!r}, which is not a category column of this {schema.name} table "
                f"(category columns present: {[c for c in schema.columns if schema.kind(c) == 'category' and c in present]})."
            )
        allowed[col] = frozenset(str(v).strip().lower() for v in values)
        checks.append(("unknown", col))
    clean_bounds = {}
    for col, pair in (bounds or {}).items():
        if col not in present:
            raise ParameterError(
                f"bounds= names {col!r}, which is not a column; columns: {list(ddf.columns)}."
            )
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ParameterError(f"bounds[{col!r}] must be a (low, high) pair, None for open; got {pair!r}.")
        lo, hi = pair
        if plan.get(col) in ("datetime", "epoch"):
            lo = None if lo is None else pd.Timestamp(lo)
            hi = None if hi is None else pd.Timestamp(hi)
        elif not pd.api.types.is_numeric_dtype(ddf.dtypes[col]) and plan.get(col) not in (
            "float",
            "int",
            "label",
        ):
            raise ParameterError(
                f"bounds= applies to numeric or timestamp columns; {col!r} is {ddf.dtypes[col]}."
            )
        clean_bounds[col] = (lo, hi)
        checks.append(("out_of_bounds", col))
    key = tuple(c for c in schema.key if c in present)
    time_col = S.TIMESTAMP if S.TIMESTAMP in present and S.TIMESTAMP not in key else None
    order = (*key, *((time_col,) if time_col else ()), PART, ROW)
    if len(checks) > 62:
        raise ParameterError(f"{owner} supports at most 62 checks; got {len(checks)}.")
    return Rules(schema, plan, tuple(checks), tuple(fixes), clean_bounds, allowed, key, order, time_unit)


def _float_values(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, np.dtype) and s.dtype == np.float64:
        return s.to_numpy()  # no copy
    return s.to_numpy(dtype="float64", na_value=np.nan)


def _isna(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, np.dtype):
        if s.dtype.kind in "iub":  # numpy ints and bools hold no missing values
            return np.zeros(len(s), dtype=bool)
        if s.dtype.kind in "Mm":
            return np.isnat(s.to_numpy())
    return s.isna().to_numpy(dtype=bool)


class _Category:
    """One category column, factorised: ``strip().lower()`` and the checks run on distinct values only."""

    def __init__(self, s: pd.Series):
        self.s = s
        self.codes, uniques = pd.factorize(s)  # missing -> -1
        raw = pd.Series(uniques, dtype=s.dtype)
        self.norm = raw.str.strip().str.lower()
        self.differs = self._gather((self.norm != raw).to_numpy(dtype=bool, na_value=False))

    def _gather(self, per_value: np.ndarray) -> np.ndarray:
        return np.append(per_value, False)[self.codes]  # code -1 (missing) -> False

    def unknown(self, allowed) -> np.ndarray:
        return self._gather(~self.norm.isin(allowed).to_numpy(dtype=bool, na_value=False))

    def normalized(self) -> pd.Series:
        return pd.Series(self.norm.array.take(self.codes, allow_fill=True), index=self.s.index)


def _row_checks(
    df: pd.DataFrame, rules: Rules, normalized: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bitmask of failed checks, and bitmask of repaired category columns, for one coerced partition.

    Vectorised: one numpy pass per check; a float column is converted once for all its checks and a
    category column normalised once (``normalized``, when given, receives ``{column: (norm, differs)}``
    so that the caller reuses them instead of normalising again). Category columns are factorised
    first, so ``strip().lower()`` and ``allowed`` run once per distinct value, not once per row.
    """
    n = len(df)
    mask = np.zeros(n, dtype=np.int64)
    floats: dict = {}
    cats = {} if normalized is None else normalized

    def fv(col):
        if col not in floats:
            floats[col] = _float_values(df[col])
        return floats[col]

    def nv(col):
        if col not in cats:
            cats[col] = _Category(df[col])
        return cats[col]

    for bit, (rule, col) in enumerate(rules.checks):
        s = df[col]
        if rule == "missing" or (rule == "invalid" and rules.schema.kind(col) == "datetime"):
            bad = _isna(s)
        elif rule == "invalid":  # label
            if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu":
                v = s.to_numpy()
                bad = (v != 0) & (v != 1)
            else:
                v = fv(col)
                bad = ~((v == 0.0) | (v == 1.0))
        elif rule == "nonfinite":
            bad = ~np.isfinite(fv(col))
        elif rule == "negative":
            bad = fv(col) < 0
        elif rule == "inconsistent":
            bad = nv(col).differs
        elif rule == "unknown":
            bad = nv(col).unknown(rules.allowed[col])
        else:  # out_of_bounds
            lo, hi = rules.bounds[col]
            bad = np.zeros(n, dtype=bool)
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                if lo is not None:
                    bad |= (s < lo).to_numpy(dtype=bool, na_value=False)
                if hi is not None:
                    bad |= (s > hi).to_numpy(dtype=bool, na_value=False)
            else:
                v = fv(col)
                v = np.where(np.isfinite(v), v, np.nan)  # non-finite values have their own rule
                if lo is not None:
                    bad |= v < float(lo)
                if hi is not None:
                    bad |= v > float(hi)
        if bad.any():  # usually few rows: set their bit only
            mask[bad] |= np.int64(1) << bit
    fixed = np.zeros(n, dtype=np.int64)
    for bit, col in enumerate(rules.fixes):
        bad = nv(col).differs
        if bad.any():
            fixed[bad] |= np.int64(1) << bit
    return mask, fixed


def annotate_frame(df: pd.DataFrame, rules: Rules, partition_info=None) -> pd.DataFrame:
    """Coerce one partition, normalise categories, and add the check mask, partition and row number."""
    part = 0 if partition_info is None else int(partition_info["number"])
    df = coerce_frame(df, rules.plan, rules.time_unit)
    cats: dict = {}
    mask, fixed = _row_checks(df, rules, cats)
    for col in rules.fixes:
        if cats[col].differs.any():  # else the column is already normal: keep it as it is
            df[col] = cats[col].normalized()
    df[MASK] = mask
    df[FIX] = fixed
    df[PART] = np.full(len(df), part, dtype=np.int64)
    df[ROW] = np.arange(len(df), dtype=np.int64)
    return df


def annotate(ddf: dd.DataFrame, rules: Rules) -> dd.DataFrame:
    meta = _meta_for(ddf._meta, rules.plan, rules.time_unit)
    meta = meta.assign(**{c: np.int64(0) for c in HELPERS}).iloc[:0]
    return ddf.map_partitions(
        annotate_frame, rules, meta=meta, enforce_metadata=False, align_dataframes=False
    )


def _count_columns(rules: Rules) -> list[str]:
    return (
        ["rows", "invalid"]
        + [f"c{i}" for i in range(len(rules.checks))]
        + [f"f{i}" for i in range(len(rules.fixes))]
    )


def count_frame(df: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row of counts for one annotated partition: rows, invalid rows, failures per check, repairs."""
    mask = df[MASK].to_numpy()
    fixed = df[FIX].to_numpy()
    vals = [len(df), int((mask != 0).sum())]
    vals += [int(((mask >> i) & 1).sum()) for i in range(len(rules.checks))]
    vals += [int(((fixed >> i) & 1).sum()) for i in range(len(rules.fixes))]
    return pd.DataFrame([vals], columns=_count_columns(rules), dtype="int64")


def counts(ann: dd.DataFrame, rules: Rules):
    meta = pd.DataFrame({c: pd.Series([], dtype="int64") for c in _count_columns(rules)})
    return ann.map_partitions(count_frame, rules, meta=meta, enforce_metadata=False).sum()


def source_position(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(partition, row) where each row was read: from ``PART``/``ROW``, or unpacked from ``ORDER``."""
    if ORDER in df.columns:
        order = df[ORDER].to_numpy(dtype=np.int64)
        return order >> 32, order & 0xFFFFFFFF
    return df[PART].to_numpy(dtype=np.int64), df[ROW].to_numpy(dtype=np.int64)


def _sort_codes(s: pd.Series) -> np.ndarray:
    """int64 codes that order like the values of a key column without missing values (valid rows)."""
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuMm":
        return (
            s.to_numpy().view(np.int64) if s.dtype.kind in "Mm" else s.to_numpy().astype(np.int64, copy=False)
        )
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64)
    return pd.factorize(s, sort=True)[0].astype(np.int64, copy=False)


def first_copy_order(df: pd.DataFrame, rules: Rules) -> tuple[np.ndarray, np.ndarray]:
    """The permutation sorting valid rows by (key, timestamp, source order), and the later copies.

    Returns ``(order, dup)``: ``df.take(order)`` is sorted by the key, then the timestamp, then where
    the row was read (partition, row); ``dup[i]`` says that sorted row ``i`` repeats the key of sorted
    row ``i - 1``. Only the key columns are sorted (numpy, not the whole frame). For a single integer
    key the sort is one ``argsort`` of the ids, and only the runs of equal ids (the duplicates, few)
    are then sorted by timestamp and order.
    """
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    keys = [_sort_codes(df[c]) for c in rules.key]
    time_col = rules.order[len(rules.key)] if len(rules.order) > len(rules.key) + 2 else None
    ties = []  # least significant first, for lexsort
    if ORDER in df.columns:
        ties.append(df[ORDER].to_numpy(dtype=np.int64))
    else:
        ties += [df[ROW].to_numpy(dtype=np.int64), df[PART].to_numpy(dtype=np.int64)]
    if time_col is not None:
        ties.append(_sort_codes(df[time_col]))
    if len(keys) == 1:
        k = keys[0]
        perm = np.argsort(k)  # ties need no stability: their runs are sorted next
        sk = k[perm]
        same = sk[1:] == sk[:-1]
        if same.any():
            in_run = np.zeros(n, dtype=bool)
            in_run[1:] |= same
            in_run[:-1] |= same
            pos = np.flatnonzero(in_run)  # runs of equal ids, contiguous and in id order
            sub = perm[pos]
            sub = sub[np.lexsort([t[sub] for t in ties] + [k[sub]])]
            perm[pos] = sub
    else:
        perm = np.lexsort(ties + keys[::-1])
        same = np.ones(n - 1, dtype=bool)
        for k in keys:
            sk = k[perm]
            same &= sk[1:] == sk[:-1]
    dup = np.zeros(n, dtype=bool)
    dup[1:] = same
    return perm, dup


def _dup_count_frame(df: pd.DataFrame, key: list) -> pd.DataFrame:
    return pd.DataFrame({"dups": [int(df.duplicated(subset=key).sum()) if len(df) else 0]}, dtype="int64")


def count_duplicates(valid: dd.DataFrame, rules: Rules, npartitions: int | None = None):
    """Lazy count of later copies among valid rows: rows minus distinct keys, per key bucket.

    Which copy is *first* does not change how many copies are *later*, so only the key columns are
    shuffled (8 bytes per row for one integer id), and nothing is sorted.
    """
    key = list(rules.key)
    shuffled = valid[key].shuffle(on=key, npartitions=npartitions or valid.npartitions)
    meta = pd.DataFrame({"dups": pd.Series([], dtype="int64")})
    return shuffled.map_partitions(_dup_count_frame, key, meta=meta, enforce_metadata=False)["dups"].sum()


@dataclass
class ValidationReport:
    """Counts of a validation or cleaning run.

    Attributes
    ----------
    table : str
        ``"transactions"`` or ``"interactions"``.
    rows_in, rows_out, rows_quarantined : int
        Exactly ``rows_in == rows_out + rows_quarantined``.
    counts : dict
        Rows failing each check, by reason token (``"negative_amount"``, ``"duplicate_transaction_id"``).
        A row failing several checks counts once under each, but once only in ``rows_quarantined``.
    repaired : dict
        Category values normalised in place (``"inconsistent_channel"``), not quarantined.
    spec : dict or None
        The :class:`CleaningSpec` applied (imputation and clipping), JSON-serialisable.
    """

    table: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    counts: dict = field(default_factory=dict)
    repaired: dict = field(default_factory=dict)
    spec: dict | None = None

    @property
    def passed(self) -> bool:
        """True when no row was quarantined."""
        return self.rows_quarantined == 0

    @property
    def by_rule(self) -> dict:
        """``{rule: {column: count}}``, the same counts nested by rule."""
        out: dict = {}
        for tok, n in self.counts.items():
            rule, col = _split_token(tok)
            out.setdefault(rule, {})[col] = n
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable form (what the CLI prints)."""
        return {
            "table": self.table,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_quarantined": self.rows_quarantined,
            "conserved": self.rows_in == self.rows_out + self.rows_quarantined,
            "counts": dict(self.counts),
            "rules": self.by_rule,
            "repaired": dict(self.repaired),
            "spec": self.spec,
        }

    def __str__(self) -> str:
        bad = ", ".join(f"{k}={v}" for k, v in self.counts.items() if v) or "none"
        return (
            f"{self.table}: {self.rows_in} rows in, {self.rows_out} out, {self.rows_quarantined} "
            f"quarantined; failures: {bad}"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(r)}</td><td>{html.escape(c)}</td><td style='text-align:right'>{n:,}</td></tr>"
            for r, cols in self.by_rule.items()
            for c, n in cols.items()
        )
        fixed = "".join(f"<li>{html.escape(k)}: {v:,}</li>" for k, v in self.repaired.items() if v)
        status = "conserved" if self.rows_in == self.rows_out + self.rows_quarantined else "NOT CONSERVED"
        return (
            f"<div><b>ValidationReport ({html.escape(self.table)})</b>: {self.rows_in:,} rows in = "
            f"{self.rows_out:,} out + {self.rows_quarantined:,} quarantined ({status})"
            "<table><thead><tr><th>rule</th><th>column</th><th>rows</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            + (f"<div>repaired in place:<ul>{fixed}</ul></div>" if fixed else "")
            + "</div>"
        )


_RULES = (
    "out_of_bounds",
    "nonfinite",
    "negative",
    "missing",
    "invalid",
    "inconsistent",
    "unknown",
    "duplicate",
)


def _split_token(tok: str) -> tuple[str, str]:
    for rule in _RULES:
        if tok.startswith(rule + "_"):
            return rule, tok[len(rule) + 1 :]
    return tok, ""


def report_counts(total: pd.Series, rules: Rules, duplicates: int | None) -> tuple[dict, dict]:
    c = {token(r, col): int(total[f"c{i}"]) for i, (r, col) in enumerate(rules.checks)}
    if duplicates is not None:
        c[rules.duplicate_token] = int(duplicates)
    fixed = {token("inconsistent", col): int(total[f"f{i}"]) for i, col in enumerate(rules.fixes)}
    return c, fixed


def validate(
    ddf: dd.DataFrame,
    schema: S.TableSchema | str,
    *,
    bounds: dict | None = None,
    categories: str = "normalize",
    allowed: dict | None = None,
    duplicates: bool = True,
    time_unit: str | None = None,
    client=None,
) -> ValidationReport:
    """Count, in one pass, the rows that :func:`clean` would quarantine, per rule and column.

    Rules: missing required ids (``missing_card_id``), missing or unparseable timestamps
    (``invalid_timestamp``), non-finite or negative amounts/weights (``nonfinite_amount``,
    ``negative_amount``), labels outside {0, 1} (``invalid_is_fraud``), category variants that differ
    from their stripped lower-case form (repaired in place by default, quarantined as
    ``inconsistent_<column>`` with ``categories="quarantine"``), categories outside ``allowed``
    (``unknown_<column>``), values outside ``bounds`` (``out_of_bounds_<column>``), and later copies
    of a key among otherwise valid rows (``duplicate_transaction_id``; ``duplicate_interaction`` on
    ``user_id, item_id, timestamp``). One pass over the input. Duplicates need a shuffle, of the key
    columns of the valid rows only (their count is rows minus distinct keys, whichever copy is
    first); the ids never reach the client. Nothing is written.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Canonical column names (see :func:`read_transactions`); dtypes are coerced here.
    schema : TableSchema or {"transactions", "interactions"}
    bounds : dict, optional
        ``{column: (low, high)}``, inclusive, None for an open side; timestamps as strings.
    categories : {"normalize", "quarantine"}
        What to do with case/whitespace variants of a category.
    allowed : dict, optional
        ``{category_column: [values]}``; others are quarantined.
    duplicates : bool
        Judge duplicate keys (needs a shuffle).
    time_unit : str, optional
        Unit of a numeric timestamp column.
    client : distributed.Client, optional

    Returns
    -------
    ValidationReport
        ``rows_out`` and ``rows_quarantined`` are what :func:`clean` would give.

    Raises
    ------
    SchemaError
        Before any data is read, when the table is unusable.

    Examples
    --------
    >>> from daskml_scale.data import make_transactions, validate
    >>> validate(make_transactions(5_000, seed=0), "transactions").rows_quarantined
    0
    """
    rules = build_rules(
        ddf, schema, bounds=bounds, categories=categories, allowed=allowed, time_unit=time_unit
    )
    ann = annotate(ddf, rules)
    total_lazy = counts(ann, rules)
    if duplicates and rules.key:
        n_dup_lazy = count_duplicates(ann[ann[MASK] == 0], rules)
        total, n_dup = compute(total_lazy, n_dup_lazy, client=client)  # small: counts
    else:
        (total,) = compute(total_lazy, client=client)  # small: counts
        n_dup = None
    c, fixed = report_counts(total, rules, n_dup if duplicates and rules.key else None)
    rows_in = int(total["rows"])
    quarantined = int(total["invalid"]) + int(n_dup or 0)
    return ValidationReport(rules.schema.name, rows_in, rows_in - quarantined, quarantined, c, fixed)
