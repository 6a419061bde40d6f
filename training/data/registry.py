"""One entry point from a dataset name or a (format, path) pair to a :class:`PreparedDataset`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from training.data import amazon, movielens, recbole, yelp
from training.data.fetch import SOURCE_FILE, dataset_path, fetch, is_fetched
from training.data.preprocess import PreparedDataset, prepare
from training.data.schema import RawDataset

LOADERS: dict[str, Callable[[Path], RawDataset]] = {
    "recbole": recbole.load_recbole,
    "ml-100k": movielens.load_ml100k,
    "ml-1m": movielens.load_ml1m,
    "ml-latest": movielens.load_ml_latest,
    "amazon-2014": amazon.load_amazon_2014,
    "amazon-2018": amazon.load_amazon_2018,
    "yelp": yelp.load_yelp,
}
NAMED_DATASETS = ("ml-100k", "ml-1m")


def load_raw(fmt: str, path: Path) -> RawDataset:
    """Load raw data of format ``fmt`` (one of :data:`LOADERS`) from ``path``."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {sorted(LOADERS)}")
    return LOADERS[fmt](Path(path))


def load_named_raw(name: str, auto_fetch: bool = True) -> RawDataset:
    """Load an embedded dataset by name, fetching it first if needed."""
    if name not in NAMED_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; named datasets: {list(NAMED_DATASETS)} (or pass --format and --path)")
    if not is_fetched(name):
        if not auto_fetch:
            raise FileNotFoundError(f"dataset {name} is not fetched: run `r2end data get {name}`")
        fetch(name)
    folder = dataset_path(name)
    fmt = json.loads((folder / SOURCE_FILE).read_text())["format"]
    raw = load_raw(fmt, folder)
    raw.name = name
    return raw


def load_dataset(name: str | None = None, fmt: str | None = None, path: Path | None = None, k: int = 5) -> PreparedDataset:
    """A prepared (k-cored, chronological, split-ready) dataset by name or by format and path."""
    if fmt is not None:
        if path is None:
            raise ValueError("--format needs --path")
        raw = load_raw(fmt, path)
        if name:
            raw.name = name
    elif name is not None:
        raw = load_named_raw(name)
    else:
        raise ValueError("give a dataset name or a format and a path")
    return prepare(raw, k=k)
