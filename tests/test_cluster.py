import os
import subprocess
import sys

import pytest
from distributed import LocalCluster

from daskml_scale import ParameterError, connect, get_client
from daskml_scale.cluster import compute, machine_size


def test_machine_size_is_one_worker_per_core():
    workers, threads, memory = machine_size()
    assert workers == (os.cpu_count() or 1)
    assert threads == 1
    assert memory == "auto" or memory.endswith("B")


def test_connect_starts_local_cluster_and_closes_it(capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with connect(n_workers=1, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0") as c:
        assert c.submit(sum, [1, 2]).result() == 3
        info = c.scheduler_info()
        assert len(info["workers"]) == 1
        assert all(w["host"] == "127.0.0.1" for w in info["workers"].values())
        cluster = c.cluster
    assert "Dask dashboard: http" in capsys.readouterr().err
    assert cluster.status.name == "closed"


def test_connect_uses_environment_variable(monkeypatch, capsys):
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as lc:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", lc.scheduler_address)
        with connect(quiet=True) as c:
            assert c.scheduler.address == lc.scheduler_address
            assert c.cluster is None  # connected, not started
        assert lc.status.name == "running"  # closing the client leaves someone else's cluster alone
    assert capsys.readouterr().err == ""


def test_connect_address_beats_environment(monkeypatch):
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as lc:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")  # nothing listens there
        with connect(lc.scheduler_address, quiet=True) as c:
            assert c.scheduler.address == lc.scheduler_address


def test_connect_refuses_sizing_a_remote_cluster():
    with pytest.raises(ParameterError, match="n_workers.*LocalCluster.*scheduler address"):
        connect("tcp://127.0.0.1:1", n_workers=4)


def test_get_client_and_compute_follow_the_current_client(client):
    assert get_client() is client
    import dask

    (v,) = compute(dask.delayed(sum)([1, 2, 3]))
    assert v == 6


def test_sync_tier_has_no_client():
    assert get_client() is None
    import dask

    assert compute(dask.delayed(len)([1, 2])) == (2,)


def test_connect_from_a_fresh_process_with_env(tmp_path):
    """The same script runs against a cluster named by DASK_SCHEDULER_ADDRESS."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as lc:
        code = "from daskml_scale import connect\nwith connect(quiet=True) as c: print(c.scheduler.address)"
        env = dict(os.environ, DASK_SCHEDULER_ADDRESS=lc.scheduler_address)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.stdout.strip() == lc.scheduler_address, out.stderr
