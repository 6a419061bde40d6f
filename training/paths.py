"""Where r2end keeps downloaded assets, prepared data and artefacts."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """``$R2END_HOME`` or ``~/.cache/r2end``: datasets, model files, bundles (never committed)."""
    return Path(os.environ.get("R2END_HOME") or Path.home() / ".cache" / "r2end").expanduser()


def datasets_dir() -> Path:
    return home() / "datasets"


def models_dir() -> Path:
    return home() / "models"


def runs_dir() -> Path:
    return home() / "runs"


def teacher_data_dir() -> Path:
    """Committed teacher outputs (the project's own data): ``data/teacher/<dataset>/``."""
    return Path(os.environ.get("R2END_TEACHER_DATA") or REPO_ROOT / "data" / "teacher")


def results_dir() -> Path:
    """Committed evaluation results: ``docs/results/``."""
    return REPO_ROOT / "docs" / "results"
