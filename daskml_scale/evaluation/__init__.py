"""Evaluation: exact out-of-core classification and ranking metrics, splitters and reports.

Classification metrics reduce (label, score[, weight, amount]) rows partition by partition to exact
per-distinct-score histograms merged in a tree reduction: ROC-AUC and average precision equal
scikit-learn's without collecting scores. Ranking metrics co-partition recommendations and truth by
user and compute per-user values inside partitions. Every metric takes ``compute=True``; with
``compute=False`` it returns a lazy value so several metrics come from one pass
(``daskml_scale.compute(a, b)``).
"""

from ._calibration import expected_calibration_error
from ._classification import (
    average_precision_score,
    brier_score_loss,
    classification_metrics,
    log_loss,
    roc_auc_score,
    score_histogram,
)
from ._curves import calibration_curve, gain_curve, pr_curve, roc_curve, score_distribution
from ._histogram import ScoreHistogram
from ._ranking import ranking_metrics, ranking_metrics_at
from ._report import ClassificationReport, RankingReport, Report
from ._split import leave_last_n_split, random_split, ratio_split, time_split
from ._thresholds import choose_threshold, expected_cost, precision_at_k, recall_at_fpr

__all__ = [
    "ClassificationReport",
    "RankingReport",
    "Report",
    "ScoreHistogram",
    "average_precision_score",
    "brier_score_loss",
    "calibration_curve",
    "choose_threshold",
    "classification_metrics",
    "expected_calibration_error",
    "expected_cost",
    "gain_curve",
    "leave_last_n_split",
    "log_loss",
    "pr_curve",
    "precision_at_k",
    "random_split",
    "ranking_metrics",
    "ranking_metrics_at",
    "ratio_split",
    "recall_at_fpr",
    "roc_auc_score",
    "roc_curve",
    "score_distribution",
    "score_histogram",
    "time_split",
]
