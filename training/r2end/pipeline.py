"""R2END end to end on a prepared dataset: targets -> student -> item vectors -> projection.

Each step reads the previous step's arrays; nothing here knows about ONNX or serving
(see :mod:`training.export`). The returned :class:`TrainedR2END` scores histories for
the shared evaluator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.verbalize import item_document, target_text
from training.data.preprocess import PreparedDataset
from training.encoders import encode_cached, encoder_path, load_encoder, weights_identity
from training.evaluation.coldstart import training_view
from training.evaluation.evaluator import evaluate
from training.r2end.config import R2ENDConfig
from training.r2end.distill import cached_student, student_folder
from training.r2end.projection import Projection, project, train_projection
from training.r2end.teacher_data import TeacherTexts, load_teacher_texts

log = logging.getLogger(__name__)


@dataclass
class TrainedR2END:
    """A trained model: student encoder, projection and the item side, plus what happened."""

    config: R2ENDConfig
    encoder: Any  # frozen Enc (SentenceTransformer)
    student: Any  # fine-tuned Enc_S (SentenceTransformer); the frozen encoder when distill=False
    projection: Projection | None
    item_embeddings: np.ndarray  # e_i, normalised encoder space
    item_vectors: np.ndarray  # z_i, normalised projected space
    item_documents: list[str]
    report: dict[str, Any] = field(default_factory=dict)
    name: str = "r2end"
    # (folder, weights identity) of the student when its embeddings may be kept on disk (see encode_cached)
    student_store: tuple[str, str] | None = None
    _user_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def history_texts(self, ds: PreparedDataset, histories: Sequence[list[tuple[int, int]]]) -> list[str]:
        """H_u for each history, with the config's verbaliser (export writes the same one into the bundle)."""
        return ds.history_texts(histories, self.config.verbaliser)

    def user_embeddings(self, texts: list[str]) -> np.ndarray:
        """Student embeddings e_u of history texts (memoised by text)."""
        missing = sorted({t for t in texts if t not in self._user_cache})
        if missing:
            vectors = (
                encode(self.student, missing, self.config.encode_batch_size)
                if self.student_store is None
                else encode_cached(
                    self.student_store[0],
                    missing,
                    self.config.encode_batch_size,
                    model=self.student,
                    identity=self.student_store[1],
                )
            )
            self._user_cache.update(zip(missing, vectors, strict=True))
        return (
            np.stack([self._user_cache[t] for t in texts]) if texts else np.zeros((0, self.item_embeddings.shape[1]), np.float32)
        )

    def user_vectors(self, texts: list[str], projection: Projection | None | str = "default") -> np.ndarray:
        """z_u for history texts."""
        proj = self.projection if projection == "default" else projection
        return project(proj, self.user_embeddings(texts))

    def score(self, ds: PreparedDataset, users: Sequence[int], histories: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """Cosine between z_u and every z_i."""
        return self.user_vectors(self.history_texts(ds, histories)) @ self.item_vectors.T


def _student_store(config: R2ENDConfig, distillation: dict[str, Any]) -> tuple[str, str] | None:
    """Where the student's history embeddings may be kept across runs: only for weights fixed on disk (the
    frozen encoder, or a student in the cache); the text-path CF rows re-encode tens of thousands of
    histories with the same student otherwise (~45 min each on ML-1M)."""
    if distillation.get("cache") in ("hit", "stored"):
        folder = student_folder(distillation["key"])
    elif not distillation:  # nothing distilled: the student is the frozen encoder
        folder = encoder_path(config.encoder)
    else:
        return None
    return str(folder), weights_identity(folder, config.max_seq_length, config.encode_batch_size)


def encode(model: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Normalised float32 embeddings."""
    return model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)


def _teacher(config: R2ENDConfig, ds: PreparedDataset, kind: str, data_dir: Path | None) -> TeacherTexts:
    return load_teacher_texts(ds, kind, config.teacher_model, data_dir)


def _rank_of_targets(queries: np.ndarray, item_embeddings: np.ndarray, targets: np.ndarray) -> np.ndarray:
    scores = queries @ item_embeddings.T
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    return (scores > target_scores).sum(axis=1)


class _Scorer:
    """Evaluator adapter for a candidate projection during epoch selection."""

    def __init__(self, model: TrainedR2END, projection: Projection | None, item_vectors: np.ndarray):
        self.name, self.model, self.projection, self.item_vectors = "r2end-candidate", model, projection, item_vectors

    def score(self, ds, users, histories):
        return self.model.user_vectors(self.model.history_texts(ds, histories), self.projection) @ self.item_vectors.T


def rationale_subset(users: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of ``users`` drawn with ``seed``, in their original order; a smaller ``size``'s draw is a prefix of a
    larger one's (one permutation per seed), so the learning curve's subsets are nested."""
    order = np.random.default_rng(seed).permutation(len(users))
    return np.sort(users[order[:size]])


def training_examples(ds: PreparedDataset, config: R2ENDConfig) -> tuple[list[str], np.ndarray]:
    """Every user's training example: the history text H_u and the target item row (distillation and projection)."""
    examples = [ds.example(u, "train") for u in range(ds.n_users)]
    return ds.history_texts([h for h, _ in examples], config.verbaliser), np.array([t for _, t in examples], dtype=np.int64)


def refit_without_items(model: TrainedR2END, ds: PreparedDataset, held_out: np.ndarray) -> TrainedR2END:
    """The text path as if ``held_out`` items had never been trained on: a projection retrained on
    the cold-start view without them (their events, their users' examples, their rows as negatives),
    for as many epochs as validation chose for ``model``.

    Why: items the projection learned are placed better than new ones, so a reach measured on
    them overstates what new items get (issue 12: the text path's pseudo-new validation HR@10 was
    about twice its cold-target test HR@10 on both datasets). The student is kept (it saw the items'
    text as distillation targets; retraining it costs minutes to an hour), so the estimate is closer,
    not exact. Without a projection (ablation 5) there is nothing to refit."""
    if model.projection is None:
        return model
    histories, targets = training_examples(training_view(ds, held_out), model.config)
    epochs = model.report["stages"]["projection"]["selected_epoch"]
    config = model.config.model_copy(update={"projection_epochs": epochs, "select_epoch_on_valid": False})
    projection, _ = train_projection(
        config, model.user_embeddings(histories), targets, model.item_embeddings, negative_pool=np.flatnonzero(~held_out)
    )
    refit = {"held_out_items": int(held_out.sum()), "examples": len(targets), "epochs": epochs}
    log.info("text path refit: %s", refit)
    return replace(
        model,
        projection=projection,
        item_vectors=project(projection, model.item_embeddings),
        report={**model.report, "refit_without_items": refit},
    )


def train_r2end(
    config: R2ENDConfig, ds: PreparedDataset, data_dir: Path | None = None, trainable: np.ndarray | None = None
) -> TrainedR2END:
    """Run every stage of R2END on ``ds`` with ``config`` and the committed teacher data.

    ``trainable`` (bool per item row) restricts the projection's negatives to those items
    (the cold-start protocol keeps held-out items out of training entirely).
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    report: dict[str, Any] = {"config": config.model_dump(), "stages": {}}

    def stage(name: str, t0: float, **info: Any) -> None:
        report["stages"][name] = {"seconds": round(time.perf_counter() - t0, 1), **info}
        log.info("[%6.0fs] %s: %s", time.perf_counter() - started, name, info)

    # 1. item side: Enc(D_i ⊕ M_i)
    t0 = time.perf_counter()
    encoder = load_encoder(config.encoder)
    encoder.max_seq_length = config.max_seq_length
    descriptions = (
        _teacher(config, ds, "description", data_dir) if config.item_text == "description" else TeacherTexts("description")
    )
    documents = [item_document(descriptions.texts.get(f"item:{item.item_id}"), item) for item in ds.catalog]
    item_embeddings = encode(encoder, documents, config.encode_batch_size)
    stage(
        "item_embeddings",
        t0,
        items=len(documents),
        descriptions=descriptions.summary() if config.item_text == "description" else "metadata only",
    )

    # 2. training examples and distillation targets e_u^R
    t0 = time.perf_counter()
    histories, targets = training_examples(ds, config)
    if config.rationale == "item":
        keep = np.arange(ds.n_users)
        target_vectors = item_embeddings[targets]
        teacher_info: dict[str, Any] = {"target": "true item embedding Enc(D ⊕ M)"}
    else:
        kind = "oracle" if config.rationale == "oracle" else "unguided"
        rationales = _teacher(config, ds, kind, data_dir)
        keep = np.array([u for u, user in enumerate(ds.users) if f"user:{user}" in rationales.texts], dtype=np.int64)
        teacher_info = {"rationales": rationales.summary()}
        if config.rationale_users is not None:
            keep = rationale_subset(keep, config.rationale_users, config.seed)
            teacher_info["rationale_users"] = {"asked": config.rationale_users, "used": len(keep)}
        raw = [rationales.texts[f"user:{ds.users[u]}"] for u in keep]
        if config.rationale == "unguided-rs" and len(keep):
            ranks = _rank_of_targets(encode(encoder, raw, config.encode_batch_size), item_embeddings, targets[keep])
            accepted = ranks < config.rs_top_k
            teacher_info["rejection_sampling"] = {"top_k": config.rs_top_k, "accepted": int(accepted.sum()), "of": len(keep)}
            keep, raw = keep[accepted], [r for r, a in zip(raw, accepted, strict=True) if a]
        texts = [
            target_text(r, ds.catalog.at(int(targets[u]))) if config.target_metadata else r
            for r, u in zip(raw, keep, strict=True)
        ]
        target_vectors = (
            encode(encoder, texts, config.encode_batch_size) if texts else np.zeros((0, item_embeddings.shape[1]), np.float32)
        )
    stage("targets", t0, distillation_examples=len(keep), **teacher_info)

    # 3. student distillation (MSE)
    t0 = time.perf_counter()
    cache: dict[str, Any] = {}
    if config.distill and len(keep):

        def fresh_student() -> Any:
            student = load_encoder(config.encoder)
            student.max_seq_length = config.max_seq_length
            return student

        student, cache = cached_student(config, [histories[u] for u in keep], target_vectors, fresh_student)
    else:
        student = encoder
    stage(
        "distillation",
        t0,
        trained=bool(config.distill and len(keep)),
        steps=int(np.ceil(len(keep) / config.distill_batch_size)) * config.distill_epochs,
        **cache,
    )

    model = TrainedR2END(
        config,
        encoder,
        student,
        None,
        item_embeddings,
        item_embeddings,
        documents,
        report,
        name=config.variant,
        student_store=_student_store(config, cache),
    )

    # 4. projection f with InfoNCE + L_reg, epoch chosen on validation NDCG@10
    t0 = time.perf_counter()
    if config.projection:
        user_train = model.user_embeddings(histories)

        def validate(projection: Projection) -> float:
            scorer = _Scorer(model, projection, project(projection, item_embeddings))
            return evaluate(scorer, ds, "valid", keep_per_user=False).metrics["NDCG@10"]

        projection, proj_log = train_projection(
            config,
            user_train,
            targets,
            item_embeddings,
            validate=validate if config.select_epoch_on_valid else None,
            negative_pool=None if trainable is None else np.flatnonzero(trainable),
        )
        model.projection = projection
        model.item_vectors = project(projection, item_embeddings)
        report["projection_log"] = proj_log
        best = max(proj_log, key=lambda e: e.get("valid_NDCG@10", -1))
        stage(
            "projection",
            t0,
            examples=len(user_train),
            selected_epoch=best["epoch"] if config.select_epoch_on_valid else config.projection_epochs,
        )
    else:
        stage("projection", t0, skipped=True)
    report["train_seconds"] = round(time.perf_counter() - started, 1)
    return model
