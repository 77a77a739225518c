import json
import subprocess
import sys

import pandas as pd
import pytest

from daskml_scale import __version__
from daskml_scale.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("generate", "demo"):
        assert cmd in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_generate_writes_partitioned_parquet(client, tmp_path, capsys):
    out = tmp_path / "txns"
    code = main(
        [
            "generate",
            "transactions",
            "--rows",
            "9000",
            "--out",
            str(out),
            "--partitions",
            "3",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"table": "transactions", "rows": 9000, "partitions": 3, "out": str(out)}
    assert len(list(out.glob("*.parquet"))) == 3
    df = pd.read_parquet(out)
    assert len(df) == 9000 and df.transaction_id.is_unique


def test_generate_rejects_unknown_table():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "users", "--rows", "1", "--out", "x"])


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "daskml_scale.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and __version__ in out.stdout


def _say(text):
    print(text, flush=True)  # runs on a worker process: its own stdout
    return True


def test_embedded_cluster_workers_print_to_stderr_not_stdout(capfd, monkeypatch):
    """Libraries print from worker processes (xgboost.dask's "got rank N"): the workers the CLI starts
    have stderr as their stdout, so what a command prints on stdout stays machine-readable JSON."""
    import argparse

    from daskml_scale.cli import _client

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with _client(argparse.Namespace(scheduler=None)) as c:
        assert all(c.run(_say, "printed-by-a-worker").values())
        print("printed-by-the-command", flush=True)
    out, err = capfd.readouterr()
    assert "printed-by-a-worker" not in out
    assert "printed-by-a-worker" in err
    assert "printed-by-the-command" in out  # the command's own stdout is restored
