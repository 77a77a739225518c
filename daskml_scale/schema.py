"""Canonical schemas and column names: the one place where they are defined.

Two tables flow through the library.

Transactions (fraud)
    ``transaction_id`` int64, unique; ``timestamp`` datetime64[ns]; ``card_id`` and ``merchant_id``
    int64 or string; ``amount`` float64, >= 0; ``is_fraud`` 0/1 (absent when scoring); optional
    ``merchant_category`` and ``channel`` (strings); any further numeric column is passed through as
    a feature.

Interactions (recommendations)
    ``user_id`` and ``item_id`` int64 or string; optional ``timestamp`` datetime64[ns]; optional
    ``weight`` float64 (1.0 when absent).

Examples
--------
>>> from daskml_scale.schema import TRANSACTIONS
>>> TRANSACTIONS.required
('transaction_id', 'timestamp', 'card_id', 'merchant_id', 'amount')
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AMOUNT",
    "CARD_ID",
    "CHANNEL",
    "INTERACTIONS",
    "IS_FRAUD",
    "ITEM_ID",
    "MERCHANT_CATEGORY",
    "MERCHANT_ID",
    "RANK",
    "SCORE",
    "TIMESTAMP",
    "TRANSACTIONS",
    "TRANSACTION_ID",
    "TableSchema",
    "USER_ID",
    "WEIGHT",
    "IS_ALERT",
    "REASON",
]

# transactions
TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"
CARD_ID = "card_id"
MERCHANT_ID = "merchant_id"
AMOUNT = "amount"
IS_FRAUD = "is_fraud"
MERCHANT_CATEGORY = "merchant_category"
CHANNEL = "channel"
# interactions
USER_ID = "user_id"
ITEM_ID = "item_id"
WEIGHT = "weight"
# outputs
SCORE = "score"
RANK = "rank"
IS_ALERT = "is_alert"
REASON = "reason"


@dataclass(frozen=True)
class TableSchema:
    """Declaration of a canonical table: which columns exist and what kind each one is.

    Parameters
    ----------
    name : str
        ``"transactions"`` or ``"interactions"``.
    required : tuple of str
        Columns that must be present.
    optional : tuple of str
        Columns that may be present.
    kinds : dict
        Column -> kind, one of ``"int"``, ``"id"`` (int64 or string), ``"float"``, ``"datetime"``,
        ``"label"`` (0/1), ``"category"`` (string).
    key : tuple of str
        Columns that identify a row (duplicates are judged on these).
    entity : str
        The column data is sharded by (every entity in one partition).
    label : str or None
        The target column, absent when scoring.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    kinds: dict[str, str] = field(default_factory=dict)
    key: tuple[str, ...] = ()
    entity: str = ""
    label: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Required then optional columns, in canonical order."""
        return self.required + self.optional

    def kind(self, column: str) -> str | None:
        """The declared kind of ``column``, or None for a pass-through column."""
        return self.kinds.get(column)


TRANSACTIONS = TableSchema(
    name="transactions",
    required=(TRANSACTION_ID, TIMESTAMP, CARD_ID, MERCHANT_ID, AMOUNT),
    optional=(IS_FRAUD, MERCHANT_CATEGORY, CHANNEL),
    kinds={
        TRANSACTION_ID: "int",
        TIMESTAMP: "datetime",
        CARD_ID: "id",
        MERCHANT_ID: "id",
        AMOUNT: "float",
        IS_FRAUD: "label",
        MERCHANT_CATEGORY: "category",
        CHANNEL: "category",
    },
    key=(TRANSACTION_ID,),
    entity=CARD_ID,
    label=IS_FRAUD,
)

INTERACTIONS = TableSchema(
    name="interactions",
    required=(USER_ID, ITEM_ID),
    optional=(TIMESTAMP, WEIGHT),
    kinds={USER_ID: "id", ITEM_ID: "id", TIMESTAMP: "datetime", WEIGHT: "float"},
    key=(USER_ID, ITEM_ID, TIMESTAMP),
    entity=USER_ID,
    label=None,
)

SCHEMAS = {"transactions": TRANSACTIONS, "interactions": INTERACTIONS}
