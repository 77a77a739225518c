"""Readers (parquet, CSV, fsspec URLs, mapping, coercion) and sharding."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskml_scale.data import (
    bucket_of,
    coerce,
    make_interactions,
    make_transactions,
    read_interactions,
    read_sharded,
    read_transactions,
    sharding_info,
    write_sharded,
)
from daskml_scale.errors import ArtifactError, ParameterError, SchemaError
from daskml_scale.schema import TRANSACTIONS


@pytest.fixture
def tx():
    return make_transactions(4000, npartitions=2, seed=2).compute()


def test_parquet_roundtrip_with_mapping(tx, tmp_path):
    tx.rename(columns={"transaction_id": "txn", "card_id": "card"}).to_parquet(tmp_path / "t.parquet")
    ddf = read_transactions(tmp_path / "t.parquet", columns={"txn": "transaction_id", "card": "card_id"})
    got = ddf.compute()
    pd.testing.assert_frame_equal(got[list(tx.columns)].reset_index(drop=True), tx.reset_index(drop=True))
    assert got["transaction_id"].dtype == "int64"  # numpy ints stay int64


def test_file_url_and_storage_options(tx, tmp_path):
    tx.to_parquet(tmp_path / "t.parquet")
    ddf = read_transactions(f"file://{tmp_path}/t.parquet", storage_options={})
    assert len(ddf) == len(tx)


def test_csv_dirty_values_become_missing_not_crash(tx, tmp_path):
    df = tx.astype({"amount": object, "card_id": object, "timestamp": object})
    df.loc[df.index[-1], "amount"] = "twelve"  # late in the file: dask's dtype sample does not see it
    df.loc[df.index[-2], "card_id"] = "x9"
    df.loc[df.index[-3], "timestamp"] = "yesterday"
    df.to_csv(tmp_path / "t.csv", index=False)
    ddf = read_transactions(tmp_path / "t.csv", blocksize=20_000)
    assert ddf.npartitions > 1
    got = ddf.compute()
    assert got["amount"].dtype == "float64" and str(got["timestamp"].dtype) == "datetime64[ns]"
    assert got["amount"].isna().sum() == 1 and got["card_id"].isna().sum() == 1
    assert got["timestamp"].isna().sum() == 1
    np.testing.assert_allclose(got["amount"].iloc[:100], tx["amount"].iloc[:100])


def test_numeric_timestamps_need_time_unit(tmp_path):
    ix = make_interactions(500, seed=1).compute()
    ix["timestamp"] = ix["timestamp"].astype("int64") // 10**9
    ix.to_csv(tmp_path / "i.csv", index=False)
    with pytest.raises(SchemaError, match="time_unit='s'"):
        read_interactions(tmp_path / "i.csv")
    got = read_interactions(tmp_path / "i.csv", time_unit="s").compute()
    assert got["timestamp"].iloc[0] == pd.Timestamp(ix["timestamp"].iloc[0], unit="s")


def test_schema_errors_before_reading(tx, tmp_path):
    tx.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(SchemaError, match="'nope'.*not in"):
        read_transactions(tmp_path / "t.parquet", columns={"nope": "card_id"})
    with pytest.raises(SchemaError, match="merchant_id.*missing"):
        read_transactions(tmp_path / "t.parquet", columns={"merchant_id": "something_else"})
    with pytest.raises(ParameterError, match="format"):
        read_transactions(tmp_path / "t.parquet", format="xlsx")
    with pytest.raises(ParameterError, match="dict"):
        read_transactions(tmp_path / "t.parquet", columns=["a"])


def test_coerce_string_ids_and_labels():
    df = pd.DataFrame(
        {
            "transaction_id": ["1", "2", "x"],
            "timestamp": ["2025-01-01", "2025-01-02", None],
            "card_id": ["a", None, "c"],
            "merchant_id": [1.0, 2.5, np.nan],
            "amount": [1, 2, 3],
            "is_fraud": [True, False, True],
        }
    )
    got = coerce(dd.from_pandas(df, npartitions=1), TRANSACTIONS).compute()
    assert got["transaction_id"].tolist()[:2] == [1, 2] and got["transaction_id"].isna().iloc[2]
    assert got["merchant_id"].isna().tolist() == [False, True, True]  # 2.5 is not an integer id
    assert got["card_id"].isna().tolist() == [False, True, False]
    assert got["is_fraud"].tolist() == [1, 0, 1] and got["is_fraud"].dtype == "int64"


# ------------------------------------------------------------------------------------------ sharding
def test_sharding_every_entity_in_one_partition(tx, tmp_path):
    ddf = dd.from_pandas(tx, npartitions=3)
    info = write_sharded(ddf, tmp_path / "s", key="card_id", buckets=4)
    assert info["rows"] == len(tx) and len(info["rows_per_bucket"]) == 4
    back = read_sharded(tmp_path / "s")
    assert back.npartitions == 4
    seen = {}
    for b in range(4):
        part = back.partitions[b].compute()
        assert (bucket_of(part["card_id"], 4) == b).all()
        assert part[["card_id", "timestamp"]].apply(tuple, axis=1).is_monotonic_increasing
        for card in part["card_id"].unique():
            assert card not in seen
            seen[card] = b
    # oracle: same rows as the input
    got = back.compute().sort_values("transaction_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, tx.sort_values("transaction_id").reset_index(drop=True))
    # per-entity work needs no shuffle: map_partitions groupby equals a global groupby
    per_card = back.map_partitions(lambda d: d.groupby("card_id")["amount"].sum()).compute().sort_index()
    pd.testing.assert_series_equal(per_card, tx.groupby("card_id")["amount"].sum().sort_index())


def test_sharding_by_day_and_skewed_key(tmp_path):
    df = make_transactions(3000, npartitions=2, seed=5, days=3).compute()
    df.loc[: len(df) // 2, "card_id"] = 7  # half the rows on one card
    info = write_sharded(
        dd.from_pandas(df, npartitions=2), tmp_path / "d", key="card_id", buckets=3, by_day=True
    )
    assert max(info["rows_per_bucket"]) >= len(df) // 2
    assert sorted(p.name for p in (tmp_path / "d").glob("day=*")) == [
        "day=2025-01-01",
        "day=2025-01-02",
        "day=2025-01-03",
    ]
    one_day = read_sharded(tmp_path / "d", days=["2025-01-02"]).compute()
    assert (one_day["timestamp"].dt.strftime("%Y-%m-%d") == "2025-01-02").all()
    assert len(one_day) == (df["timestamp"].dt.strftime("%Y-%m-%d") == "2025-01-02").sum()
    assert len(read_sharded(tmp_path / "d")) == len(df)
    assert sharding_info(tmp_path / "d")["by_day"] is True


def test_sharding_more_buckets_than_keys_and_errors(tmp_path):
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [3, 4, 5]})
    write_sharded(dd.from_pandas(df, npartitions=1), tmp_path / "u", key="user_id", buckets=8)
    back = read_sharded(tmp_path / "u")
    assert back.npartitions == 8 and len(back) == 3
    assert sum(len(back.partitions[i].compute()) == 0 for i in range(8)) >= 6
    with pytest.raises(SchemaError, match="key='nope'"):
        write_sharded(dd.from_pandas(df, npartitions=1), tmp_path / "x", key="nope", buckets=2)
    with pytest.raises(ParameterError, match="buckets"):
        write_sharded(dd.from_pandas(df, npartitions=1), tmp_path / "x", key="user_id", buckets=0)
    with pytest.raises(SchemaError, match="by_day"):
        write_sharded(
            dd.from_pandas(df, npartitions=1), tmp_path / "x", key="user_id", buckets=2, by_day=True
        )
    with pytest.raises(ArtifactError, match="write_sharded"):
        read_sharded(tmp_path)
    assert not (tmp_path / "x").exists()


def test_sharding_on_cluster(client, spread, tmp_path):
    ddf = make_transactions(6000, npartitions=3, seed=1)
    with spread() as ts:
        info = write_sharded(ddf, tmp_path / "c", key="card_id", buckets=3, client=client)
    ts.assert_spread()
    assert info["rows"] == 6000
    assert len(read_sharded(tmp_path / "c")) == 6000
