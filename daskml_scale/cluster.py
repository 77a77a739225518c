"""One way to get a Dask client, and the helpers every computing function shares.

``connect()`` uses, in order: the address given, the ``DASK_SCHEDULER_ADDRESS`` environment variable,
or a new ``LocalCluster`` sized to this machine (workers bound to 127.0.0.1, dashboard on localhost).
The returned client is a context manager: leaving the ``with`` block closes it, and closes the
LocalCluster too when ``connect`` started one.

Every public function that computes takes ``client=None``, meaning the current default client (or,
without one, Dask's default scheduler); :func:`compute` implements that rule.

Examples
--------
>>> from daskml_scale.cluster import connect
>>> with connect(n_workers=1, quiet=True) as client:  # doctest: +SKIP
...     client.submit(sum, [1, 2]).result()
3
"""

from __future__ import annotations

import contextlib
import os
import sys

import dask
from distributed import Client, Security, default_client, progress

from .errors import ParameterError

__all__ = ["compute", "connect", "get_client", "machine_size", "persist", "quiet_shuffle_logs", "tree_reduce"]

ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"

WORKER_MMAP_THRESHOLD = 16 * 2**20
"""``MALLOC_MMAP_THRESHOLD_`` (bytes) of the worker processes Dask nannies start in a process that
imported daskml_scale (a :func:`connect` LocalCluster, or any other).

distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting any malloc threshold
turns off glibc's dynamic mmap threshold: every array over 128 KiB is then a fresh ``mmap``, its
pages faulted in and zeroed on first touch, and unmapped when freed. The feature kernels allocate a
few hundred MB of such arrays per partition: in a worker they ran 2.5x slower than in a plain
process (0.49-0.55 s against 0.19-0.21 s for the card stage of a 480k-row partition, on the 2-core
benchmark VM). With arrays under 16 MiB (2M float64 values: partitions up to 2M rows) taken from the
heap, where freed memory is reused, workers run them at the plain-process speed, and the trim
threshold still returns the heap's free top to the system. The worker's resident memory is higher
for it (measured: +0.1 GiB with 1 GiB workers, see docs/cluster.md); 64 MiB was as fast and kept
more. Set by :func:`dask.config.update_defaults`: a value in your own Dask configuration wins. For
workers started elsewhere (``dask worker``, a cluster manager), set ``MALLOC_MMAP_THRESHOLD_=16777216``
in their environment or in their ``distributed.nanny.pre-spawn-environ`` configuration.
"""

dask.config.update_defaults(
    {"distributed": {"nanny": {"pre-spawn-environ": {"MALLOC_MMAP_THRESHOLD_": WORKER_MMAP_THRESHOLD}}}}
)


def machine_size() -> tuple[int, int, str]:
    """Workers, threads per worker and memory per worker for a LocalCluster on this machine.

    One single-threaded worker process per core: pandas and xgboost work holds the GIL, so processes
    scale where threads do not; memory is split evenly between workers.
    """
    cores = os.cpu_count() or 1
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = f"{int(total * 0.9 / cores)}B"
    except (ValueError, OSError, AttributeError):
        memory = "auto"
    return cores, 1, memory


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    security: Security | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    quiet: bool = False,
) -> Client:
    """Connect to a Dask cluster, or start a local one sized to this machine.

    Parameters
    ----------
    address : str, optional
        Scheduler address such as ``"tcp://10.0.0.5:8786"`` or ``"tls://..."``. When None,
        ``DASK_SCHEDULER_ADDRESS`` is used if set, else a ``LocalCluster`` is started.
    n_workers, threads_per_worker, memory_limit : optional
        Size of the LocalCluster; default one single-threaded worker per core, memory split evenly.
        Ignored (and refused) when connecting to an existing scheduler.
    security : distributed.Security, optional
        TLS settings for a ``tls://`` scheduler, or for the LocalCluster.
    dashboard_address : str
        Where the LocalCluster serves its dashboard (localhost only by default).
    quiet : bool
        Do not print the dashboard link.

    Returns
    -------
    distributed.Client
        Usable as a context manager; closing it also closes a LocalCluster that ``connect`` started.

    Examples
    --------
    >>> with connect(n_workers=2, threads_per_worker=1) as client:  # doctest: +SKIP
    ...     print(client.dashboard_link)
    """
    address = address or os.environ.get(ENV_ADDRESS) or None
    kwargs = {}
    if security is not None:
        kwargs["security"] = security
    if address is not None:
        if any(v is not None for v in (n_workers, threads_per_worker, memory_limit)):
            raise ParameterError(
                "n_workers, threads_per_worker and memory_limit size a LocalCluster; they cannot be "
                f"used with the scheduler address {address!r}. Size that cluster where it is started."
            )
        client = Client(address, **kwargs)
    else:
        quiet_shuffle_logs()
        cores, threads, memory = machine_size()
        client = Client(
            n_workers=n_workers or cores,
            threads_per_worker=threads_per_worker or threads,
            memory_limit=memory_limit or memory,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            **kwargs,
        )
    if not quiet:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    return client


