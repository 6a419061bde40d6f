"""The two test tiers, and fixtures every folder shares (helpers: locations, service_util, teacher_util).

``tests/unit/`` is the fast tier (``make test-fast``, ``pytest -m "not slow"``): no torch, no model,
no server, seconds in all. Every test anywhere else (``tests/e2e/``) is marked ``slow`` here, so
the folder is the one place a test's tier is decided. With ``-m "not slow"`` the other folders are
not even collected (their modules import torch), and importing torch fails the test that does it.
"""

from __future__ import annotations

import gzip
import importlib.abc
import shutil
import sys
from pathlib import Path

import pytest
from locations import FIXTURES, MOVIES, UNIT

FAST_TIER = "not slow"
"""The -m expression of the fast tier (``make test-fast``)."""


def _fast_tier(config: pytest.Config) -> bool:
    return config.getoption("markexpr", "").strip() == FAST_TIER


class _NoTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` fail in the fast tier, naming the rule (a test that needs torch is slow)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "torch":
            raise ImportError(
                f"import {name}: the fast tier (tests/unit) runs without torch; a test that needs it goes in tests/e2e"
            )


def pytest_configure(config: pytest.Config) -> None:
    if _fast_tier(config):
        sys.meta_path.insert(0, _NoTorch())


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier, skip everything outside tests/unit without importing it (it is all slow)."""
    if not _fast_tier(config):
        return None
    path = collection_path.resolve()
    if path == UNIT or UNIT in path.parents or path in UNIT.parents:
        return None
    return True


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT not in item.path.parents:
            item.add_marker(pytest.mark.slow)


def write_gz(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) gzip-compressed to ``path``."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def read_gz(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read()


@pytest.fixture
def fixture_copy(tmp_path: Path):
    """Copy a fixture folder (by name under tests/fixtures) into tmp_path and return the copy."""

    def copy(name: str) -> Path:
        target = tmp_path / Path(name).name
        shutil.copytree(FIXTURES / name, target)
        return target

    return copy


# ---- service tests: the tiny bundle and real servers (helpers in service_util.py) ----


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real bundle trained on tests/fixtures/recbole/movies without teacher data (once per session)."""
    import os

    from service_util import build_tiny_bundle

    prebuilt = os.environ.get("R2END_TEST_BUNDLE")
    if prebuilt:
        return Path(prebuilt)
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def service(tiny_bundle, tmp_path_factory):
    """One real server shared by the read-mostly API tests (admin token set)."""
    from service_util import ADMIN_TOKEN, ServiceProcess

    server = ServiceProcess(tiny_bundle, tmp_path_factory.mktemp("service"), admin_token=ADMIN_TOKEN)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def make_service(tiny_bundle, tmp_path):
    """Start extra servers with custom settings; all are stopped at the end of the test."""
    from service_util import ServiceProcess

    servers = []

    def make(bundle: Path | None = None, workdir: Path | None = None, start: bool = True, **settings):
        server = ServiceProcess(bundle or tiny_bundle, workdir or tmp_path / f"server{len(servers)}", **settings)
        servers.append(server)
        return server.start() if start else server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


# ---- load tests: histories of the fixture's test users (tests/*/test_loadtest_*.py) ----


@pytest.fixture(scope="module")
def fixture_histories(tmp_path_factory) -> Path:
    """Test-user histories of the dataset the tiny bundle was trained on (same preparation: k=2)."""
    from loadtest.make_histories import collect
    from training.data.preprocess import prepare
    from training.data.recbole import load_recbole

    path = tmp_path_factory.mktemp("loadtest") / "histories.json"
    collect(prepare(load_recbole(MOVIES, "movies"), k=2)).save(path)
    return path
