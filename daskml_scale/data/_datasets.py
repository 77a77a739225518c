"""Public datasets: MovieLens -> interactions, the ULB credit card fraud data -> transactions.

A local copy is read when a path is given (tests only ever do that). Otherwise the archive is fetched
once with pooch into a cache and verified by its sha256; a dataset whose sha256 this library does not
know is refused unless you pass ``known_hash=`` yourself (computed from a copy you trust), so nothing
unverified is ever used. ``REGISTRY`` is the source of ``datasets/manifest.json`` (a test checks they
agree).
"""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .. import schema as S
from ..cluster import compute
from ..errors import ArtifactError, ParameterError, SchemaError

__all__ = ["REGISTRY", "load_creditcard", "load_movielens"]

_ML = "https://files.grouplens.org/datasets/movielens/"
_ML_LICENSE = (
    "GroupLens MovieLens usage license: research use, acknowledge in publications, redistribution under "
    "the same terms, no commercial use without permission (see the dataset's README)"
)
_UNKNOWN = None  # sha256 not yet recorded: the fetcher refuses it unless known_hash= is passed

REGISTRY: dict[str, dict] = {
    "ml-latest-small": {
        "url": _ML + "ml-latest-small.zip",
        "sha256": _UNKNOWN,
        "member": "ml-latest-small/ratings.csv",
        "format": "movielens-csv",
        "table": "interactions",
        "license": _ML_LICENSE,
        "local": "movielens-latest-small",
        "local_sha256": {"ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"},
        "rows": 100836,
    },
    "ml-100k": {
        "url": _ML + "ml-100k.zip",
        "sha256": _UNKNOWN,
        "member": "ml-100k/u.data",
        "format": "movielens-100k",
        "table": "interactions",
        "license": _ML_LICENSE,
        "rows": 100000,
    },
    "ml-1m": {
        "url": _ML + "ml-1m.zip",
        "sha256": _UNKNOWN,
        "member": "ml-1m/ratings.dat",
        "format": "movielens-dat",
        "table": "interactions",
        "license": _ML_LICENSE,
        "rows": 1000209,
    },
    "ml-20m": {
        "url": _ML + "ml-20m.zip",
        "sha256": _UNKNOWN,
        "member": "ml-20m/ratings.csv",
        "format": "movielens-csv",
        "table": "interactions",
        "license": _ML_LICENSE,
        "rows": 20000263,
    },
    "ml-25m": {
        "url": _ML + "ml-25m.zip",
        "sha256": _UNKNOWN,
        "member": "ml-25m/ratings.csv",
        "format": "movielens-csv",
        "table": "interactions",
        "license": _ML_LICENSE,
        "rows": 25000095,
    },
    "creditcard": {
        "url": "https://storage.googleapis.com/download.tensorflow.org/data/creditcard.csv",
        "sha256": _UNKNOWN,
        "member": None,
        "format": "creditcard-csv",
        "table": "transactions",
        "license": (
            "Open Database License (ODbL) 1.0 for the database, Database Contents License (DbCL) 1.0 for "
            "the contents, as listed on Kaggle (mlg-ulb/creditcardfraud); cite Dal Pozzolo et al. 2015"
        ),
        "rows": 284807,
    },
}

MOVIELENS_MAPPING = {"userId": S.USER_ID, "movieId": S.ITEM_ID, "rating": S.WEIGHT, "timestamp": S.TIMESTAMP}
CREDITCARD_ORIGIN = "2013-09-01"
V_COLUMNS = [f"V{i}" for i in range(1, 29)]
CREDITCARD_COLUMNS = ["Time", *V_COLUMNS, "Amount", "Class"]


def _repo_datasets_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "datasets"


def _fetch(name: str, known_hash: str | None, data_home) -> Path:
    """Download (once, cached) and verify a registry entry; return the path of its data file."""
    entry = REGISTRY[name]
    h = known_hash or entry["sha256"]
    if not h:
        raise ParameterError(
            f"No sha256 is recorded for {name!r} ({entry['url']}), so it will not be downloaded unverified. "
            "Pass known_hash='sha256:<hex>' from a copy you trust, or download it yourself and pass its path."
        )
    import pooch

    h = h if ":" in h else f"sha256:{h}"
    cache = Path(data_home) if data_home is not None else Path(pooch.os_cache("daskml-scale"))
    if entry["member"] is None:
        return Path(pooch.retrieve(entry["url"], known_hash=h, path=cache, progressbar=False))
    files = pooch.retrieve(
        entry["url"],
        known_hash=h,
        path=cache,
        processor=pooch.Unzip(members=[entry["member"]]),
        progressbar=False,
    )
    return Path(files[0])