def quiet_shuffle_logs() -> None:
    """Silence the scheduler's per-shuffle WARNING lines ("Shuffle ... initialized/deactivated").

    Dask's p2p shuffle logs the start and end of every shuffle at WARNING level in the scheduler; they
    are not news to a user and flood every command that shuffles. A LocalCluster's scheduler runs in
    this process, so this quiets it; a remote scheduler keeps its own logging configuration.
    """
    import logging

    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)


def get_client(client: Client | None = None) -> Client | None:
    """The client to compute on: the one given, else the current default client, else None."""
    if client is not None:
        return client
    try:
        return default_client()
    except ValueError:
        return None


def persist(*collections, client: Client | None = None):
    """Persist Dask collections on ``client`` (or the default), in one graph.

    Each collection is optimized first, as its own ``.persist()`` does: with dask 2026.8 a persisted,
    unoptimized projection of a filtered ``read_parquet`` loses its futures ("lost dependencies") on
    the next reduction (``client.persist`` and ``dask.persist`` of the raw collection both do). One
    call for all, so that collections sharing an upstream compute it once. With several collections
    they are optimized without task fusion: fusing each one alone copies the upstream they share into
    each of their fused tasks (the same partitions read, annotated or featurized once per collection),
    where the unfused graphs name the shared tasks alike and the scheduler runs them once.

    Returns
    -------
    tuple
        The persisted collections (their results computing in the background on a cluster).
    """
    client = get_client(client)
    if client is None:
        return dask.persist(*collections)
    fuse = len(collections) == 1
    optimized = [c.optimize(fuse=fuse) if hasattr(c, "optimize") else c for c in collections]
    return dask.persist(*optimized, scheduler=client)


def compute(*collections, client: Client | None = None, show_progress: bool = False):
    """Compute Dask collections on ``client`` (or the default), returning concrete results.

    Parameters
    ----------
    *collections
        Dask collections or delayed values; each result must be small (a count, a metric, a model).
    client : distributed.Client, optional
        Client to compute on; None uses the current default client, or Dask's default scheduler.
    show_progress : bool
        Show Dask's progress bar on stderr while computing.

    Returns
    -------
    tuple
        One result per collection.
    """
    client = get_client(client)
    if client is None:
        if show_progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return dask.compute(*collections)
        return dask.compute(*collections)
    futures = client.compute(list(collections))
    if show_progress:
        # distributed's text bar writes to stdout, which belongs to JSON results: send it to stderr
        with contextlib.redirect_stdout(sys.stderr):
            progress(futures)
            print()
    return tuple(client.gather(futures))


def tree_reduce(items: list, func, split_every: int = 8):
    """Tree reduction of delayed ``items`` with the n-ary ``func`` (``split_every`` inputs per task).

    The one way partial results (counts, sums, histograms) are merged: no task ever receives more than
    ``split_every`` of them. An empty ``items`` gives ``func()``.
    """
    if not items:
        return dask.delayed(func)()
    while len(items) > 1:
        items = [
            dask.delayed(func, pure=True)(*items[i : i + split_every])
            for i in range(0, len(items), split_every)
        ]
    return items[0]
