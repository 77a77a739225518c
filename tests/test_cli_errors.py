"""Everyday mistakes on the command line end with one line naming the path and the fix, status 2.

Regression tests (issue 11, defect 9): a missing input, a directory without parquet files and a file
that is not parquet each printed a Python traceback from dask's reader.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from daskml_scale.cli import main


@pytest.fixture
def inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no data here")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"this is not parquet")
    return {"missing": tmp_path / "no-such-dir", "empty": empty, "corrupt": corrupt}


def _commands(path, tmp_path):
    p = str(path)
    return {
        "features": ["features", p, "--out", str(tmp_path / "f")],
        "features --history": ["features", str(tmp_path / "no-such-input"), "--out", str(tmp_path / "f")],
        "validate": ["validate", "transactions", p, "--out", str(tmp_path / "v"), "--quarantine", str(tmp_path / "q")],
        "train fraud": ["train", "fraud", p, "--model", str(tmp_path / "m")],
        "train als": ["train", "als", p, "--model", str(tmp_path / "m")],
        "evaluate classification": ["evaluate", "classification", p],
        "evaluate ranking": ["evaluate", "ranking", p, p],
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt"])
@pytest.mark.parametrize(
    "command",
    ["features", "validate", "train fraud", "train als", "evaluate classification", "evaluate ranking"],
)
def test_bad_input_path_is_one_line_with_the_path(kind, command, inputs, tmp_path, capsys):
    path = inputs[kind]
    argv = _commands(path, tmp_path)[command]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"daskml-scale {argv[0]}: error: ")
    assert str(path) in err[0]
    fix = {"missing": "does not exist", "empty": "no parquet files", "corrupt": "no parquet footer"}[kind]
    assert fix in err[0]
    assert not any((tmp_path / d).exists() for d in ("f", "v", "q", "m"))  # nothing written


def test_console_script_prints_no_traceback(inputs, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "daskml_scale.cli", "features", str(inputs["missing"]), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"daskml-scale features: error: Input {inputs['missing']} does not exist. Check the path: give a parquet "
        "file, a directory of parquet files, or a glob such as DIR/*.parquet."
    )


def test_corrupt_file_among_good_ones_is_one_line(client, tmp_path, capsys):
    from daskml_scale.data import make_transactions

    data = tmp_path / "txns"
    data.mkdir()
    make_transactions(2000, seed=0).compute().to_parquet(data / "part.0.parquet", index=False)
    (data / "part.1.parquet").write_bytes(b"PAR1 truncated copy")
    code = main(["features", str(data), "--out", str(tmp_path / "o"), "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "part.1.parquet" in err[0] and err[0].startswith("daskml-scale features: error: ")
    assert not (tmp_path / "o").exists()


def test_glob_that_matches_nothing(tmp_path, capsys):
    code = main(["features", str(tmp_path / "*.parquet"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "matches no files" in err


def test_reader_accepts_a_good_directory(tmp_path):
    from daskml_scale.storage import read_parquet

    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "x.parquet")
    assert read_parquet(tmp_path).compute()["a"].tolist() == [1, 2]


@pytest.mark.slow
def test_commands_that_shuffle_print_no_shuffle_warnings(tmp_path):
    """Regression (issue 11, defect 9): p2p shuffles logged two WARNING lines each in the scheduler of
    the LocalCluster that the CLI starts; `features` shuffles twice."""
    import os

    from daskml_scale.data import make_transactions

    data = tmp_path / "txns"
    data.mkdir()
    make_transactions(4000, seed=1).compute().to_parquet(data / "part.0.parquet", index=False)
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    r = subprocess.run(
        [sys.executable, "-m", "daskml_scale.cli", "features", str(data), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Dask dashboard" in r.stderr  # the cluster was started by the command
    assert "distributed.shuffle" not in r.stderr, r.stderr
    assert len(pd.read_parquet(tmp_path / "o")) == 4000
