"""How big the ALS work is: the engine ``engine="auto"`` picks, and the number of blocks per side.

Both decisions compare a byte estimate with the smallest worker's memory limit (this machine's
memory without a cluster); only counts are read.
"""

from __future__ import annotations

import math

from ..cluster import compute

__all__ = ["AUTO_MEMORY_SHARE", "BLOCK_MEMORY_SHARE", "GATHER_MEMORY_SHARE", "BLOCK_ROW_BYTES", "auto_blocks", "implicit_memory",
           "smallest_worker_memory"]  # fmt: skip

# engine="auto": implicit on one worker while its matrix and factors take at most this share of the
# smallest worker's memory limit (implicit holds the CSR, both factor matrices and per-thread buffers)
AUTO_MEMORY_SHARE = 0.25

# bytes per interaction a block's factorize task may hold at its peak (ids, codes, weights, the
# pieces it cuts and their temporaries), and the share of a worker's memory one block task may take
BLOCK_ROW_BYTES = 64
BLOCK_MEMORY_SHARE = 1 / 8

# a half-step brings the other side's factors whole to each solved block when they are the smaller
# side and take at most this share of the smallest worker's memory (one copy per task)
GATHER_MEMORY_SHARE = 1 / 16


def auto_blocks(runner, ddf) -> int:
    """Blocks per side: one per worker thread, more when a block would exceed its memory share.

    The row count comes from the input's metadata where Dask has it (parquet), else from a count
    of each partition. The number is rounded up to a multiple of the workers, so blocks spread
    evenly.
    """
    if not runner.distributed:
        return 2
    threads = runner.n_threads()
    rows = int(compute(ddf.shape[0], client=runner.client)[0])  # small: one count
    workers = max(1, len(runner.client.scheduler_info(n_workers=-1)["workers"]))
    per_thread = smallest_worker_memory(runner) / max(1, math.ceil(threads / workers))
    per_block = max(1.0, BLOCK_MEMORY_SHARE * per_thread / BLOCK_ROW_BYTES)
    n = max(threads, math.ceil(rows / per_block))
    return int(math.ceil(n / workers) * workers)


def implicit_memory(n_users: int, n_items: int, nnz: int, factors: int) -> int:
    """Bytes engine ``"implicit"`` needs on its worker: the CSR (twice: implicit transposes it), both
    factor matrices, and the stacking and confidence copies."""
    csr = 8 * nnz + 4 * (n_users + n_items + 2)
    return int(4 * csr + 3 * 4 * factors * (n_users + n_items))


def smallest_worker_memory(runner) -> float:
    if not runner.distributed:
        import psutil

        return float(psutil.virtual_memory().available)
    limits = [
        w.get("memory_limit") or 0 for w in runner.client.scheduler_info(n_workers=-1)["workers"].values()
    ]
    limits = [m for m in limits if m]
    if not limits:
        import psutil

        return float(psutil.virtual_memory().total)
    return float(min(limits))
