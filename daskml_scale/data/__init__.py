"""Data: synthetic generators, readers, validation, cleaning, sharding and public datasets."""

from ._synthetic import make_interactions, make_transactions

__all__ = ["make_interactions", "make_transactions"]
