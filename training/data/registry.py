"""One entry point from a dataset name or a (format, path) pair to a :class:`PreparedDataset`.

A name is one of the embedded datasets (:data:`NAMED_DATASETS`, fetched on first use) or one a
user added with ``r2end data add`` (:func:`add_dataset`; see :mod:`training.data.userdata`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from training.data import amazon, movielens, recbole, userdata, yelp
from training.data.checks import check_prepared, check_raw
from training.data.fetch import SOURCE_FILE, dataset_path, fetch, is_fetched
from training.data.preprocess import DEFAULT_K, PreparedDataset, prepare
from training.data.schema import RawDataset

log = logging.getLogger(__name__)

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


def unknown_dataset(name: str) -> ValueError:
    """The error for a name that is neither embedded nor added, saying how to add it."""
    added = [r.name for r in userdata.list_records()]
    return ValueError(
        f"unknown dataset {name!r}; named datasets: {list(NAMED_DATASETS)}"
        + (f"; added: {added}" if added else "")
        + f"; add your own with `r2end data add {name} --format FORMAT --path DIR` (formats: {', '.join(LOADERS)})"
    )


def load_named_raw(name: str, auto_fetch: bool = True) -> RawDataset:
    """Load an embedded dataset by name, fetching it first if needed; or the raw files of an added one."""
    record = userdata.load_record(name)
    if record is not None:
        raw = load_raw(record.format, Path(record.path))
        raw.name = name
        return raw
    if name not in NAMED_DATASETS:
        raise unknown_dataset(name)
    if not is_fetched(name):
        if not auto_fetch:
            raise FileNotFoundError(f"dataset {name} is not fetched: run `r2end data get {name}`")
        fetch(name)
    folder = dataset_path(name)
    fmt = json.loads((folder / SOURCE_FILE).read_text())["format"]
    raw = load_raw(fmt, folder)
    raw.name = name
    return raw


def load_dataset(
    name: str | None = None, fmt: str | None = None, path: Path | None = None, k: int | None = None
) -> PreparedDataset:
    """A prepared (k-cored, chronological, split-ready) dataset by name or by format and path.

    An added dataset is prepared with its recorded k-core and must give its recorded split:
    raw files changed since ``r2end data add`` are refused (the teacher data, results and
    bundles made from the old split would not match).
    """
    if fmt is not None:
        if path is None:
            raise ValueError("--format needs --path")
        raw = load_raw(fmt, path)
        if name:
            raw.name = name
        return prepare(raw, k=k or DEFAULT_K)
    if name is None:
        raise ValueError("give a dataset name or a format and a path")
    record = userdata.load_record(name)
    if record is None:
        return prepare(load_named_raw(name), k=k or DEFAULT_K)
    if k is not None and k != record.k:
        raise ValueError(f"dataset {name!r} was added with --k {record.k}, not {k}")
    ds = prepare(load_named_raw(name), k=record.k)
    if ds.split_hash != record.split_hash:
        raise ValueError(
            f"dataset {name!r}: the files under {record.path} changed since `r2end data add` (split {record.split_hash[:12]} -> "
            f"{ds.split_hash[:12]}); teacher data, results and bundles of the old split no longer match. Record the new split "
            f"with `r2end data add {name} --format {record.format} --path {record.path} --k {record.k} --force`"
        )
    return ds


def add_dataset(
    name: str, fmt: str, path: Path, k: int = DEFAULT_K, force: bool = False
) -> tuple[userdata.DatasetRecord, PreparedDataset, list[str]]:
    """Load, check and prepare raw files, then record them as dataset ``name``; returns (record, dataset, warnings).

    Refuses a bad name, an embedded dataset's name, a name already added (unless ``force``) and
    data that cannot be trained on (see :mod:`training.data.checks`); nothing is written then.
    """
    userdata.check_name(name)
    if name in NAMED_DATASETS:
        raise ValueError(f"{name!r} is an embedded dataset; give yours another name")
    if fmt not in LOADERS:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {sorted(LOADERS)}")
    if k < 1:
        raise ValueError(f"--k {k}: the k-core needs k >= 1")
    old = userdata.load_record(name)
    if old is not None and not force:
        raise ValueError(f"dataset {name!r} is already added ({old.format} at {old.path}); pass --force to replace the record")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    raw = load_raw(fmt, path)
    raw.name = name
    warnings = check_raw(raw)
    ds = prepare(raw, k=k)
    warnings += check_prepared(ds, raw, k)
    if old is not None and old.split_hash != ds.split_hash:
        warnings.append(
            f"dataset {name!r}: the split changed ({old.split_hash[:12]} -> {ds.split_hash[:12]}); "
            "retrain its models: bundles and teacher data of the old split no longer match"
        )
    record = userdata.DatasetRecord(
        name=name,
        format=fmt,
        path=str(path),
        k=k,
        split_hash=ds.split_hash,
        users=ds.n_users,
        items=ds.n_items,
        interactions=ds.n_interactions,
        added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        report=ds.report,
    )
    userdata.save_record(record)
    log.info("recorded %s in %s", name, userdata.user_dataset_record(name))
    return record, ds, warnings
