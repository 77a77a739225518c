"""implicit's own ALS as an oracle: the same matrix and initial factors, its loss per iteration."""

from __future__ import annotations

import implicit.cpu.als
import numpy as np
import pandas as pd
import scipy.sparse as sp
import threadpoolctl

from daskml_scale.recommend import _kernels as K


def implicit_oracle(
    ddf, *, factors, regularization, alpha, iterations, random_state=0, order=None, nudge=0.0
):
    """implicit's own ALS on the same matrix and the same initial factors, with its loss.

    Every parameter is given here, not read back from the model under test, so that a model that
    misuses one of them cannot pass by feeding the same mistake to the oracle. ``order``: the
    (user ids, item ids) row order of the matrix (default sorted); implicit's float32 results move by
    ~3e-5 relative when its rows are permuted, so an exact comparison uses the model's order.
    ``nudge``: start from user factors scaled by ``1 + nudge`` (implicit's own sensitivity).
    """
    df = ddf.compute()
    users, items = np.sort(df["user_id"].unique()), np.sort(df["item_id"].unique())
    if order is not None:
        assert set(order[0]) == set(users) and set(order[1]) == set(items)
        users, items = np.asarray(order[0]), np.asarray(order[1])
    C = sp.csr_matrix(
        (df["weight"].to_numpy(np.float32),
         (pd.Index(users).get_indexer(df["user_id"]), pd.Index(items).get_indexer(df["item_id"]))),
        shape=(len(users), len(items)),
    )  # fmt: skip
    C.sum_duplicates()
    losses = []
    with threadpoolctl.threadpool_limits(1, "blas"):
        ref = implicit.cpu.als.AlternatingLeastSquares(
            factors=factors, regularization=regularization, alpha=alpha,
            iterations=iterations, calculate_training_loss=True, random_state=0, num_threads=1,
        )  # fmt: skip
        ref.user_factors = K.init_factors(users, factors, random_state, 0) * np.float32(1 + nudge)
        ref.item_factors = K.init_factors(items, factors, random_state, 1)
        ref.fit(C, show_progress=False, callback=lambda it, el, loss: losses.append(loss))
    return ref, losses


def order_drift(ddf, losses, *, order, n_orders=3, **kw) -> float:
    """How far implicit's loss moves from ``losses`` (its run in ``order``) when only its float32
    summation order changes: the largest relative gap over ``n_orders`` seeded row permutations."""
    rng = np.random.default_rng(0)
    drift = 0.0
    for _ in range(n_orders):
        perm = (rng.permutation(order[0]), rng.permutation(order[1]))
        other = np.asarray(implicit_oracle(ddf, order=perm, **kw)[1])
        drift = max(drift, float(np.abs(other / np.asarray(losses) - 1).max()))
    return drift
