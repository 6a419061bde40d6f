"""Student distillation (section 3.2): fine-tune a copy of the encoder with MSE to the targets.

Uses sentence-transformers' own trainer and :class:`MSELoss` (the labels are the
frozen encoder's embeddings of R'_u); paper defaults: 1 epoch, batch 16, lr 1e-5.
Progress goes through this module's logger (the trainer's own printer and bars are off).
"""

from __future__ import annotations

import logging
import tempfile
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
