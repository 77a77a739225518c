"""daskml-scale: fraud detection and recommendations on tables too large for one machine, on Dask."""

import os
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version


def _numba_cache_dir() -> str:
    """Where numba keeps the compiled kernels: ``$XDG_CACHE_HOME/daskml-scale/numba`` (or ``~/.cache``).

    Never inside the installed package: numba's default writes ``__pycache__`` beside the sources,
    which leaves a ``site-packages/daskml_scale`` folder behind after ``pip uninstall`` or a switch to
    ``pip install -e``, and that empty folder then shadows the real package as a namespace package.
    Falls back to the temp directory when the home cache is not writable; ``$NUMBA_CACHE_DIR`` wins.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "daskml-scale", "numba")
    try:
        os.makedirs(path, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return os.path.join(tempfile.gettempdir(), "daskml-scale-numba-cache")


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache_dir()  # inherited by worker processes started later
    if "numba" in sys.modules:  # numba read its configuration already
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

try:
    __version__ = version("daskml-scale")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .cluster import compute, connect, get_client  # noqa: E402  (after the cache set-up above)
from .errors import (  # noqa: E402
    ArtifactError,
    DaskMLScaleError,
    FitError,
    InputError,
    NotFittedError,
    ParameterError,
    SchemaError,
)

__all__ = [
    "ArtifactError",
    "DaskMLScaleError",
    "FitError",
    "InputError",
    "NotFittedError",
    "ParameterError",
    "SchemaError",
    "__version__",
    "compute",
    "connect",
    "get_client",
]
