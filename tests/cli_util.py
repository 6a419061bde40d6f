"""The ``r2end`` command run as a user runs it (its own process, an empty R2END_HOME, no R2END_* settings), or in the
test's process where one interpreter should import torch once and a slow machine must not hit a subprocess timeout."""

from __future__ import annotations

import logging
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


def r2end_in_process(*args: str) -> str:
    """``r2end ARGS`` in this process (R2END_HOME as the environment has it); returns its stdout, fails the test on a non-zero exit."""
    from typer.testing import CliRunner

    from training.cli import app

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # the CLI installs its own log handler: give pytest's back
    try:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert result.exit_code == 0, f"r2end {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.stdout  # without the log lines on stderr
