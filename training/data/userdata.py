"""The records of datasets a user brings: ``r2end data add NAME --format F --path DIR``.

A record names the raw files (format and absolute path), the k-core and the split hash they
gave when added; every later command that gets ``NAME`` reloads the raw files and checks the
hash, so a model is never trained, evaluated or served on a split other than the recorded one.
The raw files are not copied (they may be large); the record is ``$R2END_HOME/datasets/NAME/DATASET.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ValidationError

from training.paths import USER_DATASET_RECORD, datasets_dir, user_dataset_record

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""A dataset name is a folder name, part of a bundle version and of result paths: lower-case, no spaces."""


class DatasetRecord(BaseModel):
    """What ``r2end data add`` recorded about a dataset."""

    name: str
    format: str
    path: str
    k: int
    split_hash: str
    users: int
    items: int
    interactions: int
    added: str
    report: dict[str, int] = {}


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a dataset (see :data:`NAME_PATTERN`)."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"dataset name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def load_record(name: str) -> DatasetRecord | None:
    """The record of an added dataset, or None if ``name`` was never added; a damaged record is a ValueError naming its file."""
    path = user_dataset_record(name)
    if not path.is_file():
        return None
    try:
        return DatasetRecord.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        raise ValueError(
            f"{path}: not a valid dataset record ({exc}); add the dataset again with `r2end data add {name} ... --force`"
        ) from None


def save_record(record: DatasetRecord) -> Path:
    """Write the record atomically (a crash leaves the old record or the new one, never half of one)."""
    path = user_dataset_record(record.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(record.model_dump(), indent=2) + "\n")
    tmp.replace(path)
    return path


def list_records() -> list[DatasetRecord]:
    """Every added dataset, by name (damaged records are skipped here; loading one names the problem)."""
    records = []
    for path in sorted(datasets_dir().glob(f"*/{USER_DATASET_RECORD}")):
        try:
            records.append(DatasetRecord.model_validate_json(path.read_text()))
        except (ValidationError, ValueError):
            continue
    return records
