"""Student distillation (section 3.2): fine-tune a copy of the encoder with MSE to the targets.

Uses sentence-transformers' own trainer and :class:`MSELoss` (the labels are the
frozen encoder's embeddings of R'_u); paper defaults: 1 epoch, batch 16, lr 1e-5.
Progress goes through this module's logger (the trainer's own printer and bars are off).

Distillation is most of a training's time and many variants distil the same student (the
projection ablations, R2END+CF and R2END-Hybrid differ only after it), so a distilled student is
kept under ``$R2END_HOME/cache/students/<key>``, the key a hash of everything it is computed
from: the histories and target vectors themselves, the encoder, the distillation settings, the
thread count, the source of the code that trains it (:func:`distill_student`, not the whole module: a
refactor elsewhere here keeps every cached student) and the library versions (:func:`student_key`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.r2end.config import R2ENDConfig

log = logging.getLogger(__name__)


def _progress_callback() -> Any:
    """A trainer callback that logs each logging step (loss, learning rate) with the step count."""
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {k: round(v, 6) if isinstance(v, float) else v for k, v in (logs or {}).items() if k != "total_flos"}
            log.info("distillation step %d/%d %s", state.global_step, state.max_steps, shown)

    return LogProgress()


def student_key(config: R2ENDConfig, histories: list[str], targets: np.ndarray) -> str:
    """A content hash of a distillation's inputs: equal keys, equal students (same code, libraries and threads)."""
    import sentence_transformers
    import torch
    import transformers

    from training.encoders import encoder_path

    settings = {
        "encoder": str(encoder_path(config.encoder)),
        "max_seq_length": config.max_seq_length,
        "epochs": config.distill_epochs,
        "batch_size": config.distill_batch_size,
        "lr": config.distill_lr,
        "seed": config.seed,
        "threads": config.threads,
        "versions": [torch.__version__, transformers.__version__, sentence_transformers.__version__],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(_distillation_code())
    digest.update("\x1e".join(histories).encode())
    digest.update(np.ascontiguousarray(targets, dtype=np.float32).tobytes())
    return digest.hexdigest()[:24]


def _distillation_code() -> bytes:
    """The source that decides a student's weights: what the key must change with when the code changes."""
    return inspect.getsource(distill_student).encode()


def student_folder(key: str) -> Path:
    """Where the student distilled from inputs with ``key`` is kept."""
    from training.paths import home

    return home() / "cache" / "students" / key


def cached_student(
    config: R2ENDConfig, histories: list[str], targets: np.ndarray, fresh: Callable[[], Any]
) -> tuple[Any, dict[str, Any]]:
    """The distilled student for these inputs, from the cache when an identical distillation ran before, else ``fresh()``
    (the encoder to fine-tune) distilled and stored; and what happened."""
    from training.encoders import load_encoder

    key = student_key(config, histories, targets)
    folder = student_folder(key)
    if config.student_cache and (folder / "DONE").is_file():
        log.info("distillation: the identical student is cached (%s), not retrained", folder)
        student = load_encoder(str(folder))
        student.max_seq_length = config.max_seq_length
        return student, {"cache": "hit", "key": key}
    student = fresh()
    distill_student(config, student, histories, targets)
    if config.student_cache:
        tmp = folder.with_name(key + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        student.save(str(tmp))
        (tmp / "DONE").write_text(json.dumps({"examples": len(histories)}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    return student, {"cache": "stored" if config.student_cache else "off", "key": key}


def distill_student(config: R2ENDConfig, student, histories: list[str], targets: np.ndarray):
    """Fine-tune ``student`` (a SentenceTransformer) so that student(H_u) ≈ target_u; returns it."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import PrinterCallback

    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    data = Dataset.from_dict({"history": histories, "label": [t.tolist() for t in targets]})
    with tempfile.TemporaryDirectory() as out_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=out_dir,
            num_train_epochs=config.distill_epochs,
            per_device_train_batch_size=config.distill_batch_size,
            learning_rate=config.distill_lr,
            seed=config.seed,
            data_seed=config.seed,
            save_strategy="no",
            logging_steps=10,
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=student, args=args, train_dataset=data, loss=MSELoss(student), callbacks=[_progress_callback()]
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return student