def _verify_local(path: Path, hashes: dict) -> None:
    from ..storage import sha256_file

    for rel, h in hashes.items():
        if sha256_file(path / rel) != h:
            raise ArtifactError(
                f"{path / rel} does not match its recorded sha256 ({h[:12]}...): the shipped copy was "
                "modified. Restore it from git, or pass the path explicitly to read it unverified."
            )


def _movielens_file(path: Path) -> tuple[Path, str]:
    if path.is_dir():
        for name, fmt in (
            ("ratings.csv", "movielens-csv"),
            ("ratings.dat", "movielens-dat"),
            ("u.data", "movielens-100k"),
        ):
            if (path / name).is_file():
                return path / name, fmt
        raise SchemaError(
            f"{path} holds no MovieLens ratings file (ratings.csv, ratings.dat or u.data). Give the "
            "directory of an unzipped MovieLens release."
        )
    if not path.is_file():
        raise ParameterError(
            f"{path} does not exist. Give a MovieLens directory, ratings file, or a name in {sorted(k for k in REGISTRY if k.startswith('ml-'))}."
        )
    fmt = {"ratings.dat": "movielens-dat", "u.data": "movielens-100k"}.get(path.name, "movielens-csv")
    return path, fmt


def _movielens_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.USER_ID: df["userId"].astype("int64"),
            S.ITEM_ID: df["movieId"].astype("int64"),
            S.TIMESTAMP: pd.to_datetime(df["timestamp"].astype("int64"), unit="s").astype("datetime64[ns]"),
            S.WEIGHT: df["rating"].astype("float64"),
        }
    )


def load_movielens(
    name_or_path: str = "ml-latest-small",
    *,
    known_hash: str | None = None,
    data_home=None,
    blocksize: str | int = "64MiB",
) -> dd.DataFrame:
    """MovieLens ratings as canonical interactions (``weight`` = the rating, 0.5-5 stars).

    Parameters
    ----------
    name_or_path : str or path-like
        ``"ml-latest-small"`` (shipped in ``datasets/``), ``"ml-100k"``, ``"ml-1m"``, ``"ml-20m"``,
        ``"ml-25m"``; or a local unzipped release directory, or its ratings file (``ratings.csv``,
        ``ratings.dat`` or ``u.data``).
    known_hash : str, optional
        ``"sha256:<hex>"`` of the zip, required to download a release whose hash is not recorded.
    data_home : path, optional
        Download cache (default: pooch's user cache ``daskml-scale``).
    blocksize : str or int
        CSV bytes per partition.

    Returns
    -------
    dask.dataframe.DataFrame
        ``user_id`` int64, ``item_id`` int64, ``timestamp`` datetime64[ns] (UTC, from epoch seconds),
        ``weight`` float64.

    Examples
    --------
    >>> from daskml_scale.data import load_movielens
    >>> ml = load_movielens("ml-latest-small")  # doctest: +SKIP
    >>> len(ml)  # doctest: +SKIP
    100836
    """
    name = str(name_or_path)
    if name in REGISTRY and REGISTRY[name]["table"] == "interactions":
        local = REGISTRY[name].get("local")
        if local and (_repo_datasets_dir() / local).is_dir():
            path = _repo_datasets_dir() / local
            _verify_local(path, REGISTRY[name].get("local_sha256", {}))
        else:
            path = _fetch(name, known_hash, data_home)
    elif name in REGISTRY:
        raise ParameterError(f"{name!r} is not a MovieLens dataset; use load_creditcard.")
    else:
        path = Path(name_or_path)
    file, fmt = _movielens_file(path)
    names = ["userId", "movieId", "rating", "timestamp"]
    if fmt == "movielens-csv":
        raw = dd.read_csv(str(file), blocksize=blocksize, dtype={"rating": "float64"})
        missing = [c for c in names if c not in raw.columns]
        if missing:
            raise SchemaError(
                f"{file} lacks MovieLens column(s) {missing}; found {list(raw.columns)}.", column=missing[0]
            )
    elif (
        fmt == "movielens-dat"
    ):  # "UserID::MovieID::Rating::Timestamp"; the python engine reads multi-char separators
        raw = dd.read_csv(str(file), sep="::", engine="python", header=None, names=names, blocksize=blocksize)
    else:  # u.data: tab separated
        raw = dd.read_csv(str(file), sep="\t", header=None, names=names, blocksize=blocksize)
    meta = _movielens_frame(
        pd.DataFrame({c: pd.Series([], dtype="int64") for c in names}).astype({"rating": "float64"})
    )
    return raw[names].map_partitions(_movielens_frame, meta=meta)


