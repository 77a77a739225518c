"""ALSRecommender: implicit-feedback ALS with two engines behind one API.

``engine="implicit"``
    The per-partition COO pieces are sent to ONE worker, which assembles the CSR matrix and runs
    implicit's ``AlternatingLeastSquares`` there (CPU, or implicit's CUDA build with
    ``device="cuda"``). Fast while the matrix fits one machine.
``engine="distributed"``
    Users and items are cut into contiguous blocks; the user blocks (CSR rows) and item blocks (CSR
    of the transpose) are built from per-partition pieces and stay on the workers. Each
    half-iteration gathers the other side's factors, broadcasts them and their Gram matrix once,
    and solves every block in parallel with implicit's conjugate-gradient kernel (or its numpy
    twin). No process ever holds the whole matrix.

Both engines use implicit's objective: confidences ``c = alpha * f(w)``, weighted squared error
``sum c_ui (p_ui - x_u.y_i)^2`` over all pairs (``c = 1`` for unobserved ones) plus
``regularization * (|X|^2 + |Y|^2)``, unscaled by counts; both start from the same factors
(:func:`~daskml_scale.recommend._kernels.init_rows`), so their loss trajectories agree.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import FitError, ParameterError, check_fitted, check_in
from ..storage import register_kind
from . import _kernels as K
from ._artifacts import load_from
from ._matrix import (
    add_counts,
    apply_confidence,
    balanced_bounds,
    bm25_factors,
    bm25_stats_rows,
    build_block,
    build_id_maps,
    check_confidence_params,
    check_interactions,
    row_counts,
)
from ._runner import Runner, partition_coo, row_blocks, worker_threads

__all__ = ["ALSRecommender"]

ENGINES = ("implicit", "distributed")
DEVICES = ("cpu", "cuda")
KERNELS = ("auto", "implicit", "numpy")


def _check_number(name, value, owner, *, integer=False, minimum=0.0, strict=False):
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        rule = f"{'an int' if integer else 'a number'} {'>' if strict else '>='} {minimum:g}"
        raise ParameterError(f"The {name!r} parameter of {owner} must be {rule}. Got {value!r} instead.")


def _fit_implicit_task(coo, shape, conf, params, seed, device):
    """On one worker: assemble the CSR matrix, apply confidences, fit implicit's ALS there."""
    import threadpoolctl

    n_users, n_items = shape
    C = build_block([c for c in coo], n_users, n_items)
    bm25 = None
    if conf["confidence"] == "bm25":
        user_nnz, _ = bm25_stats_rows(C)
        _, item_sums = bm25_stats_rows(C.T.tocsr())
        bm25 = bm25_factors(user_nnz, item_sums, conf["k1"], conf["b"])
    C = apply_confidence(C, confidence=conf["confidence"], alpha=conf["alpha"], bm25=bm25, k1=conf["k1"])
    k = params["factors"]
    X0 = K.init_rows(0, n_users, k, seed, 0)
    Y0 = K.init_rows(0, n_items, k, seed, 1)
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
        int(C.nnz),
    )


def _gram(a):
    a = np.asarray(a, dtype=np.float64)
    return a.T @ a


