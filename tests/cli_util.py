"""The ``r2end`` command run as a user runs it: its own process, an empty R2END_HOME, no R2END_* settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from locations import REPO


def r2end(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m training.cli ARGS`` in its own process, with an empty R2END_HOME and no R2END_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("R2END_")}
    clean.update(PYTHONPATH=str(REPO), R2END_HOME=str(tmp_path / "home"), COLUMNS="60", NO_COLOR="1", **env)
    # a guard against a hang, not a speed check: importing torch alone can take minutes on a busy machine
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        check=False,
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=900,
    )
