"""The `daskml-scale validate` command."""

from __future__ import annotations

import json

import pandas as pd

from daskml_scale.cli import main
from daskml_scale.data import make_transactions


def test_cli_validate_and_clean(tmp_path, capsys, client):
    df = make_transactions(2000, seed=3).compute().rename(columns={"transaction_id": "txn"})
    df.loc[5, "amount"] = -1.0
    df = pd.concat([df, df.iloc[[9]]])
    df.to_csv(tmp_path / "tx.csv", index=False)
    # the session cluster's scheduler, as a user would pass a remote one
    args = ["validate", "transactions", str(tmp_path / "tx.csv"), "--map", "txn=transaction_id"]
    args += ["--scheduler", client.scheduler.address]
    code = main([*args, "--out", str(tmp_path / "o"), "--quarantine", str(tmp_path / "q")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows_in"], out["rows_out"], out["rows_quarantined"]) == (2001, 1999, 2)
    assert out["counts"]["negative_amount"] == 1 and out["counts"]["duplicate_transaction_id"] == 1
    assert out["conserved"] is True
    q = pd.read_parquet(tmp_path / "q")
    assert sorted(q["reason"]) == ["duplicate_transaction_id", "negative_amount"]
    assert len(pd.read_parquet(tmp_path / "o")) == 1999
    # --read-twice: duplicates found before writing, the same outputs
    twice = ["--out", str(tmp_path / "o2"), "--quarantine", str(tmp_path / "q2"), "--read-twice"]
    assert main([*args, *twice]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == out["counts"]
    for a, b in (("o", "o2"), ("q", "q2")):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / a), pd.read_parquet(tmp_path / b))
    # validate only: same counts, nothing written
    assert main([*args]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"] == out["counts"] and again["out"] is None


def test_cli_unusable_schema_exits_2_and_writes_nothing(tmp_path, capsys):
    make_transactions(100, seed=0).compute().drop(columns=["card_id"]).to_parquet(tmp_path / "t.parquet")
    code = main(
        [
            "validate",
            "transactions",
            str(tmp_path / "t.parquet"),
            "--out",
            str(tmp_path / "o"),
            "--quarantine",
            str(tmp_path / "q"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "card_id" in err and "--map" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "q").exists()
