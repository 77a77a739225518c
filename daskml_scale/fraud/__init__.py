"""Fraud models: distributed XGBoost (CPU/GPU) and incremental SGD, thresholds, artifacts, batch scoring.

Examples
--------
>>> from daskml_scale.fraud import XGBoostFraudClassifier, score, load_model
"""

from ._artifacts import load_model
from ._scoring import score, tune_threshold
from ._sgd import SGDFraudClassifier
from ._xgboost import XGBoostFraudClassifier

__all__ = [
    "SGDFraudClassifier",
    "XGBoostFraudClassifier",
    "load_model",
    "score",
    "tune_threshold",
]
