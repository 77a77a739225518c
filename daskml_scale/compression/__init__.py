"""Model compression: quantized ALS factors, pruned and distilled fraud models, measured trade-offs.

``compress(model, method=...)`` returns a model of the same kind (``recommend_all``, ``score``,
``save``/``load_model`` and the CLI take it unchanged) with ``compression_report_``: artifact bytes,
quality (NDCG@k or PR-AUC/ROC-AUC) and scoring rows/s before and after.

Examples
--------
>>> from daskml_scale.compression import compress, quantize, QuantizedALSRecommender
"""

from ._als import QuantizedALSRecommender, quantize_als
from ._api import METHODS, artifact_bytes, compress
from ._quantize import QuantizedFactors, quantize

__all__ = [
    "METHODS",
    "QuantizedALSRecommender",
    "QuantizedFactors",
    "artifact_bytes",
    "compress",
    "quantize",
    "quantize_als",
]
