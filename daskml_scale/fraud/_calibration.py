"""Negative downsampling and the calibration that maps a fraud model's margin to a probability.

``_downsample`` keeps every fraud row and a seeded, per-row share of the legitimate ones (the same rows
whatever the partitioning); ``fit_platt`` fits Platt's two parameters on the validation days, one pass
over the margins per Newton step, 6 numbers per partition reduced in a tree. The models apply both in
``FraudClassifierBase`` (prior correction for weights and the sampling rate, then Platt).
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
from scipy.special import expit

from .. import schema as S
from ..cluster import tree_reduce
from ..data._synthetic import _GOLD, _mix
from ._base import compute_small

__all__ = ["fit_platt"]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 (the generators' stateless mix, after its golden-ratio step): nearby ids give
    unrelated values."""
    return _mix(x + _GOLD)


def _downsample(pdf: pd.DataFrame, rate: float, seed: int) -> pd.DataFrame:
    """Keep every fraud row and the legitimate rows whose (id, seed) hash falls below ``rate``."""
    if not len(pdf):
        return pdf
    ids = pdf[S.TRANSACTION_ID]
    if pd.api.types.is_integer_dtype(ids.dtype):
        x = ids.to_numpy(dtype="int64").view("uint64")
    else:  # string ids: pandas' stable hash of their text
        x = pd.util.hash_array(ids.astype(str).to_numpy(dtype=object), categorize=False)
    h = _splitmix64(x ^ _splitmix64(np.array([seed], dtype="uint64"))[0])
    u = (h >> np.uint64(11)).astype("float64") / float(1 << 53)  # uniform in [0, 1)
    keep = (pdf[S.IS_FRAUD].to_numpy() == 1) | (u < rate)
    return pdf[keep]


def _platt_sums(pdf, a, b):
    """Loss, gradient and Hessian of the logistic loss of ``expit(a * m + b)`` over one partition of
    ``(is_fraud, margin)``: 6 numbers."""
    m = pdf["margin"].to_numpy(dtype="float64")
    y = pdf[S.IS_FRAUD].to_numpy(dtype="float64")
    z = a * m + b
    p = expit(z)
    r, h = p - y, p * (1.0 - p)
    loss = np.logaddexp(0.0, z).sum() - (y * z).sum()
    return np.array([loss, (r * m).sum(), r.sum(), (h * m * m).sum(), (h * m).sum(), h.sum()])


def _add(*parts):
    return np.sum(parts, axis=0)


def fit_platt(margins, *, client=None, max_iter: int = 100, tol: float = 1e-10):
    """Platt's two parameters ``(a, b)`` maximising the likelihood of ``expit(a * m + b)`` (no penalty).

    Newton's method with step halving, from ``(1, 0)``: each iteration is one pass over ``margins``
    (a Dask DataFrame ``is_fraud, margin``, persisted), every partition reduced to its loss, gradient
    and Hessian (6 numbers) and added in a tree; only those reach the client.

    Returns
    -------
    a, b, n_iter
    """
    parts = margins.to_delayed()

    def sums(a, b):
        total = tree_reduce([dask.delayed(_platt_sums)(p, a, b) for p in parts], _add)
        (out,) = compute_small(total, client=client)  # small: 6 numbers
        return out

    theta = np.array([1.0, 0.0])
    loss, ga, gb, haa, hab, hbb = sums(*theta)
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        g, H = np.array([ga, gb]), np.array([[haa, hab], [hab, hbb]])
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, g, rcond=None)[0]
        for _ in range(30):  # step halving: never accept a larger loss
            new = theta + step
            out = sums(*new)
            if np.isfinite(out[0]) and out[0] <= loss + 1e-12 * abs(loss):
                break
            step = step / 2.0
        else:
            break
        theta, (loss, ga, gb, haa, hab, hbb) = new, out
        if np.max(np.abs(step)) <= tol * max(1.0, np.max(np.abs(theta))):
            break
    return float(theta[0]), float(theta[1]), n_iter
