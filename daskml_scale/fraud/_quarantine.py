"""Which rows a fraud model can score: the checks of ``data.validate``, plus the model's own columns.

Scoring reuses the rules of :func:`daskml_scale.data.validate` / :func:`~daskml_scale.data.clean`
(the same coercion of wrong dtypes, unparseable values made missing, and the same reason tokens):

* ``missing_transaction_id``, ``missing_card_id``, ``missing_merchant_id``: a required id is missing
  or unparseable;
* ``invalid_timestamp``: a missing or unparseable time (behaviour features need one);
* ``nonfinite_amount``, ``negative_amount``: a missing, unparseable, infinite or negative amount;

and adds one check per extra numeric column the model was trained on (pass-through columns such as
``V1``): ``nonfinite_<column>`` for an unparseable or infinite value (a missing value is allowed, the
model treats it as missing). Category variants (``" POS"``) are normalised in place, as ``clean``
does. The label is not needed to score, so it is neither checked nor kept.

A row failing any check is set aside once, with every failed check in ``reason`` joined by ``";"``
(check order), as in ``clean``'s quarantine. Duplicate transaction ids are not judged here (that
needs a shuffle by id): run ``data.clean`` first when the source may repeat rows.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import schema as S
from ..data._clean import CleaningSpec, _finish_clean, _finish_quarantine
from ..data._validate import MASK, Rules, annotate_frame, build_rules, counts, report_counts
from ..errors import SchemaError

__all__ = ["Checked", "check_rows", "raise_if_bad", "summarize"]


class Checked(NamedTuple):
    """A table split lazily by the scoring checks."""

    good: object  # dask DataFrame: rows to score, canonical dtypes, categories normalised
    bad: object  # dask DataFrame: coerced rows + source_partition, source_row, reason
    counts: object  # lazy pandas Series: rows, invalid, c0.. per check (see data._validate.counts)
    rules: Rules


def _extra_columns(model, ddf, owner: str) -> list[str]:
    """The model's pass-through numeric input columns (not amount, not behaviour features)."""
    feats = set() if model.features_ is None else {str(c) for c in model.features_.get_feature_names_out()}
    extras = [c for c in model.numeric_columns_ if c != S.AMOUNT and c not in feats]
    missing = [c for c in extras if c not in ddf.columns]
    if missing:
        raise SchemaError(
            f"{owner}: column {missing[0]!r} is missing; the model was trained with the extra numeric "
            f"column(s) {extras} and needs them to score ({len(missing)} absent). Add them to the input.",
            column=missing[0],
        )
    return extras


def _annotate(df: pd.DataFrame, base: Rules, extras: list, partition_info=None) -> pd.DataFrame:
    """``data._validate.annotate_frame``, plus one mask bit per extra model column (after base's)."""
    ann = annotate_frame(df, base, partition_info)
    mask = ann[MASK].to_numpy().copy()
    for i, col in enumerate(extras):
        raw = ann[col]
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
            v = raw.to_numpy(dtype="float64", na_value=np.nan)
        else:
            v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        # unparseable (present but not a number) or infinite; a missing value stays missing
        bad = (raw.notna().to_numpy(dtype=bool) & np.isnan(v)) | np.isinf(v)
        mask |= bad.astype(np.int64) << (len(base.checks) + i)
        ann[col] = v
    ann[MASK] = mask
    return ann


def check_rows(ddf, model, *, owner: str = "score", keep=()) -> Checked:
    """Coerce ``ddf`` and split it (lazily) into the rows ``model`` can score and the rest.

    ``keep``: columns carried to the output as they are; ``is_fraud`` is dropped (not needed to score)
    unless kept, and a kept label is never checked (a bad label does not stop a row being scored).

    Raises SchemaError, on metadata only, when a column is missing or has a kind that cannot be
    coerced (e.g. a boolean timestamp).
    """
    if S.IS_FRAUD in ddf.columns and S.IS_FRAUD not in keep:
        ddf = ddf.drop(columns=[S.IS_FRAUD])
    extras = _extra_columns(model, ddf, owner)
    unchecked = [S.IS_FRAUD] if S.IS_FRAUD in ddf.columns else []
    base = build_rules(ddf.drop(columns=unchecked), S.TRANSACTIONS, owner=owner)
    rules = dataclasses.replace(base, checks=base.checks + tuple(("nonfinite", c) for c in extras))
    meta = _annotate(ddf._meta.iloc[:0], base, extras)
    ann = ddf.map_partitions(
        _annotate, base, extras, meta=meta, enforce_metadata=False, align_dataframes=False
    )
    spec = CleaningSpec()
    ok = ann[ann[MASK] == 0]
    good = ok.map_partitions(_finish_clean, rules, spec, meta=_finish_clean(meta.copy(), rules, spec))
    nok = ann[ann[MASK] != 0]
    bad = nok.map_partitions(_finish_quarantine, rules, False, meta=_finish_quarantine(meta, rules, False))
    return Checked(good, bad, counts(ann, rules), rules)


def summarize(total, rules: Rules) -> dict:
    """``{"rows_in", "rows_bad", "counts": {reason: rows}}`` from the lazily computed counts."""
    c, _ = report_counts(total, rules, None)
    return {"rows_in": int(total["rows"]), "rows_bad": int(total["invalid"]), "counts": c}


def raise_if_bad(report: dict, rules: Rules, owner: str, what: str = "rows") -> None:
    """SchemaError naming the column, the rule and the count of the most common failure, if any."""
    if not report["rows_bad"]:
        return
    failing = sorted(((n, tok) for tok, n in report["counts"].items() if n), key=lambda x: (-x[0], x[1]))
    n, tok = failing[0]
    rule, col = next((r, c) for r, c in rules.checks if f"{r}_{c}" == tok)
    others = "".join(f"; {t}={k}" for k, t in failing[1:])
    raise SchemaError(
        f"{owner} (strict): {n} of {report['rows_in']} {what} fail the check {rule!r} on column {col!r} "
        f"({tok}={n}{others}; {report['rows_bad']} {what} in all). Nothing was written. Fix or drop "
        "them (daskml_scale.data.clean), or score without strict and with quarantine= (CLI: "
        "--quarantine DIR) to set them aside with a reason.",
        column=col,
    )
