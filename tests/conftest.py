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
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        import xgboost as xgb

        return bool(xgb.build_info().get("USE_CUDA"))
    except Exception:  # pragma: no cover - environment probe
        return False


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


@pytest.fixture(autouse=True)
def _sync_scheduler(request):
    if "client" in request.fixturenames:
        yield
        return
    with dask.config.set(scheduler="sync"):
        yield
