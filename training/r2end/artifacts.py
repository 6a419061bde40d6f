"""Save and load a trained model between ``r2end train`` and ``r2end export`` (stages talk through files).

A run folder holds the fine-tuned student (sentence-transformers format), the projection
weights, the item embeddings/vectors, the item documents, the R2END+CF history table if
any, R2END-Hybrid's parts if any (``hybrid.pt``: SASRec and the fitted arrays, so that
``r2end export`` writes the same hybrid bundle ``r2end train --bundle`` would), and the config
and training report. The frozen encoder is reloaded by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.encoders import load_encoder
from training.r2end.config import R2ENDConfig
from training.r2end.pipeline import TrainedR2END
from training.r2end.projection import Projection

if TYPE_CHECKING:
    from training.r2end.hybrid import HybridModel

HYBRID_FIELDS = (
    "trained",
    "text_items",
    "mapping",
    "cov_cf",
    "cov_text",
    "weight",
    "bias",
    "text_scale",
    "log",
    "name",
    "length_edges",
    "length_weights",
)


def save_run(
    model: TrainedR2END,
    directory: Path,
    history_table: np.ndarray | None = None,
    history_items: int = 50,
    dataset: str | None = None,
    split_hash: str | None = None,
    tower: torch.nn.Module | None = None,
    hybrid: HybridModel | None = None,
) -> Path:
    """Write ``model`` (the exportable form: final projection and item vectors) to ``directory``."""
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.student.save(str(tmp / "student"))
    if model.projection is not None:
        torch.save(model.projection.state_dict(), tmp / "projection.pt")
    np.save(tmp / "item_embeddings.npy", model.item_embeddings)
    np.save(tmp / "item_vectors.npy", model.item_vectors)
    if history_table is not None:
        np.save(tmp / "history_table.npy", history_table)
    if tower is not None:
        torch.save(tower, tmp / "tower.pt")
    if hybrid is not None:
        torch.save(
            {"net": hybrid.net, "config": hybrid.config.model_dump(), **{k: getattr(hybrid, k) for k in HYBRID_FIELDS}},
            tmp / "hybrid.pt",
        )
    meta = {
        "config": model.config.model_dump(),
        "report": model.report,
        "item_documents": model.item_documents,
        "history_items": history_items,
        "dataset": dataset,
        "split_hash": split_hash,
        "distilled": model.student is not model.encoder,
    }
    (tmp / "run.json").write_text(json.dumps(meta) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_run(directory: Path) -> tuple[TrainedR2END, np.ndarray | None, dict[str, Any]]:
    """``(model, history_table, meta)`` from a folder written by :func:`save_run`; ``meta["tower"]``
    holds the R2END+CF sequence tower module, ``meta["hybrid"]`` the R2END-Hybrid model, when there is one."""
    from sentence_transformers import SentenceTransformer

    meta = json.loads((directory / "run.json").read_text())
    config = R2ENDConfig(**meta["config"])
    encoder = load_encoder(config.encoder)
    encoder.max_seq_length = config.max_seq_length
    student = (
        SentenceTransformer(str(directory / "student"), device="cpu", local_files_only=True) if meta["distilled"] else encoder
    )
    projection = None
    item_embeddings = np.load(directory / "item_embeddings.npy")
    if (directory / "projection.pt").exists():
        state = torch.load(directory / "projection.pt", weights_only=True)
        projection = Projection(state["linear.weight"].shape[1], state["linear.weight"].shape[0])
        projection.load_state_dict(state)
        projection.eval()
    history = np.load(directory / "history_table.npy") if (directory / "history_table.npy").exists() else None
    meta["tower"] = torch.load(directory / "tower.pt", weights_only=False) if (directory / "tower.pt").exists() else None
    model = TrainedR2END(
        config,
        encoder,
        student,
        projection,
        item_embeddings,
        np.load(directory / "item_vectors.npy"),
        meta["item_documents"],
        meta["report"],
        name=config.variant,
    )
    meta["hybrid"] = None
    if (directory / "hybrid.pt").exists():
        from training.r2end.hybrid import HybridConfig, HybridModel

        parts = torch.load(directory / "hybrid.pt", weights_only=False)
        meta["hybrid"] = HybridModel(
            model, parts["net"].eval(), HybridConfig(**parts["config"]), **{k: parts[k] for k in HYBRID_FIELDS if k in parts}
        )
    return model, history, meta