def _creditcard_frame(df: pd.DataFrame, origin, offsets, partition_info=None) -> pd.DataFrame:
    part = 0 if partition_info is None else int(partition_info["number"])
    start = int(offsets[part]) if len(offsets) > part else 0
    n = len(df)
    out = pd.DataFrame(
        {
            S.TRANSACTION_ID: np.arange(start, start + n, dtype=np.int64),
            S.TIMESTAMP: (origin + pd.to_timedelta(df["Time"].to_numpy(dtype="float64"), unit="s")).astype(
                "datetime64[ns]"
            ),
            S.CARD_ID: np.zeros(n, dtype=np.int64),
            S.MERCHANT_ID: np.zeros(n, dtype=np.int64),
            S.AMOUNT: df["Amount"].to_numpy(dtype="float64"),
            S.IS_FRAUD: df["Class"].to_numpy(dtype="int64"),
        },
        index=df.index,
    )
    for c in V_COLUMNS:
        out[c] = df[c].to_numpy(dtype="float64")
    return out


def load_creditcard(
    path=None,
    *,
    known_hash: str | None = None,
    data_home=None,
    origin: str = CREDITCARD_ORIGIN,
    blocksize: str | int = "64MiB",
    client=None,
) -> dd.DataFrame:
    """The ULB credit card fraud data (``creditcard.csv``) as canonical transactions.

    Mapping: ``Time`` (seconds since the first transaction) -> ``timestamp = origin + Time``;
    ``transaction_id`` = row number in the file (0-based); ``Amount`` -> ``amount``; ``Class`` ->
    ``is_fraud``; ``V1..V28`` (PCA components) pass through as features. The data has **no card or
    merchant identity**, so ``card_id`` and ``merchant_id`` are the constant 0: per-card behaviour
    features are meaningless on it (every row is the same "card"); model ``V1..V28`` and ``amount``.

    Parameters
    ----------
    path : path-like, optional
        Local ``creditcard.csv`` (or its directory). Without it, the file is fetched with pooch
        (which needs ``known_hash``: no sha256 is recorded yet).
    known_hash : str, optional
        ``"sha256:<hex>"`` of the file to download.
    data_home : path, optional
        Download cache.
    origin : str
        Timestamp of ``Time == 0``. The data covers two days of September 2013; the exact day is not
        published, so the default ``"2013-09-01"`` is a convention.
    blocksize : str or int
        CSV bytes per partition.
    client : distributed.Client, optional
        Used to count rows per partition (one small pass) so that ids follow the file's row order.

    Returns
    -------
    dask.dataframe.DataFrame
        ``transaction_id, timestamp, card_id, merchant_id, amount, is_fraud, V1..V28``.

    Examples
    --------
    >>> from daskml_scale.data import load_creditcard
    >>> tx = load_creditcard("datasets/creditcard-sample/creditcard_sample.csv")  # doctest: +SKIP
    """
    if path is None:
        file = _fetch("creditcard", known_hash, data_home)
    else:
        file = Path(path)
        if file.is_dir():
            file = file / "creditcard.csv"
        if not file.is_file():
            raise ParameterError(
                f"{file} does not exist. Give the path of creditcard.csv (Time, V1..V28, Amount, Class)."
            )
    raw = dd.read_csv(str(file), blocksize=blocksize, dtype={c: "float64" for c in CREDITCARD_COLUMNS[:-1]})
    missing = [c for c in CREDITCARD_COLUMNS if c not in raw.columns]
    if missing:
        raise SchemaError(
            f"{file} is not in the creditcard.csv format: column(s) {missing} missing; found {list(raw.columns)}.",
            column=missing[0],
        )
    (lengths,) = compute(raw.map_partitions(len), client=client)  # small: one count per partition
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])[:-1].tolist()
    ts0 = pd.Timestamp(origin)
    meta = _creditcard_frame(raw._meta.iloc[:0], ts0, [0])
    return raw.map_partitions(_creditcard_frame, ts0, offsets, meta=meta, align_dataframes=False)
