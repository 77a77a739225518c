"""One exception hierarchy for the library.

Every error the library raises on purpose derives from :class:`DaskMLScaleError`, so callers can catch
the library's own failures apart from bugs. All of them pickle cleanly, so an error raised inside a
Dask task on a worker arrives intact on the client.

Messages follow one format: they name the column or parameter, the rule that was broken, a count
where rows are concerned, and the fix.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "DaskMLScaleError",
    "FitError",
    "InputError",
    "NotFittedError",
    "ParameterError",
    "SchemaError",
]


class DaskMLScaleError(Exception):
    """Base class of every error raised on purpose by daskml-scale."""


class SchemaError(DaskMLScaleError, ValueError):
    """The data cannot be used as given: a required column is missing or has the wrong kind.

    Raised before any long work starts, and before anything is written.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it.
    column : str, optional
        The offending column.
    """

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column

    def __reduce__(self):
        return (type(self), (self.args[0], self.column))


class ParameterError(DaskMLScaleError, ValueError):
    """A parameter of a function or estimator is outside its allowed values."""


class NotFittedError(DaskMLScaleError, AttributeError):
    """An estimator was used before ``fit``."""


class FitError(DaskMLScaleError, RuntimeError):
    """A fit could not go on: its state became invalid (non-finite factors or coefficients).

    The message names the iteration and what to change (scale the input, lower a learning rate or alpha).
    """


class InputError(DaskMLScaleError, OSError):
    """An input path cannot be read: it does not exist, holds no data files, or a file is not readable.

    Raised before any long work starts; the message names the path and the fix.
    """


class ArtifactError(DaskMLScaleError, OSError):
    """A saved model or dataset directory is missing a file, fails its checksum, or is not ours."""


def check_in(name: str, value, allowed, owner: str) -> None:
    """Raise :class:`ParameterError` in scikit-learn's format unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        choices = "{" + ", ".join(repr(a) for a in allowed) + "}"
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be one of {choices}. Got {value!r} instead."
        )


def check_fitted(estimator, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the learned ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet: call fit first.")
