"""The real MovieLens data sets (fetched by the test setup, `make data`) after preparation: the paper's counts.

Slow because ML-1M is a million ratings (about 45 s to load and prepare on a busy 2-core machine).
"""

from __future__ import annotations

import json

import pytest

from training.data.fetch import SOURCE_FILE, dataset_path, is_fetched
from training.data.preprocess import prepare
from training.data.registry import load_named_raw


def _named(name: str):
    if not is_fetched(name):
        pytest.skip(f"{name} is not fetched ({dataset_path(name) / SOURCE_FILE} missing): run `r2end data get {name}`")
    return load_named_raw(name, auto_fetch=False)


def test_ml100k_counts():
    raw = _named("ml-100k")
    ds = prepare(raw)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1349, 99287)
    assert min(len(s) for s in ds.sequences) >= 5
    toy = ds.catalog["1"]
    assert (toy.title, toy.year) == ("Toy Story", 1995)
    assert json.loads((dataset_path("ml-100k") / SOURCE_FILE).read_text())["format"] in ("recbole", "ml-100k")


def test_ml1m_counts():
    raw = _named("ml-1m")
    ds = prepare(raw)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (6040, 3416, 999611)
