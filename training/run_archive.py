"""Keep long trainings across machines: git is the only storage that outlives one.

Checkpoints live under ``$R2END_HOME/runs``, which a replaced machine loses (it happened
twice to the SASRec-CE grids: 2.5 and 3 CPU-hours of ML-1M). ``data/runs/`` (committed) is
the archive, mirroring ``runs/``'s layout:

- ``<checkpoint stem>.json``: a finished trial's record (identity, per-epoch log, validation
  metrics of its best weights). A grid selects on validation, so a trial that does not win
  never needs its weights again; a record is a few KB where the weights are MBs.
- ``<checkpoint name>`` (``.pt``): a whole checkpoint, for a run too expensive to repeat
  (ML-1M); an unfinished one resumes on any machine where it stopped, a finished one keeps only
  its best weights (a quarter of the size: nothing trains it further).

Training reads the live checkpoint first; a missing one is restored from the archive.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.paths import REPO_ROOT, runs_dir


def archive_dir() -> Path:
    """``data/runs/``: the committed twin of ``$R2END_HOME/runs``."""
    return REPO_ROOT / "data" / "runs"


def archived_checkpoint(checkpoint: Path) -> Path:
    """Where ``checkpoint`` (a file under :func:`runs_dir`) is archived whole."""
    return archive_dir() / Path(checkpoint).resolve().relative_to(runs_dir().resolve())


def archived_record(checkpoint: Path) -> Path:
    """Where the record of ``checkpoint``'s finished trial is archived."""
    return archived_checkpoint(checkpoint).with_suffix(".json")


def _write(target: Path, write: Callable[[Path], object]) -> None:
    """Write ``target`` through a temporary file (``write`` fills it), so a reader never sees half a checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write(target.with_suffix(".tmp"))
    target.with_suffix(".tmp").replace(target)


def _copy(source: Path, target: Path) -> None:
    _write(target, lambda tmp: shutil.copyfile(source, tmp))


def restore(checkpoint: Path) -> None:
    """Copy the archived whole checkpoint into place when the live one is missing."""
    source = archived_checkpoint(checkpoint)
    if not checkpoint.is_file() and source.is_file():
        _copy(source, checkpoint)


def restore_matching(folder: Path, pattern: str) -> None:
    """Restore every archived whole checkpoint of ``folder`` (under :func:`runs_dir`) named like ``pattern``."""
    try:
        archived = archived_checkpoint(Path(folder) / "_").parent
    except ValueError:  # a folder outside runs/ has no archive
        return
    for source in sorted(archived.glob(pattern)):
        restore(Path(folder) / source.name)


def keep_checkpoint(checkpoint: Path, reduce: Callable[[dict], dict] | None = None) -> Path:
    """Archive ``checkpoint`` whole (replacing an older copy of the same run); with ``reduce``, the
    checkpoint's state as ``reduce`` returns it (e.g. a finished run without its optimiser)."""
    target = archived_checkpoint(checkpoint)
    if reduce is None:
        _copy(checkpoint, target)
    else:
        import torch

        state = torch.load(checkpoint, weights_only=False, map_location="cpu")
        _write(target, lambda tmp: torch.save(reduce(state), tmp))
    return target


def keep_record(checkpoint: Path, record: dict[str, Any]) -> Path:
    """Archive the record of ``checkpoint``'s finished trial."""
    target = archived_record(checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return target


def read_record(checkpoint: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The archived record of ``checkpoint``'s trial, or None if there is none of this exact run."""
    path = archived_record(checkpoint)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("identity") == identity else None
