"""Per-entity time-window behaviour features of transactions, exact and leak-free at any scale.

See ``docs/features.md`` for the exact definition of every feature.

Examples
--------
>>> from daskml_scale.data import make_transactions
>>> from daskml_scale.features import TransactionFeatures
>>> ddf = make_transactions(1_000, npartitions=2, seed=0)
>>> out = TransactionFeatures().fit_transform(ddf)
>>> sorted(set(TransactionFeatures.REQUIRED) - set(out.columns))
[]
"""

from ._transformer import AGGREGATIONS, DEFAULT_OTHER_ENTITIES, DEFAULT_WINDOWS, TransactionFeatures

__all__ = ["AGGREGATIONS", "DEFAULT_OTHER_ENTITIES", "DEFAULT_WINDOWS", "TransactionFeatures"]
