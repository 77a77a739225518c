"""The README's two commands in one clone: an installed copy of the package must stay as pip left it.

Regression test (issue 11, defect 8): numba's ``cache=True`` wrote compiled kernels into
``site-packages/daskml_scale/features/__pycache__``; ``pip install -e`` then left that folder behind and
every process outside the repo imported it as an empty namespace package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import daskml_scale

SNIPPET = """
import numpy as np, pandas as pd
from daskml_scale.data import make_transactions
from daskml_scale.features import TransactionFeatures
import dask
ddf = make_transactions(3000, seed=0)
with dask.config.set(scheduler="sync"):
    out = TransactionFeatures().fit(ddf).transform(ddf).compute()
print(len(out))
"""


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_installed_package_gets_no_cache_files(tmp_path):
    site = tmp_path / "site"
    pkg = site / "daskml_scale"
    shutil.copytree(Path(daskml_scale.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = _files(pkg)
    cache_home = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(cache_home), PYTHONDONTWRITEBYTECODE="1")
    for _ in range(2):  # the second run loads what the first cached
        r = subprocess.run(
            [sys.executable, "-c", SNIPPET], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip() == "3000"
    written = sorted(_files(pkg) - before)
    assert written == [], f"files written into the installed package: {written[:10]}"
    cached = [p for p in (cache_home / "daskml-scale" / "numba").rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert cached, "numba kernels were not cached in the user cache directory"


def test_numba_cache_dir_respects_the_users_choice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    r = subprocess.run(
        [sys.executable, "-c", "import daskml_scale, numba; print(numba.config.CACHE_DIR)"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "mine")
