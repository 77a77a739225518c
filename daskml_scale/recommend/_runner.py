"""Where block work runs: on a Dask client's workers (futures), or in this process without one.

The ALS engines are written once against :class:`Runner`: ``submit``/``map`` return futures pinned
on workers when a client is given, plain values otherwise; ``broadcast`` scatters one object to every
worker once; ``gather`` brings small results (factors, loss sums) back.
"""

from __future__ import annotations

from ..cluster import get_client

__all__ = ["Runner", "worker_threads"]


def worker_threads() -> int:
    """Threads of the Dask worker running this task; 0 (all cores) outside a worker."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):
        return 0


class Runner:
    """Run functions on the client's workers, or inline when ``client`` is None."""

    def __init__(self, client=None):
        self.client = get_client(client)

    @property
    def distributed(self) -> bool:
        return self.client is not None

    def n_threads(self) -> int:
        if self.client is None:
            return 1
        return max(1, sum(self.client.nthreads().values()))

    def n_workers(self) -> int:
        """Workers that ``submit_to`` deals blocks over (1 without a client)."""
        if self.client is None:
            return 1
        return max(1, len(self._worker_list()))

    def refresh(self) -> None:
        """Forget the worker list (after workers were replaced: new addresses)."""
        self.__dict__.pop("_workers", None)

    def _worker_list(self) -> list:
        workers = getattr(self, "_workers", None)
        if workers is None:
            workers = self._workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        return workers

    def submit(self, fn, *args, **kwargs):
        if self.client is None:
            return fn(*args, **kwargs)
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def submit_to(self, block: int, fn, *args, **kwargs):
        """``submit`` on the worker that owns ``block`` (blocks dealt round-robin over the workers
        sorted by address); another worker runs it if that one is gone."""
        if self.client is None:
            return fn(*args, **kwargs)
        workers = self._worker_list()
        if not workers:
            return self.client.submit(fn, *args, pure=False, **kwargs)
        return self.client.submit(
            fn, *args, pure=False, workers=[workers[block % len(workers)]], allow_other_workers=True, **kwargs
        )

    def map(self, fn, *iterables, **kwargs):
        if self.client is None:
            return [fn(*a, **kwargs) for a in zip(*iterables)]
        return self.client.map(fn, *iterables, pure=False, **kwargs)

    def broadcast(self, obj):
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def gather(self, x):
        if self.client is None:
            return x
        return self.client.gather(x)
