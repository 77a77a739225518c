"""Data: synthetic generators, readers, validation, cleaning, sharding and public datasets.

* :func:`read_transactions` / :func:`read_interactions`: parquet or CSV from any fsspec URL, mapped
  to the canonical schema (:mod:`daskml_scale.schema`), dtypes coerced.
* :func:`validate`: counts per rule and column, one pass. :func:`clean`: clean rows + a quarantine
  with a ``reason``, exact conservation, optional median imputation and quantile clipping recorded in
  a :class:`CleaningSpec`.
* :func:`write_sharded` / :func:`read_sharded`: hash-partitioned by an entity key, read back with one
  bucket per partition.
* :func:`load_movielens` / :func:`load_creditcard`: public datasets (see ``datasets/README.md``).
"""

from ._clean import CleaningSpec, CleanResult, clean
from ._datasets import load_creditcard, load_movielens
from ._readers import coerce, read_interactions, read_table, read_transactions
from ._shard import bucket_of, read_sharded, sharding_info, write_sharded
from ._synthetic import make_interactions, make_transactions
from ._validate import ValidationReport, validate

__all__ = [
    "CleanResult",
    "CleaningSpec",
    "ValidationReport",
    "bucket_of",
    "clean",
    "coerce",
    "load_creditcard",
    "load_movielens",
    "make_interactions",
    "make_transactions",
    "read_interactions",
    "read_sharded",
    "read_table",
    "read_transactions",
    "sharding_info",
    "validate",
    "write_sharded",
]
