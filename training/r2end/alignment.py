"""Alignment analysis (paper Fig. 4 and Fig. 7): does the student move toward the teacher's targets?

Users are split (seeded) into a distillation part and a held-out part. The student is
distilled on the first part only; on the held-out users we compare cosine similarity
and L2 distance between Enc_S(H_u) and the target Enc(R_u ⊕ M_gt), before distillation
(Enc_S = the frozen encoder) and after. Held-out users make this a test of
generalisation, not of memorisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from index.verbalize import target_text
from training.data.preprocess import PreparedDataset
from training.encoders import load_encoder
from training.r2end.config import R2ENDConfig
from training.r2end.distill import distill_student
from training.r2end.pipeline import encode
from training.r2end.teacher_data import load_teacher_texts


def alignment_analysis(
    config: R2ENDConfig, ds: PreparedDataset, held_out_share: float = 0.2, data_dir: Path | None = None
) -> dict[str, Any]:
    """Cosine/L2 distributions on held-out users before and after distillation."""
    rationales = load_teacher_texts(ds, "oracle", config.teacher_model, data_dir)
    users = np.array([u for u, uid in enumerate(ds.users) if f"user:{uid}" in rationales.texts])
    rng = np.random.default_rng(config.seed)
    rng.shuffle(users)
    n_held = max(1, round(held_out_share * len(users)))
    held, train = np.sort(users[:n_held]), np.sort(users[n_held:])
    encoder = load_encoder(config.encoder)
    encoder.max_seq_length = config.max_seq_length

    def texts(group: np.ndarray) -> tuple[list[str], list[str]]:
        hist, targ = [], []
        for u in group:
            history, target = ds.example(int(u), "train")
            hist.append(ds.history_texts([history], config.verbaliser)[0])
            targ.append(target_text(rationales.texts[f"user:{ds.users[u]}"], ds.catalog.at(target)))
        return hist, targ

    train_hist, train_targ = texts(train)
    held_hist, held_targ = texts(held)
    held_targets = encode(encoder, held_targ)
    before = encode(encoder, held_hist)
    student = load_encoder(config.encoder)
    student.max_seq_length = config.max_seq_length
    distill_student(config, student, train_hist, encode(encoder, train_targ))
    after = encode(student, held_hist)

    def stats(vectors: np.ndarray) -> dict[str, Any]:
        cosine = (vectors * held_targets).sum(1)
        l2 = np.linalg.norm(vectors - held_targets, axis=1)
        return {"cosine": cosine.tolist(), "l2": l2.tolist(), "cosine_mean": float(cosine.mean()), "l2_mean": float(l2.mean())}

    return {
        "held_out_users": len(held),
        "distilled_on": len(train),
        "before": stats(before),
        "after": stats(after),
        "config": config.model_dump(),
    }


def plot_alignment(result: dict[str, Any], path: Path, dataset: str) -> None:
    """Two panels: cosine similarity and L2 distance, before vs after distillation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in (
        (axes[0], "cosine", "cosine similarity (higher = closer)"),
        (axes[1], "l2", "L2 distance (lower = closer)"),
    ):
        for when, colour in (("before", "tab:orange"), ("after", "tab:blue")):
            values = result[when][key]
            ax.hist(values, bins=30, alpha=0.55, color=colour, label=f"{when} distillation (mean {np.mean(values):.3f})")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out users")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{dataset}: student vs teacher target on {result['held_out_users']} held-out users "
        f"(distilled on {result['distilled_on']})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
