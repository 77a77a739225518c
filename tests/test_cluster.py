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


def test_persist_of_several_collections_computes_their_shared_upstream_once(client, tmp_path):
    """Two collections persisted together share the partitions of their upstream: each runs once.
    (Optimizing each with task fusion copied the shared ``map_partitions`` into both fused chains:
    every partition was computed twice, as in clean's first pass and fit's train/valid split.)"""
    import dask.dataframe as dd
    import pandas as pd

    from daskml_scale.cluster import persist

    log = tmp_path / "calls"

    def upstream(pdf):
        with open(log, "a") as fh:
            fh.write(f"{len(pdf)}\n")
        return pdf

    base = dd.from_pandas(pd.DataFrame({"a": range(400)}), npartitions=4).map_partitions(upstream)
    even, odd = base[base["a"] % 2 == 0] + 1, base[base["a"] % 2 == 1] * 2
    even, odd = persist(even, odd, client=client)
    got_even, got_odd = compute(even["a"].sum(), odd["a"].sum(), client=client)
    assert (got_even, got_odd) == (sum(range(0, 400, 2)) + 200, 2 * sum(range(1, 400, 2)))
    # (Dask calls ``upstream`` on small fake frames to infer its metadata: not partitions)
    assert [n for n in log.read_text().split() if n == "100"] == ["100"] * 4


def test_workers_take_arrays_under_64_mib_from_the_heap(client):
    """Worker processes start with MALLOC_MMAP_THRESHOLD_ (glibc reads it at process start): arrays
    under 64 MiB come from the reused heap instead of a fresh, page-faulted mmap each (see
    ``cluster.WORKER_MMAP_THRESHOLD``)."""
    from daskml_scale.cluster import WORKER_MMAP_THRESHOLD

    seen = client.run(lambda: os.environ.get("MALLOC_MMAP_THRESHOLD_"))
    assert len(seen) == 2 and set(seen.values()) == {str(WORKER_MMAP_THRESHOLD)}