class ALSRecommender(BaseEstimator):
    """Implicit-feedback matrix factorisation by alternating least squares, on Dask.

    Parameters
    ----------
    factors : int
        Number of latent factors.
    regularization : float
        L2 penalty on the factors (implicit's convention: not scaled by interaction counts).
    alpha : float
        Confidence scale: ``c = alpha * f(w)`` (implicit's convention).
    iterations : int
        ALS iterations (one user half-step and one item half-step each).
    engine : {"implicit", "distributed"}
        ``"implicit"`` fits implicit's ALS on one worker; ``"distributed"`` runs block ALS over all
        workers without gathering the matrix.
    device : {"cpu", "cuda"}
        ``"cuda"`` uses implicit's GPU build (engine ``"implicit"`` only).
    confidence : {"linear", "log", "bm25"}
        ``f(w)``: ``w`` (summed weights of duplicate pairs), ``log1p(w)``, or implicit's BM25 weighting
        of the items x users matrix (``bm25_k1``, ``bm25_b``).
    bm25_k1, bm25_b : float
        BM25 parameters (implicit's defaults).
    n_blocks : int, optional
        Blocks per side for the distributed engine; default one per worker thread (2 without a
        client). implicit's kernel recomputes the other side's Gram matrix for every block, so
        more blocks than threads cost time; more blocks lower the memory of each task.
    cg_steps : int
        Conjugate-gradient steps per half-iteration (implicit's default 3).
    kernel : {"auto", "implicit", "numpy"}
        Block solver of the distributed engine: implicit's compiled CG (``"auto"`` when importable)
        or the numpy implementation of the same update.
    compute_loss : bool
        Record implicit's training loss after every iteration in ``loss_history_``.
    num_threads : int
        Threads of implicit's solver in engine ``"implicit"`` (0: the worker's threads).
    random_state : int
        Seed of the initial factors (identical for both engines).

    Attributes
    ----------
    user_ids_, item_ids_ : ndarray
        Sorted distinct ids; a user's row in ``user_factors_`` is its position in ``user_ids_``.
    user_factors_, item_factors_ : ndarray of float32
    loss_history_ : list of float
        Training loss per iteration (empty unless ``compute_loss``).
    iteration_times_ : list of float
        Seconds per iteration.
    n_interactions_ : int
        Stored (user, item) pairs after duplicates were summed.

    Examples
    --------
    >>> from daskml_scale.data import make_interactions
    >>> from daskml_scale.recommend import ALSRecommender, recommend_all
    >>> ddf = make_interactions(20_000, n_users=300, n_items=100, seed=0)
    >>> model = ALSRecommender(factors=8, iterations=3, engine="distributed").fit(ddf)
    >>> model.user_factors_.shape
    (300, 8)
    >>> recs = recommend_all(model, n=5)  # lazy Dask DataFrame: user_id, item_id, score, rank
    """

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        engine: str = "implicit",
        device: str = "cpu",
        confidence: str = "linear",
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        n_blocks: int | None = None,
        cg_steps: int = 3,
        kernel: str = "auto",
        compute_loss: bool = False,
        num_threads: int = 0,
        random_state: int = 0,
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.engine = engine
        self.device = device
        self.confidence = confidence
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.n_blocks = n_blocks
        self.cg_steps = cg_steps
        self.kernel = kernel
        self.compute_loss = compute_loss
        self.num_threads = num_threads
        self.random_state = random_state

    # ------------------------------------------------------------------------------------ checks
    def _check_params(self):
        owner = type(self).__name__
        check_in("engine", self.engine, ENGINES, owner)
        check_in("device", self.device, DEVICES, owner)
        check_in("kernel", self.kernel, KERNELS, owner)
        check_confidence_params(self.confidence, self.alpha, owner)
        _check_number("factors", self.factors, owner, integer=True, minimum=1)
        _check_number("iterations", self.iterations, owner, integer=True, minimum=0)
        _check_number("cg_steps", self.cg_steps, owner, integer=True, minimum=1)
        _check_number("num_threads", self.num_threads, owner, integer=True, minimum=0)
        _check_number("random_state", self.random_state, owner, integer=True, minimum=0)
        _check_number("regularization", self.regularization, owner, minimum=0.0)
        _check_number("bm25_k1", self.bm25_k1, owner, minimum=0.0)
        _check_number("bm25_b", self.bm25_b, owner, minimum=0.0)
        if self.n_blocks is not None:
            _check_number("n_blocks", self.n_blocks, owner, integer=True, minimum=1)
        if self.device == "cuda":
            if self.engine != "implicit":
                raise ParameterError(
                    f"device='cuda' is supported by engine='implicit' only in {owner}; got "
                    f"engine={self.engine!r}. Use engine='implicit' for a GPU, or device='cpu'."
                )
            import implicit.gpu

            if not implicit.gpu.HAS_CUDA:
                raise ParameterError(
                    f"{owner}(device='cuda') needs implicit's CUDA build, which this installation lacks "
                    "(implicit.gpu.HAS_CUDA is False). Install it from conda-forge "
                    "(implicit-proc=*=gpu) or use device='cpu'."
                )
        if self.kernel == "implicit" and not K.has_implicit_cg():
            raise ParameterError(
                f"{owner}(kernel='implicit') needs implicit.cpu._als.least_squares_cg, which is not "
                "importable here. Use kernel='auto' or 'numpy'."
            )

    def _conf(self):
        return {
            "confidence": self.confidence,
            "alpha": float(self.alpha),
            "k1": float(self.bm25_k1),
            "b": float(self.bm25_b),
        }

    # --------------------------------------------------------------------------------------- fit
    def fit(self, interactions, y=None, *, client=None):
        """Learn user and item factors from interactions.

        Parameters
        ----------
        interactions : dask.dataframe.DataFrame or pandas.DataFrame
            Columns ``user_id``, ``item_id`` and optional ``weight`` (1.0 when absent); duplicate pairs
            are summed.
        y : ignored
        client : distributed.Client, optional
            Client to run on; None uses the current default client, else this process.

        Returns
        -------
        self
        """
        self._check_params()
        owner = type(self).__name__
        ddf = check_interactions(interactions, owner)
        runner = Runner(client)
        t0 = time.perf_counter()
        user_ids, item_ids = build_id_maps(ddf, owner=owner, client=runner.client)
        if self.engine == "implicit":
            coo = partition_coo(runner, ddf, user_ids, item_ids)
            X, Y, losses, times, nnz = self._fit_implicit(runner, coo, len(user_ids), len(item_ids))
        else:
            X, Y, losses, times, nnz = _restart_on_worker_loss(
                runner,
                lambda: self._fit_distributed(
                    runner, partition_coo(runner, ddf, user_ids, item_ids), len(user_ids), len(item_ids)
                ),
                owner=f"{type(self).__name__}.fit",
            )
        self.user_ids_, self.item_ids_ = user_ids, item_ids
        self.user_factors_, self.item_factors_ = X, Y
        self.loss_history_, self.iteration_times_ = losses, times
        self.n_interactions_ = int(nnz)
        self.fit_time_s_ = time.perf_counter() - t0
        self._train_interactions = ddf  # lazy: what recommend_all excludes by default in this session
        return self

    def _fit_implicit(self, runner, coo, n_users, n_items):
        params = {
            "factors": int(self.factors),
            "regularization": float(self.regularization),
            "iterations": int(self.iterations),
            "calculate_training_loss": bool(self.compute_loss),
        }
        if self.device == "cpu":
            params["num_threads"] = int(self.num_threads)
        fut = runner.submit(
            _fit_implicit_task,
            coo,
            (n_users, n_items),
            self._conf(),
            params,
            int(self.random_state),
            self.device,
        )
        return runner.gather(fut)  # small: the factors

    def _fit_distributed(self, runner, coo, n_users, n_items):
        k, reg, seed = int(self.factors), float(self.regularization), int(self.random_state)
        kernel = self.kernel if self.kernel != "auto" else ("implicit" if K.has_implicit_cg() else "numpy")
        n_blocks = self.n_blocks or (runner.n_threads() if runner.distributed else 2)
        # blocks of about equal work (stored values + a per-row cost), not of equal row counts
        counts = runner.map(row_counts, coo, n_rows=n_users, n_cols=n_items)
        while len(counts) > 1:  # tree sum: at most 8 count vectors per task
            counts = [runner.submit(add_counts, *counts[j : j + 8]) for j in range(0, len(counts), 8)]
        user_counts, item_counts = runner.gather(counts[0])  # small: one count per user / item
        ub = balanced_bounds(user_counts, n_blocks, row_cost=k)
        ib = balanced_bounds(item_counts, n_blocks, row_cost=k)
        users_raw = row_blocks(runner, coo, ub, n_items, by="row")
        items_raw = row_blocks(runner, coo, ib, n_users, by="col")
        coo.clear()  # the per-partition pieces are freed once the blocks are built
        conf, bm25 = self._conf(), None
        if self.confidence == "bm25":
            u_stats = runner.gather(runner.map(bm25_stats_rows, users_raw))  # small: per-user counts
            i_stats = runner.gather(runner.map(bm25_stats_rows, items_raw))  # small: per-item sums
            bm25 = runner.broadcast(
                bm25_factors(
                    np.concatenate([s[0] for s in u_stats]),
                    np.concatenate([s[1] for s in i_stats]),
                    conf["k1"],
                    conf["b"],
                )
            )
        kw = {"confidence": conf["confidence"], "alpha": conf["alpha"], "bm25": bm25, "k1": conf["k1"]}
        users = runner.map(_confidence_block, users_raw, list(ub[:-1]), orientation="user", **kw)
        items = runner.map(_confidence_block, items_raw, list(ib[:-1]), orientation="item", **kw)
        del users_raw, items_raw
        stats = runner.gather(runner.map(_block_stats, users))  # small: two numbers per block
        nnz, max_conf = sum(n for n, _ in stats), max((c for _, c in stats), default=0.0)
        n_iter = int(self.iterations)

        def check(F, iteration, side):
            _check_finite(F, side, iteration, n_iter, max_conf, type(self).__name__)

        X = runner.map(K.init_rows, list(ub[:-1]), list(ub[1:]), factors=k, seed=seed, side=0)
        Y = runner.map(K.init_rows, list(ib[:-1]), list(ib[1:]), factors=k, seed=seed, side=1)
        threads = 0 if not runner.distributed else 1
        numpy_kernel = kernel == "numpy"
        Y_full = np.concatenate(runner.gather(Y))  # small: factors of one side
        losses, times = [], []
        for it in range(1, n_iter + 1):
            t = time.perf_counter()
            # implicit's kernel forms the Gram matrix itself; the numpy kernel takes it broadcast
            Yb, G = runner.broadcast(Y_full), (runner.broadcast(_gram(Y_full)) if numpy_kernel else None)
            X = runner.map(
                K.solve_block, users, X, Y=Yb, gram=G, regularization=reg, cg_steps=int(self.cg_steps),
                kernel=kernel, num_threads=threads,
            )  # fmt: skip
            X_full = np.concatenate(runner.gather(X))  # small: factors of one side
            check(X_full, it, "users")
            Xb, G = runner.broadcast(X_full), (runner.broadcast(_gram(X_full)) if numpy_kernel else None)
            Y = runner.map(
                K.solve_block, items, Y, Y=Xb, gram=G, regularization=reg, cg_steps=int(self.cg_steps),
                kernel=kernel, num_threads=threads,
            )  # fmt: skip
            Y_full = np.concatenate(runner.gather(Y))  # small: factors of one side
            check(Y_full, it, "items")
            times.append(time.perf_counter() - t)
            if self.compute_loss:
                Yb, G = runner.broadcast(Y_full), runner.broadcast(_gram(Y_full))
                parts = runner.gather(runner.map(K.loss_parts, users, X, Y=Yb, gram=G, regularization=reg))
                losses.append(K.loss_total(parts, Y_full, reg, n_users, n_items))
        X_full = np.concatenate(runner.gather(X))  # small: factors of one side
        return X_full, Y_full, losses, times, nnz

    # --------------------------------------------------------------------------- scoring helpers
    def _user_vectors(self, start: int, stop: int) -> np.ndarray:
        return self.user_factors_[start:stop]

    def _item_matrix(self) -> np.ndarray:
        return self.item_factors_

    def _fold_in(self, C) -> np.ndarray:
        """Factors of new users from their confidence rows ``C`` (exact solve, fixed item factors)."""
        Y = self.item_factors_.astype(np.float64)
        A0 = Y.T @ Y + self.regularization * np.eye(Y.shape[1])
        out = np.zeros((C.shape[0], Y.shape[1]), dtype=np.float32)
        for u in range(C.shape[0]):
            lo, hi = C.indptr[u], C.indptr[u + 1]
            if lo == hi:
                continue
            idx, c = C.indices[lo:hi], C.data[lo:hi].astype(np.float64)
            Yi = Y[idx]
            A = A0 + (Yi * (np.abs(c) - 1)[:, None]).T @ Yi
            b = (np.where(c > 0, c, 0)[:, None] * Yi).sum(axis=0)
            out[u] = np.linalg.solve(A, b)
        return out

    def _confidence_rows(self, C):
        if self.confidence == "bm25":
            # new users: idf from their own counts, item norms as 1 (their lengths are not kept)
            bm25 = (np.ones(C.shape[1]), np.log(C.shape[1]) - np.log1p(np.diff(C.indptr)))
            return apply_confidence(
                C, confidence="bm25", alpha=self.alpha, bm25=bm25, k1=self.bm25_k1, orientation="user"
            )
        return apply_confidence(C, confidence=self.confidence, alpha=self.alpha)

    def similar_items(self, items, n: int = 10):
        """Most similar items (cosine of item factors); see :func:`similar_items`."""
        from ._topn import similar_items

        return similar_items(self, items, n=n)

    # ------------------------------------------------------------------------------ persistence
    def save(self, path, *, storage_options: dict | None = None):
        """Save factors (``.npy``), id maps (parquet), parameters and metrics (JSON); no pickle. To a directory or fsspec URL."""
        check_fitted(self, "user_factors_")
        from ._artifacts import save_model

        return save_model(self, path, storage_options=storage_options)

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None):
        """Load a model saved by :meth:`save`, verifying every file's sha256."""
        from ._artifacts import load_model

        return load_model(path, kind=cls.__name__, storage_options=storage_options)


