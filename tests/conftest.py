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
