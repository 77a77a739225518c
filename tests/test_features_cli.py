"""``daskml-scale features``: transaction_id plus every feature, with and without history."""

from __future__ import annotations

import json

import dask.dataframe as dd
import pandas as pd
import pytest

from daskml_scale.cli import main
from daskml_scale.data import make_transactions
from daskml_scale.features import TransactionFeatures


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("features-cli")
    df = make_transactions(6_000, n_cards=80, npartitions=3, seed=5).compute(scheduler="sync")
    cutoff = df.timestamp.quantile(0.7)
    paths = {}
    for name, part in (
        ("all", df),
        ("hist", df[df.timestamp < cutoff]),
        ("new", df[df.timestamp >= cutoff]),
    ):
        paths[name] = root / name
        paths[name].mkdir()
        part.reset_index(drop=True).to_parquet(paths[name] / "part.0.parquet", index=False)
    return df, paths


def test_features_command_with_history_and_spec(client, tables, tmp_path, capsys):
    df, paths = tables
    addr = client.scheduler.address
    spec = tmp_path / "spec.json"
    code = main(
        ["features", str(paths["all"]), "--out", str(tmp_path / "all"), "--save-spec", str(spec)]
        + ["--scheduler", addr]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    names = report["features"]
    assert set(TransactionFeatures.REQUIRED) <= set(names)
    full = pd.read_parquet(tmp_path / "all").set_index("transaction_id").sort_index()
    assert list(full.columns) == names and len(full) == len(df)

    code = main(
        ["features", str(paths["new"]), "--history", str(paths["hist"]), "--spec", str(spec)]
        + ["--out", str(tmp_path / "new"), "--scheduler", addr]
    )
    assert code == 0
    got = pd.read_parquet(tmp_path / "new").set_index("transaction_id").sort_index()
    pd.testing.assert_frame_equal(got, full.loc[got.index], check_exact=True)
    # the same values as the library
    tf = TransactionFeatures.from_dict(json.loads(spec.read_text()))
    lib = tf.transform(dd.read_parquet(paths["all"])).compute().set_index("transaction_id").sort_index()
    pd.testing.assert_frame_equal(full, lib[names], check_exact=True)


def test_features_command_errors(tables, tmp_path, capsys):
    _, paths = tables
    code = main(["features", str(paths["all"]), "--out", str(tmp_path / "x"), "--spec", str(tmp_path)])
    assert code == 2
    assert "--spec" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_features_command_names_a_missing_column(client, tables, tmp_path, capsys):
    df, _ = tables
    src = tmp_path / "no-amount"
    src.mkdir()
    df.drop(columns=["amount"]).reset_index(drop=True).to_parquet(src / "part.0.parquet", index=False)
    code = main(["features", str(src), "--out", str(tmp_path / "x"), "--scheduler", client.scheduler.address])
    assert code == 2
    err = capsys.readouterr().err
    assert "no column 'amount'" in err and not (tmp_path / "x").exists()
