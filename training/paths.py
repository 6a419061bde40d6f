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


USER_DATASET_RECORD = "DATASET.json"
"""What ``r2end data add`` writes into ``datasets_dir()/<name>/``: format, path, k-core, split hash."""


def user_dataset_record(name: str) -> Path:
    """Where the record of a dataset added with ``r2end data add`` lives."""
    return datasets_dir() / name / USER_DATASET_RECORD


def is_user_dataset(name: str) -> bool:
    """True for a dataset added with ``r2end data add``: its teacher data and results stay under $R2END_HOME."""
    return user_dataset_record(name).is_file()


def bundles_dir() -> Path:
    """Model bundles: ``bundles_dir()/<dataset>/<variant>`` is where ``r2end train`` exports and ``r2end serve --dataset`` looks."""
    return home() / "bundles"


def models_dir() -> Path:
    return home() / "models"


def runs_dir() -> Path:
    return home() / "runs"


def teacher_data_dir(dataset: str | None = None) -> Path:
    """Teacher outputs, ``<dir>/<dataset>/``: committed under ``data/teacher/`` for the project's datasets,
    under ``$R2END_HOME/teacher`` for a user's own (``r2end data add``); ``$R2END_TEACHER_DATA`` overrides both."""
    if os.environ.get("R2END_TEACHER_DATA"):
        return Path(os.environ["R2END_TEACHER_DATA"])
    if dataset is not None and is_user_dataset(dataset):
        return home() / "teacher"
    return REPO_ROOT / "data" / "teacher"


def results_dir() -> Path:
    """Committed evaluation results: ``docs/results/``."""
    return REPO_ROOT / "docs" / "results"


def user_results_dir() -> Path:
    """Evaluation results of a user's own datasets (``r2end data add``): never among the committed ones."""
    return home() / "results"
