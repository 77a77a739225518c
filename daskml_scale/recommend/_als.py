"""ALSRecommender: implicit-feedback ALS with two engines behind one API.

``engine="implicit"``
    The per-partition COO pieces are sent to ONE worker, which assembles the CSR matrix and runs
    implicit's ``AlternatingLeastSquares`` there (CPU, or implicit's CUDA build with
    ``device="cuda"``). Fast while the matrix fits one machine.
``engine="distributed"``
    Users and items are cut into blocks by a distributed factorize; each block's confidences, cut
    by the other side's blocks, and its factors stay on one worker for the whole fit. Each
    half-iteration runs implicit's conjugate-gradient update and moves the smaller side
    (:mod:`~daskml_scale.recommend._blocks`): the other side's factors whole to each block when they
    are small, else each block's vectors to the other side's blocks, which return their shares of
    the sums over stored values. No process holds the whole matrix, and no task more than one block
    of the larger side.

Both engines use implicit's objective: confidences ``c = alpha * f(w)``, weighted squared error
``sum c_ui (p_ui - x_u.y_i)^2`` over all pairs (``c = 1`` for unobserved ones) plus
``regularization * (|X|^2 + |Y|^2)``, unscaled by counts; both start from the same factors
(:func:`~daskml_scale.recommend._kernels.init_rows`), so their loss trajectories agree.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator

from .. import schema as S
from ..errors import FitError, ParameterError, check_fitted, check_in
from ..storage import register_kind
from . import _blocks as B
from . import _kernels as K
from ._artifacts import load_from
from ._blocks import FactorBlocks
from ._checkpoint import check_layout, clear, latest, load_blocks, restart_on_worker_loss, write_checkpoint
from ._factorize import factorize_blocks
from ._implicit import fit_implicit_task, nth, split_rows
from ._matrix import (
    check_confidence_params,
    check_interactions,
)
from ._runner import Runner
from ._sizing import (
    AUTO_MEMORY_SHARE,
    GATHER_MEMORY_SHARE,
    auto_blocks,
    implicit_memory,
    smallest_worker_memory,
)

__all__ = ["ALSRecommender"]

ENGINES = ("auto", "implicit", "distributed")
DEVICES = ("cpu", "cuda")
KERNELS = ("auto", "numba", "numpy")


def _check_number(name, value, owner, *, integer=False, minimum=0.0, strict=False):
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        rule = f"{'an int' if integer else 'a number'} {'>' if strict else '>='} {minimum:g}"
        raise ParameterError(f"The {name!r} parameter of {owner} must be {rule}. Got {value!r} instead.")


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
    engine : {"auto", "implicit", "distributed"}
        ``"implicit"`` fits implicit's ALS on one worker; ``"distributed"`` runs block ALS over all
        workers without gathering the matrix. ``"auto"`` (default) picks implicit while its matrix
        and factors (:func:`implicit_memory`: about 32 bytes per interaction plus 12 bytes per
        factor per user and per item) take at most a quarter of the smallest worker's memory limit, and
        the distributed engine beyond, or whenever ``checkpoint`` or ``resume`` is given.
    device : {"cpu", "cuda"}
        ``"cuda"`` uses implicit's GPU build (engine ``"implicit"`` only).
    confidence : {"linear", "log", "bm25"}
        ``f(w)``: ``w`` (summed weights of duplicate pairs), ``log1p(w)``, or implicit's BM25 weighting
        of the items x users matrix (``bm25_k1``, ``bm25_b``).
    bm25_k1, bm25_b : float
        BM25 parameters (implicit's defaults).
    n_blocks : int, optional
        Blocks per side (both engines cut the input into them); default one per worker thread (2
        without a client), more where a block's factorize task would hold over 1/8 of a worker
        thread's share of the smallest worker's memory at ~64 bytes per interaction
        (``BLOCK_ROW_BYTES``: 200M interactions on 1-thread 10 GiB workers make 10 blocks),
        rounded up to a multiple of the workers. More blocks lower the memory of each task and add
        tasks (each CG step of a block gathers one partial per worker).
    cg_steps : int
        Conjugate-gradient steps per half-iteration (implicit's default 3).
    kernel : {"auto", "numba", "numpy"}
        How the distributed engine sums over stored values in its CG steps: compiled with numba
        (``"auto"``), or vectorised numpy (the same arithmetic, slower).
    compute_loss : bool
        Record implicit's training loss after every iteration in ``loss_history_``.
    num_threads : int
        Threads of implicit's solver in engine ``"implicit"`` (0: the worker's threads).
    random_state : int
        Seed of the initial factors: a row's initial factors are a hash of its id and the seed, so
        they do not depend on the engine or on the blocks.
    checkpoint : str or path-like, optional
        Directory or fsspec URL where the distributed engine writes both sides' factor blocks every
        ``checkpoint_every`` iterations (and at the end); a fit that loses a worker resumes from the
        last one, and ``fit(..., resume=checkpoint)`` continues a fit whose client died.
    checkpoint_every : int
        Iterations between checkpoints (Spark's ``checkpointInterval``).
    storage_options : dict, optional
        fsspec options of the checkpoint location (credentials are never written into it).

    Attributes
    ----------
    user_blocks_, item_blocks_ : FactorBlocks
        The fitted factors as blocks (futures on the cluster, or arrays in process): ``ids[b]`` and
        ``factors[b]`` of each block. The fitted model's factors stay where they were computed.
    engine_ : str
        The engine that ran (``"auto"`` resolved).
    half_steps_ : dict
        Distributed engine only: how each half-step ran, ``{"users": ..., "items": ...}``:
        ``"gather"`` (the other side's factors brought whole to each block, when they are the smaller
        side and fit 1/16 of a worker) or ``"partial"`` (the block's vectors sent to the other side's
        blocks, which return their shares of the CG sums).
    resumed_from_ : int
        Iteration of the checkpoint the fit continued from (0: it started from the initial factors).
    user_ids_, item_ids_ : ndarray
        Distinct ids, in this process (gathered from the blocks on first access): a user's row in
        ``user_factors_`` is its position in ``user_ids_``. Sorted within each block.
    user_factors_, item_factors_ : ndarray of float32
        Factors in this process (gathered on first access: use them for small models only).
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
        engine: str = "auto",
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
        checkpoint=None,
        checkpoint_every: int = 5,
        storage_options: dict | None = None,
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
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.storage_options = storage_options

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
        _check_number("checkpoint_every", self.checkpoint_every, owner, integer=True, minimum=1)
        if self.n_blocks is not None:
            _check_number("n_blocks", self.n_blocks, owner, integer=True, minimum=1)
        if (
            self.checkpoint is not None or getattr(self, "_resume", None) is not None
        ) and self.engine == "implicit":
            raise ParameterError(
                f"{owner}(checkpoint=... or fit(resume=...)) needs engine='distributed' or 'auto'; engine='implicit' runs "
                "implicit's own loop on one worker and cannot write factor blocks."
            )
        if self.device == "cuda":
            if self.engine == "distributed" or self.checkpoint is not None:
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

    def _conf(self):
        return {
            "confidence": self.confidence,
            "alpha": float(self.alpha),
            "k1": float(self.bm25_k1),
            "b": float(self.bm25_b),
        }

    # --------------------------------------------------------------------------------------- fit
    def fit(self, interactions, y=None, *, client=None, resume=None):
        """Learn user and item factors from interactions.

        The input is read once: a distributed factorize cuts it into user and item blocks on the
        workers (:mod:`~daskml_scale.recommend._factorize`); each iteration then moves factor blocks
        worker to worker. The fitted factors stay on the cluster as blocks (``user_blocks_``,
        ``item_blocks_``); ``to_local()`` brings them into this process when they fit.

        Parameters
        ----------
        interactions : dask.dataframe.DataFrame or pandas.DataFrame
            Columns ``user_id``, ``item_id`` and optional ``weight`` (1.0 when absent); duplicate pairs
            are summed.
        y : ignored
        client : distributed.Client, optional
            Client to run on; None uses the current default client, else this process.
        resume : str or path-like, optional
            A checkpoint directory (see ``checkpoint``): continue the fit it holds from its last
            iteration. The interactions, ``n_blocks`` and parameters must be those of that fit.

        Returns
        -------
        self
        """
        self._resume = resume
        self._check_params()
        owner = type(self).__name__
        if resume is not None and latest(resume, self.storage_options) is None:
            raise ParameterError(
                f"{owner}.fit(resume={str(resume)!r}): no checkpoint there (no latest.json). Pass the "
                "checkpoint directory of an interrupted fit, or fit without resume=."
            )
        ddf = check_interactions(interactions, owner)
        runner = Runner(client)
        t0 = time.perf_counter()
        n_blocks = int(self.n_blocks or auto_blocks(runner, ddf))
        self._resume, self._resumable, self.resumed_from_ = resume, False, 0
        if self.checkpoint is not None and resume is None:
            clear(self.checkpoint, self.storage_options)  # a new fit never resumes an older one

        def attempt():
            bm = factorize_blocks(runner, ddf, n_blocks, n_blocks, owner=owner)
            engine = self._choose_engine(runner, bm)
            if engine == "implicit":
                return engine, bm, self._fit_implicit(runner, bm)
            return engine, bm, self._fit_distributed(runner, bm)

        engine, bm, (X, Y, losses, times, seen) = restart_on_worker_loss(
            runner, attempt, owner=f"{owner}.fit"
        )
        self.engine_ = engine
        self._id_dtypes = {
            "user": ddf._meta[S.USER_ID].to_numpy()[:0],
            "item": ddf._meta[S.ITEM_ID].to_numpy()[:0],
        }
        self.user_blocks_ = FactorBlocks(bm.user_ids, X, bm.user_offsets)
        self.item_blocks_ = FactorBlocks(bm.item_ids, Y, bm.item_offsets)
        self.__dict__.pop("_local", None)
        self.loss_history_, self.iteration_times_ = losses, times
        self.n_interactions_ = int(bm.nnz)
        self.fit_time_s_ = time.perf_counter() - t0
        self._train_interactions = ddf  # lazy: what recommend_all excludes by default in this session
        self._train_seen = seen  # its pairs by user block, on the workers (see recommend_all)
        return self

    def _choose_engine(self, runner, bm) -> str:
        if self.engine != "auto":
            return self.engine
        if self.device == "cuda":
            return "implicit"
        if self.checkpoint is not None or self._resume is not None:
            return "distributed"  # only the distributed engine checkpoints
        need = implicit_memory(bm.n_users, bm.n_items, bm.nnz, int(self.factors))
        return "implicit" if need <= AUTO_MEMORY_SHARE * smallest_worker_memory(runner) else "distributed"

    def _fit_implicit(self, runner, bm):
        params = {
            "factors": int(self.factors),
            "regularization": float(self.regularization),
            "iterations": int(self.iterations),
            "calculate_training_loss": bool(self.compute_loss),
        }
        if self.device == "cpu":
            params["num_threads"] = int(self.num_threads)
        out = runner.submit(
            fit_implicit_task, bm.users, bm.user_ids, bm.item_ids, self._conf(), params,
            int(self.random_state), self.device,
        )  # fmt: skip
        X, Y = runner.submit(nth, out, 0), runner.submit(nth, out, 1)
        losses, times = runner.gather([runner.submit(nth, out, 2), runner.submit(nth, out, 3)])  # small
        # the factors stay on that worker, cut into the factorize's blocks
        X = [runner.submit(split_rows, X, bm.user_offsets, b) for b in range(len(bm.users))]
        Y = [runner.submit(split_rows, Y, bm.item_offsets, j) for j in range(len(bm.items))]
        seen = [runner.submit_to(b, B.raw_seen, block) for b, block in enumerate(bm.users)]
        return X, Y, losses, times, seen

    def _fit_distributed(self, runner, bm):
        owner = type(self).__name__
        k, reg, seed = int(self.factors), float(self.regularization), int(self.random_state)
        kernel = "numba" if self.kernel == "auto" else self.kernel
        nb_u, nb_i = len(bm.users), len(bm.items)
        conf = self._conf()
        kw = {"confidence": conf["confidence"], "alpha": conf["alpha"], "k1": conf["k1"]}
        if self.confidence == "bm25":
            kw["bm25"] = B.bm25_on_workers(runner, bm, conf)
        at = runner.submit_to  # block b stays on worker b mod W (factorize_blocks put it there)
        # each half-step moves the smaller side: the fixed side whole to the solved blocks when it is
        # small enough (gather), else the solved blocks' vectors to where the fixed blocks' pieces are
        budget = GATHER_MEMORY_SHARE * smallest_worker_memory(runner)
        gather_u = B.gather_mode(bm.n_items, bm.n_users, k, budget)  # user step: items to user blocks
        # never both: the loss reads the pieces of a partial step
        gather_i = B.gather_mode(bm.n_users, bm.n_items, k, budget) and not gather_u
        # what each step reads stays beside the factors it does not move: one side's confidences
        # when one step gathers (the other side's are only counted, inside one task per block)
        users, nonempty_u = B.confidences(runner, bm.users, bm.user_offsets, "user", not gather_i, kw)
        items, nonempty_i = B.confidences(runner, bm.items, bm.item_offsets, "item", not gather_u, kw)
        bm.users, bm.items = [], []  # the raw blocks are released once their confidences exist
        # small: two numbers per block, from one side (both hold every pair)
        stats = runner.gather(
            [at(b, B.conf_stats, C) for b, C in enumerate(users if users is not None else items)]
        )
        max_conf = max((m for m, _ in stats), default=0.0)
        complete = sum(n for _, n in stats) == bm.nnz  # no pair of zero confidence was dropped
        whole_u = [at(b, B.whole_piece, C, k) for b, C in enumerate(users)] if gather_u else None
        whole_i = [at(j, B.whole_piece, C, k) for j, C in enumerate(items)] if gather_i else None
        pieces_u = (
            None if gather_i else [at(b, B.split_pieces, C, bm.item_offsets, k) for b, C in enumerate(users)]
        )
        pieces_i = (
            None if gather_u else [at(j, B.split_pieces, C, bm.user_offsets, k) for j, C in enumerate(items)]
        )
        self.half_steps_ = {
            "users": "gather" if gather_u else "partial",
            "items": "gather" if gather_i else "partial",
        }
        del users, items
        n_iter, cg = int(self.iterations), int(self.cg_steps)
        layout = self._layout(bm)
        start, losses, times = 0, [], []
        url = self.checkpoint if self._resumable else self._resume
        state = latest(url, self.storage_options) if url is not None else None
        if state is not None:
            check_layout(state, layout, url, owner)
            X = load_blocks(runner, url, self.storage_options, state, "user", nb_u)
            Y = load_blocks(runner, url, self.storage_options, state, "item", nb_i)
            start, losses, times = int(state["iteration"]), list(state["losses"]), list(state["times"])
            self.resumed_from_ = start
        else:
            X = [at(b, K.init_factors, ids, k, seed, 0) for b, ids in enumerate(bm.user_ids)]
            Y = [at(j, K.init_factors, ids, k, seed, 1) for j, ids in enumerate(bm.item_ids)]
        ck = self.checkpoint if self.checkpoint is not None else self._resume
        self._resumable = ck is not None  # a restart after a lost worker resumes from it

        def half(whole, pieces, F, T, nonempty, side, it):
            if whole is not None:
                new = B.half_step_gathered(runner, whole, F, T, nonempty, reg, cg, kernel)
            else:
                new = B.half_step(runner, pieces, F, T, nonempty, reg, cg, kernel)
            bad = sum(
                runner.gather([at(t, B.n_nonfinite, x) for t, x in enumerate(new)])
            )  # small: a count per block
            if bad:
                n = bm.n_users if side == "users" else bm.n_items
                _raise_non_finite(side, bad, n, it, n_iter, max_conf, owner)
            return new

        for it in range(start + 1, n_iter + 1):
            t = time.perf_counter()
            X = half(whole_u, pieces_i, Y, X, nonempty_u, "users", it)
            Y = half(whole_i, pieces_u, X, Y, nonempty_i, "items", it)
            times.append(time.perf_counter() - t)
            if self.compute_loss:
                if pieces_u is not None:  # user blocks hold pieces: item blocks travel to them
                    losses.append(B.loss(runner, pieces_u, X, Y, X, Y, reg, bm.n_users, bm.n_items))
                else:
                    losses.append(B.loss(runner, pieces_i, Y, X, X, Y, reg, bm.n_users, bm.n_items))
            if ck is not None and (it % int(self.checkpoint_every) == 0 or it == n_iter):
                write_checkpoint(runner, ck, self.storage_options, it, X, Y,
                                 {"layout": layout, "losses": losses, "times": times})  # fmt: skip
        # the training pairs stay by user block for recommend_all, unless zeros left the pieces
        seen = B.seen_blocks(runner, bm, pieces_u, pieces_i) if complete else None
        return X, Y, losses, times, seen

    def _layout(self, bm) -> dict:
        """What a checkpoint must share with the fit that resumes it."""
        keep = (
            "factors",
            "regularization",
            "alpha",
            "confidence",
            "bm25_k1",
            "bm25_b",
            "cg_steps",
            "random_state",
        )
        return {
            "n_users": bm.n_users,
            "n_items": bm.n_items,
            "nnz": int(bm.nnz),
            "user_blocks": bm.id_digests["users"],
            "item_blocks": bm.id_digests["items"],
            "params": {p: getattr(self, p) for p in keep},
        }

    # ------------------------------------------------------------------------- fitted factors
    @property
    def user_ids_(self) -> np.ndarray:
        """Distinct user ids; a user's row in ``user_factors_`` is its position here (in this process)."""
        return self._local_part("user_ids")

    @property
    def item_ids_(self) -> np.ndarray:
        """Distinct item ids; an item's row in ``item_factors_`` is its position here (in this process)."""
        return self._local_part("item_ids")

    @property
    def user_factors_(self) -> np.ndarray:
        """User factors (float32) in this process: gathers ``user_blocks_`` (use ``to_local()``)."""
        return self._local_part("user_factors")

    @property
    def item_factors_(self) -> np.ndarray:
        """Item factors (float32) in this process: gathers ``item_blocks_``."""
        return self._local_part("item_factors")

    @user_ids_.setter
    def user_ids_(self, value):
        self._set_local("user_ids", value)

    @item_ids_.setter
    def item_ids_(self, value):
        self._set_local("item_ids", value)

    @user_factors_.setter
    def user_factors_(self, value):
        self._set_local("user_factors", value)

    @item_factors_.setter
    def item_factors_(self, value):
        self._set_local("item_factors", value)

    def _set_local(self, name, value):
        """Set ids or factors of one side in this process (loading, ``to_local``, compression).

        The side's blocks are replaced: by one in-process block when both its ids and its factors
        are arrays, else by none (quantized factors are scored through ``_user_vectors``).
        """
        side = name.split("_")[0]
        local = self.__dict__.setdefault("_local", {})
        other = f"{side}_ids" if name.endswith("factors") else f"{side}_factors"
        if other not in local and self.__dict__.get(f"{side}_blocks_") is not None:
            local[other] = self._local_part(other)
        local[name] = np.asarray(value) if name.endswith("ids") else value
        self.__dict__.pop(f"{side}_blocks_", None)
        ids, F = local.get(f"{side}_ids"), local.get(f"{side}_factors")
        if isinstance(ids, np.ndarray) and isinstance(F, np.ndarray):
            self.__dict__[f"{side}_blocks_"] = FactorBlocks(
                [ids], [F], np.array([0, len(ids)], dtype=np.int64)
            )

    def _local_part(self, name):
        local = self.__dict__.get("_local", {})
        if name in local:
            return local[name]
        side = "user_blocks_" if name.startswith("user") else "item_blocks_"
        blocks = self.__dict__.get(side)
        if blocks is None:
            raise AttributeError(name + "_")
        parts = blocks.ids if name.endswith("ids") else blocks.factors
        parts = B.gather_blocks(parts)
        value = np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])
        self.__dict__.setdefault("_local", {})[name] = value
        return value

    def _id_meta(self, side: str) -> np.ndarray:
        """An empty array of the ``side`` ids' dtype (without gathering the ids)."""
        local = self.__dict__.get("_local", {})
        if f"{side}_ids" in local:
            return local[f"{side}_ids"][:0]
        blocks = self.__dict__.get(f"{side}_blocks_")
        if blocks is not None and isinstance(blocks.ids[0], np.ndarray):
            return blocks.ids[0][:0]
        return self.__dict__.get("_id_dtypes", {}).get(side, np.zeros(0, dtype=np.int64))

    def to_local(self):
        """This model with its factors and ids in this process (a copy; the blocks are gathered).

        Needs ``(n_users + n_items) * (factors * 4 + id size)`` bytes here: for 100M users and 64
        factors that is ~26 GB, so keep large models as blocks (``recommend_all``, ``save`` and
        ``similar_items`` work from them).
        """
        check_fitted(self, "user_blocks_")
        import copy

        m = copy.copy(self)
        m.__dict__ = {
            k: v for k, v in self.__dict__.items() if k not in ("user_blocks_", "item_blocks_", "_local")
        }
        for name in ("user_ids", "item_ids", "user_factors", "item_factors"):
            setattr(m, name + "_", getattr(self, name + "_"))
        return m

    # --------------------------------------------------------------------------- scoring helpers
    def _user_vectors(self, start: int, stop: int) -> np.ndarray:
        return self.user_factors_[start:stop]

    def _item_matrix(self) -> np.ndarray:
        return self.item_factors_

    def _fold_in(self, C) -> np.ndarray:
        """Factors of new users from their confidence rows ``C`` (exact solve, fixed item factors)."""
        from ._foldin import solve_users

        Y = self.item_factors_
        G = Y.astype(np.float64).T @ Y.astype(np.float64)
        return solve_users(
            C, G + self.regularization * np.eye(Y.shape[1]), lambda idx: Y[idx].astype(np.float64)
        )

    def _confidence_rows(self, C):
        from ._foldin import confidence_rows

        return confidence_rows(C, self.confidence, self.alpha, self.bm25_k1)

    def similar_items(self, items, n: int = 10):
        """Most similar items (cosine of item factors); see :func:`similar_items`."""
        from ._topn import similar_items

        return similar_items(self, items, n=n)

    # ------------------------------------------------------------------------------ persistence
    def save(self, path, *, storage_options: dict | None = None):
        """Save factors (``.npy``), id maps (parquet), parameters and metrics (JSON); no pickle. To a directory or fsspec URL.

        Factors that are blocks on a cluster are written by block, each by the worker holding it
        (nothing passes through this process); ``load`` then maps each block file.
        """
        check_fitted(self, "user_blocks_" if "user_blocks_" in self.__dict__ else "user_factors_")
        from ._artifacts import save_model

        return save_model(self, path, storage_options=storage_options)

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None):
        """Load a model saved by :meth:`save`, verifying every file's sha256."""
        from ._artifacts import load_model

        return load_model(path, kind=cls.__name__, storage_options=storage_options)


def _raise_non_finite(side, bad, n, iteration, iterations, max_conf, owner) -> None:
    """Raise FitError when a half-iteration returned NaN or inf factors (float32 overflow)."""
    raise FitError(
        f"{owner}(engine='distributed'): the {side[:-1]} factors became non-finite (NaN or inf) "
        f"in iteration {iteration} of {iterations} ({side} half-step): {bad} of {n} "
        f"{side}. The solver works in float32 and the largest confidence alpha * f(weight) is "
        f"{max_conf:.3g}: its products overflowed. Lower alpha, use confidence='log' or 'bm25', "
        "or rescale the weights."
    )


# load_model finds the class by its kind: the artifact code imports no model
register_kind(ALSRecommender, load_from)
