"""ALS checkpoints: factor blocks written by the workers every N iterations, resumed after a crash,
and the restart of a fit that lost a worker.

Layout under the checkpoint directory (local path or fsspec URL)::

    iter-000010/user-00000.npy ... item-00003.npy    # written by the workers holding the blocks
    latest.json                                      # written last by the client: the commit

``latest.json`` names the iteration, the files with their sha256, the layout (blocks, digests of
each block's ids) and the loss and time histories; a reader never sees a half-written checkpoint,
because it only follows ``latest.json``. Older ``iter-*`` directories are removed after the commit.
Resuming checks that the input cut into the same blocks of the same ids, then reads each block on a
worker (verifying its sha256).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import time

import numpy as np

from ..errors import FitError, ParameterError
from ..storage import filesystem, write_json

__all__ = ["check_layout", "clear", "latest", "load_blocks", "restart_on_worker_loss", "write_checkpoint"]

LATEST = "latest.json"


def _write_block(F, url: str, storage_options):
    buf = io.BytesIO()
    np.save(buf, np.asarray(F), allow_pickle=False)
    data = buf.getvalue()
    fs, path = filesystem(url, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _read_block(url: str, sha256: str, storage_options):
    fs, path = filesystem(url, storage_options)
    data = fs.cat_file(path)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ParameterError(
            f"checkpoint block {url} does not match its sha256 in {LATEST}: it was modified."
        )
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_checkpoint(runner, url, storage_options, iteration: int, X: list, Y: list, state: dict) -> None:
    """Write both sides' factor blocks from the workers, then commit them with ``latest.json``."""
    url = str(url)
    folder = f"iter-{iteration:06d}"
    names = [f"user-{b:05d}.npy" for b in range(len(X))] + [f"item-{j:05d}.npy" for j in range(len(Y))]
    futures = [
        runner.submit(_write_block, F, posixpath.join(url, folder, name), storage_options)
        for F, name in zip([*X, *Y], names)
    ]
    records = runner.gather(futures)  # small: a checksum per block
    prev = latest(url, storage_options)
    write_json(
        posixpath.join(url, LATEST),
        state | {"iteration": int(iteration), "folder": folder, "files": dict(zip(names, records))},
        storage_options=storage_options,
    )
    fs, path = filesystem(url, storage_options)
    if prev is not None and prev.get("folder") != folder:  # keep the newest checkpoint only
        try:
            fs.rm(posixpath.join(path, prev["folder"]), recursive=True)
        except FileNotFoundError:
            pass


def latest(url, storage_options=None) -> dict | None:
    """The committed checkpoint at ``url`` (its ``latest.json``), or None."""
    fs, path = filesystem(str(url), storage_options)
    try:
        return json.loads(fs.cat_file(posixpath.join(path, LATEST)))
    except FileNotFoundError:
        return None


def load_blocks(runner, url, storage_options, state: dict, side: str, n_blocks: int) -> list:
    """Read one side's factor blocks of a checkpoint, each on a worker (sha256 checked there)."""
    url = str(url)
    out = []
    for b in range(n_blocks):
        name = f"{side}-{b:05d}.npy"
        rec = state["files"][name]
        out.append(
            runner.submit(
                _read_block, posixpath.join(url, state["folder"], name), rec["sha256"], storage_options
            )
        )
    return out


def check_layout(state: dict, layout: dict, url, owner: str) -> None:
    """Refuse to resume from a checkpoint of another input, block count or parameters."""
    diffs = [k for k in layout if state.get("layout", {}).get(k) != layout[k]]
    if diffs:
        raise ParameterError(
            f"{owner}: the checkpoint at {url} was written by a different fit ({', '.join(diffs)} differ: "
            f"checkpoint {[state.get('layout', {}).get(k) for k in diffs]}, this fit "
            f"{[layout[k] for k in diffs]}). Resume with the same interactions, n_blocks and "
            "parameters, or start a new fit without resume=."
        )


def clear(url, storage_options=None) -> None:
    """Remove the checkpoints at ``url`` (a new fit must not resume from an older one)."""
    fs, path = filesystem(str(url), storage_options)
    state = latest(url, storage_options)
    for rel in [LATEST] + ([state["folder"]] if state else []):
        try:
            fs.rm(posixpath.join(path, rel), recursive=True)
        except FileNotFoundError:
            pass


_MAX_RESTARTS = 3


def restart_on_worker_loss(runner, fit, owner: str):
    """Run ``fit()`` again when a worker is lost under it (at most ``_MAX_RESTARTS`` times).

    The engine's blocks are built once and their lineage released (the input's pieces are freed as
    soon as the blocks are built), so Dask cannot recompute a lost block: a lost worker ends the
    attempt with a cancelled future or a closed comm. The fit then waits for the cluster to recover
    and starts again from the input; with a ``checkpoint`` it continues from the last checkpoint
    (same seed, same blocks: the same factors as an undisturbed fit), else from iteration 0.
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
            runner.refresh()  # restarted workers have new addresses: pin the blocks to them
