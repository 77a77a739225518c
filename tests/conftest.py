"""Test tiers.

* Unit tests run on Dask's synchronous scheduler (deterministic, debuggable): the autouse fixture
  ``_sync_scheduler`` sets it for every test that does not ask for ``client``.
* Integration tests ask for ``client``: one session-scoped ``LocalCluster(processes=True, n_workers=2,
  threads_per_worker=1)``, whose client is made current only inside those tests.
* ``gpu`` tests are skipped without a CUDA GPU.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns and runs ~10x slower otherwise
os.environ.setdefault("MPLBACKEND", "Agg")

import dask  # noqa: E402
import pytest  # noqa: E402


def _has_gpu() -> bool:
    """True when a CUDA device is visible and xgboost was built with CUDA.

    Only "no driver / no device" means no GPU; any other failure of the probe is a real error and
    propagates, so a broken CUDA install fails the session instead of silently skipping GPU tests.
    """
    if shutil.which("nvidia-smi") is None:
        return False
    import subprocess

    import xgboost as xgb

    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if probe.returncode != 0 or "GPU" not in probe.stdout:
        return False
    return bool(xgb.build_info().get("USE_CUDA"))


HAS_GPU = _has_gpu()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def _cluster():
    from distributed import LocalCluster

    with LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit="4GiB",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def _session_client(_cluster):
    from distributed import Client

    with Client(_cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def client(_session_client):
    """The session LocalCluster's client, made current for this test only."""
    with _session_client.as_current(), dask.config.set(scheduler=_session_client):
        yield _session_client


@pytest.fixture
def spread(client):
    """Record which workers ran tasks, to check that distributed work really spread out.

    Usage::

        with spread() as ts:
            result = some_distributed_call(...)
        ts.assert_spread(prefix="als")   # tasks whose key contains "als" ran on >= 2 workers

    ``ts.workers(prefix)`` returns the set of worker addresses that ran matching tasks.
    """
    from distributed import get_task_stream

    class _Recorder:
        def __init__(self):
            self._ts = None

        def __enter__(self):
            self._ts = get_task_stream(client)
            self._ts.__enter__()
            return self

        def __exit__(self, *exc):
            return self._ts.__exit__(*exc)

        def workers(self, prefix: str = "") -> set[str]:
            return {
                d["worker"]
                for d in self._ts.data
                if prefix in str(d.get("key", "")) and d.get("worker") is not None
            }

        def assert_spread(self, prefix: str = "", at_least: int = 2) -> set[str]:
            ran_on = self.workers(prefix)
            assert len(ran_on) >= at_least, (
                f"tasks matching {prefix!r} ran on {len(ran_on)} worker(s) {sorted(ran_on)}, "
                f"expected at least {at_least}"
            )
            return ran_on

    return _Recorder


@pytest.fixture(autouse=True)
def _sync_scheduler(request):
    if "client" in request.fixturenames:
        yield
        return
    with dask.config.set(scheduler="sync"):
        yield
