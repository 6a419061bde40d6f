"""Shared helpers for the data-layer tests: fixture paths and small file writers."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


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
