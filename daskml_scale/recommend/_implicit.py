"""The ``engine="implicit"`` fit of :class:`ALSRecommender`: implicit's ALS on one worker.

The user blocks of the factorize are stacked into one CSR matrix on a worker, confidences applied
there, implicit fits it from the same seeded initial factors as the distributed engine, and the
factors stay on that worker, cut into the factorize's blocks.
"""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from ._matrix import apply_confidence, bm25_factors, bm25_stats_rows
from ._runner import worker_threads

__all__ = ["fit_implicit_task", "nth", "split_rows"]


def fit_implicit_task(blocks, user_ids, item_ids, conf, params, seed, device):
    """On one worker: stack the user blocks into the CSR matrix, apply confidences, fit implicit's ALS."""
    import scipy.sparse as sp
    import threadpoolctl

    C = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    user_ids = np.concatenate(user_ids) if len(user_ids) > 1 else user_ids[0]
    item_ids = np.concatenate(item_ids) if len(item_ids) > 1 else item_ids[0]
    bm25 = None
    if conf["confidence"] == "bm25":
        user_nnz, _ = bm25_stats_rows(C)
        _, item_sums = bm25_stats_rows(C.T.tocsr())
        bm25 = bm25_factors(user_nnz, item_sums, conf["k1"], conf["b"])
    C = apply_confidence(C, confidence=conf["confidence"], alpha=conf["alpha"], bm25=bm25, k1=conf["k1"])
    k = params["factors"]
    X0 = K.init_factors(user_ids, k, seed, 0)
    Y0 = K.init_factors(item_ids, k, seed, 1)
    losses, times = [], []

    def callback(iteration, elapsed, loss):
        times.append(float(elapsed))
        if loss is not None:
            losses.append(float(loss))

    with threadpoolctl.threadpool_limits(1, "blas"):
        if device == "cuda":
            import implicit.gpu
            import implicit.gpu.als

            model = implicit.gpu.als.AlternatingLeastSquares(alpha=1.0, random_state=seed, **params)
            model.user_factors = implicit.gpu.Matrix(X0)
            model.item_factors = implicit.gpu.Matrix(Y0)
        else:
            import implicit.cpu.als

            threads = params.pop("num_threads") or worker_threads()
            model = implicit.cpu.als.AlternatingLeastSquares(
                alpha=1.0, random_state=seed, num_threads=threads, **params
            )
            model.user_factors, model.item_factors = X0, Y0
        model.fit(C, show_progress=False, callback=callback)
        if device == "cuda":
            model = model.to_cpu()
    return (
        np.asarray(model.user_factors, dtype=np.float32),
        np.asarray(model.item_factors, dtype=np.float32),
        losses,
        times,
    )


def nth(x, i):
    return x[i]


def split_rows(F, offsets, b):
    return F[int(offsets[b]) : int(offsets[b + 1])]
