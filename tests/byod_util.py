"""Bring-your-own-data test helpers: the fixture folder of every raw format, its expected counts, ``r2end`` in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from locations import FIXTURES, REPO

FORMATS = {  # format -> fixture folder
    "ml-100k": "byod/ml-100k",
    "ml-1m": "byod/ml-1m",
    "ml-latest": "byod/ml-latest",
    "recbole": "byod/recbole/shop",
    "amazon-2014": "byod/amazon-2014",
    "amazon-2018": "byod/amazon-2018",
    "yelp": "byod/yelp",
}


def expected(folder: str) -> dict:
    """The counts worked out from how a fixture folder was made (its expected.json), not from the loaders."""
    return json.loads((FIXTURES / folder / "expected.json").read_text())


def r2end(*args: str, home: Path) -> subprocess.CompletedProcess:
    """``python -m training.cli ARGS`` in its own process with ``home`` as R2END_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("R2END_")}
    env.update(PYTHONPATH=str(REPO), R2END_HOME=str(home), COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty R2END_HOME for this test (records, results and teacher data of added datasets go there)."""
    path = tmp_path / "home"
    monkeypatch.setenv("R2END_HOME", str(path))
    monkeypatch.delenv("R2END_TEACHER_DATA", raising=False)
    return path
