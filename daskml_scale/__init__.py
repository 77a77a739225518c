"""daskml-scale: fraud detection and recommendations on tables too large for one machine, on Dask."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("daskml-scale")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .cluster import compute, connect, get_client
from .errors import (
    ArtifactError,
    DaskMLScaleError,
    NotFittedError,
    ParameterError,
    SchemaError,
)

__all__ = [
    "ArtifactError",
    "DaskMLScaleError",
    "NotFittedError",
    "ParameterError",
    "SchemaError",
    "__version__",
    "compute",
    "connect",
    "get_client",
]
