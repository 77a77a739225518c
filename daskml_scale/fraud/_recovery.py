"""XGBoost training that survives a lost worker: booster checkpoints and resume.

``xgboost.dask`` has no fault tolerance (dmlc/xgboost#9419, #10985): when a worker dies mid-fit the
other workers' collective calls fail (a socket error, 0.3-0.4 s after the death in
``benchmarks/bench_recovery.py``) and ``xgb.dask.train`` raises an ``XGBoostError``. :func:`train`
turns a lost worker into a restart:

1. every ``every`` rounds the worker of rank 0 writes the booster (UBJSON) and ``latest.json``
   (rounds done, evaluation history) to the checkpoint location (a directory or fsspec URL that
   every worker and the client can reach: shared storage on a real cluster);
2. on a failure it checks that a worker of the training really left (other errors are raised as
   they are), waits for the cluster to come back to its size (the nanny restarts a killed worker;
   after ``wait_s`` it goes on with the workers left), rebuilds the DMatrix (Dask recomputes the
   lost partitions from their graph) and resumes from the last checkpoint with ``xgb_model=`` for
   the rounds still to do, so the model has the same number of rounds as an undisturbed fit.

The early-stopping state (best score, best round, rounds without improvement) is carried over, so a
resumed fit stops where an undisturbed one would. What is not recovered: the rounds after the last
checkpoint are trained again (at most ``every``); a worker that hangs without leaving the cluster
is not a loss: after ``timeout_s`` its peers' collective calls fail and the fit raises that error
(it does not hang, and does not restart); a lost client or scheduler ends the fit, and a new fit
starts from round 0 (it clears the checkpoint location first). The checkpoint location must be
shared storage on a multi-machine cluster: a local path is written on the rank-0 worker's disk,
where the client cannot read it, and a loss then restarts from round 0.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

from ..errors import FitError
from ..storage import filesystem, write_json

__all__ = ["latest", "train"]

LATEST = "latest.json"
# What a peer's collective call says when another worker of the training died (xgboost 2.x-3.x)
_LOSS_MARKERS = (
    "Ring allgather failed",
    "Ring allreduce failed",
    "Poll error",
    "Connection reset",
    "Connection refused",
    "Broken pipe",
    "Socket",
    "timed out",
    "Timeout",
    "Invalid worker address",
    "worker died",
)


def _checkpoint_callback(url: str, storage_options: dict | None, every: int, base_history: dict):
    import xgboost as xgb

    class BoosterCheckpoint(xgb.callback.TrainingCallback):
        """Rank 0 writes the booster every ``every`` rounds, then ``latest.json`` naming it, with the
        whole evaluation history and the early-stopping state (best score and round)."""

        def after_iteration(self, model, epoch, evals_log) -> bool:
            rounds = model.num_boosted_rounds()
            if rounds % every == 0 and xgb.collective.get_rank() == 0:
                history = _merge(base_history, evals_log)
                best = model.attr("best_iteration")
                stopping = None
                if best is not None:
                    stopping = {"best_iteration": int(best), "best_score": float(model.attr("best_score"))}
                save(url, bytes(model.save_raw("ubj")), rounds, history, storage_options, stopping)
            return False

    return BoosterCheckpoint()


def _early_stopping(rounds: int, data_name: str, metric_name: str, state: dict | None, done: int):
    """xgboost's EarlyStopping, started from a checkpoint's best score and round: a resumed fit stops
    where an undisturbed one would (same patience count, same best round)."""
    import xgboost as xgb

    class ResumableEarlyStopping(xgb.callback.EarlyStopping):
        def before_training(self, model):
            model = super().before_training(model)
            if state is not None:
                score = state["best_score"]
                self.stopping_history = {data_name: {metric_name: [score]}}
                self.best_scores = {data_name: {metric_name: [score]}}
                self.current_rounds = done - 1 - state["best_iteration"]
                model.set_attr(best_score=str(score), best_iteration=str(state["best_iteration"]))
            return model

    return ResumableEarlyStopping(
        rounds=rounds, data_name=data_name, metric_name=metric_name, save_best=False
    )


def _merge(base: dict, log) -> dict:
    out = {d: {m: list(v) for m, v in ms.items()} for d, ms in (base or {}).items()}
    for d, ms in (log or {}).items():
        for m, v in ms.items():
            out.setdefault(d, {}).setdefault(m, []).extend(float(x) for x in v)
    return out


def save(url, booster: bytes, rounds: int, history, storage_options=None, stopping=None) -> None:
    """Write one checkpoint: the booster file first, then ``latest.json`` pointing at it (one step)."""
    fs, path = filesystem(url, storage_options)
    name = f"booster-{rounds:06d}-{uuid.uuid4().hex[:8]}.ubj"
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(posixpath.join(path, name), booster)
    prev = _read_latest(fs, path)
    hist = {d: {m: [float(x) for x in v] for m, v in ms.items()} for d, ms in (history or {}).items()}
    write_json(
        posixpath.join(str(url).rstrip("/"), LATEST),
        {"rounds": int(rounds), "booster": name, "history": hist, "early_stopping": stopping},
        storage_options=storage_options,
    )
    if prev is not None and prev.get("booster") != name:  # keep the newest checkpoint only
        try:
            fs.rm(posixpath.join(path, prev["booster"]))
        except FileNotFoundError:
            pass


def _read_latest(fs, path):
    try:
        return json.loads(fs.cat_file(posixpath.join(path, LATEST)))
    except FileNotFoundError:
        return None


def latest(url, storage_options=None):
    """The last checkpoint at ``url``: ``(booster, rounds, history, early_stopping)``, or None."""
    import xgboost as xgb

    fs, path = filesystem(url, storage_options)
    info = _read_latest(fs, path)
    if info is None:
        return None
    booster = xgb.Booster()
    booster.load_model(bytearray(fs.cat_file(posixpath.join(path, info["booster"]))))
    return booster, int(info["rounds"]), info.get("history", {}), info.get("early_stopping")


def clear(url, storage_options=None) -> None:
    """Remove the checkpoints at ``url`` (a new fit must not resume from an older one)."""
    fs, path = filesystem(url, storage_options)
    if fs.exists(path):
        for f in fs.ls(path, detail=False):
            name = posixpath.basename(f.rstrip("/"))
            if name == LATEST or (name.startswith("booster-") and name.endswith(".ubj")):
                fs.rm(f)


def _workers(client) -> set[str]:
    return set(client.scheduler_info(n_workers=-1)["workers"])


def _lost(client, before: set[str], error: BaseException, settle_s: float = 10.0) -> set[str]:
    """Workers of ``before`` that left; polls for a while, as the scheduler may not know yet."""
    deadline = time.monotonic() + (settle_s if any(m in str(error) for m in _LOSS_MARKERS) else 1.0)
    while True:
        gone = before - _workers(client)
        if gone or time.monotonic() > deadline:
            return gone
        time.sleep(0.2)


def _wait_for(client, n: int, wait_s: float) -> int:
    """Wait until ``n`` workers are back (at most ``wait_s``); the number there."""
    deadline = time.monotonic() + wait_s
    while len(_workers(client)) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    have = len(_workers(client))
    if have == 0:
        raise FitError("xgboost training lost its workers and none came back: nothing to resume on.")
    return have


def train(
    client,
    params: dict,
    build,
    *,
    num_boost_round: int,
    early_stopping_rounds: int | None,
    eval_metric: str = "aucpr",
    checkpoint=None,
    every: int = 10,
    max_restarts: int = 3,
    timeout_s: float = 60.0,
    wait_s: float = 60.0,
    storage_options: dict | None = None,
    owner: str = "XGBoostFraudClassifier.fit",
):
    """``xgb.dask.train`` that resumes after a lost worker; returns ``(booster, history, restarts)``.

    ``build()`` returns ``(dtrain, evals)``, built again for each attempt. ``restarts`` lists one
    dict per recovery: ``lost`` workers, ``failed_after_s`` (seconds into the attempt when its
    failure reached the client), ``failed_at_unix``, ``waited_s`` (waiting for the cluster to come
    back), ``resumed_at`` (rounds kept from the checkpoint) and the first line of the error.
    """
    import xgboost as xgb
    import xgboost.dask  # noqa: F401 - registers xgb.dask

    if checkpoint is not None:
        clear(checkpoint, storage_options)
    restarts: list[dict] = []
    history: dict = {}
    while True:
        ck = latest(checkpoint, storage_options) if checkpoint is not None else None
        start, done, history, stopping = (None, 0, {}, None) if ck is None else ck
        if done >= num_boost_round:
            return start, history, restarts
        dtrain, evals = build()
        before = _workers(client)
        callbacks = []
        if early_stopping_rounds is not None and evals:
            name = evals[-1][1]
            callbacks.append(_early_stopping(early_stopping_rounds, name, eval_metric, stopping, done))
        if checkpoint is not None:
            callbacks.append(_checkpoint_callback(str(checkpoint), storage_options, every, history))
        t0 = time.monotonic()
        try:
            with xgb.config_context(verbosity=0):  # xgboost's warnings/info, passed on to workers
                out = xgb.dask.train(
                    client,
                    params,
                    dtrain,
                    num_boost_round=num_boost_round - done,
                    evals=evals,
                    xgb_model=start,
                    callbacks=callbacks,
                    verbose_eval=False,
                    coll_cfg=xgb.collective.Config(timeout=int(timeout_s)),
                )
        except Exception as e:
            failed_at = time.time()
            detected = time.monotonic() - t0
            gone = _lost(client, before, e)
            if not gone:
                raise
            if len(restarts) >= max_restarts:
                raise FitError(
                    f"{owner}: a worker was lost during xgboost training {len(restarts) + 1} times "
                    f"(max_restarts={max_restarts}); last lost: {sorted(gone)}. Original error: "
                    f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                ) from e
            t1 = time.monotonic()
            _wait_for(client, len(before), wait_s)
            restarts.append(
                {
                    "lost": sorted(gone),
                    "failed_after_s": round(detected, 3),
                    "failed_at_unix": failed_at,
                    "waited_s": round(time.monotonic() - t1, 3),
                    "resumed_at": 0 if checkpoint is None else _rounds_at(checkpoint, storage_options),
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                }
            )
            continue
        return out["booster"], _merge(history, out["history"]), restarts


def _rounds_at(checkpoint, storage_options) -> int:
    fs, path = filesystem(checkpoint, storage_options)
    info = _read_latest(fs, path)
    return 0 if info is None else int(info["rounds"])