_MAX_RESTARTS = 3


def _restart_on_worker_loss(runner, fit, owner: str):
    """Run ``fit()`` again when a worker is lost under it (at most ``_MAX_RESTARTS`` times).

    The engine's blocks are built once and their lineage released (the per-partition pieces are
    freed), and the factors of one side are broadcast as scattered data, which Dask cannot recompute:
    a lost worker ends the attempt with a cancelled future or a closed comm. The fit then waits for the
    cluster to recover and starts again from the input (same seed: the same factors as an undisturbed
    fit). The iterations done before the loss are lost; not the fit.
    """
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    for attempt in range(_MAX_RESTARTS + 1):
        before = set(runner.client.scheduler_info(n_workers=-1)["workers"]) if runner.distributed else set()
        try:
            return fit()
        except (FutureCancelledError, CommClosedError, KilledWorker) as e:
            if not runner.distributed or attempt == _MAX_RESTARTS:
                if runner.distributed:
                    raise FitError(
                        f"{owner}(engine='distributed'): workers were lost {attempt + 1} times during "
                        f"the fit; giving up. Last error: {type(e).__name__}: {e}"
                    ) from e
                raise
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(runner.client.scheduler_info(n_workers=-1)["workers"]) >= len(before):
                    break
                time.sleep(0.5)


def _block_stats(C) -> tuple[int, float]:
    """Stored pairs and largest absolute confidence of a block."""
    return int(C.nnz), float(np.abs(C.data).max()) if C.nnz else 0.0


def _check_finite(F, side: str, iteration: int, iterations: int, max_conf: float, owner: str) -> None:
    """Raise FitError when a half-iteration returned NaN or inf factors (float32 overflow)."""
    bad = ~np.isfinite(F).all(axis=1)
    if bad.any():
        raise FitError(
            f"{owner}(engine='distributed'): the {side[:-1]} factors became non-finite (NaN or inf) "
            f"in iteration {iteration} of {iterations} ({side} half-step): {int(bad.sum())} of {len(F)} "
            f"{side}. The solver works in float32 and the largest confidence alpha * f(weight) is "
            f"{max_conf:.3g}: its products overflowed. Lower alpha, use confidence='log' or 'bm25', "
            "or rescale the weights."
        )


def _confidence_block(block, offset, **kwargs):
    return apply_confidence(block, offset=int(offset), **kwargs)


# load_model finds the class by its kind: the artifact code imports no model
register_kind(ALSRecommender, load_from)
