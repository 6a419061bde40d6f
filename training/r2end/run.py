"""One R2END configuration from teacher data to result file and bundle; and the ablation suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.evaluation.report import write_result
from training.paths import home, results_dir
from training.r2end.config import ABLATIONS, R2ENDConfig
from training.r2end.pipeline import TrainedR2END, train_r2end


def bundle_dir(dataset: str, variant: str) -> Path:
    """Default bundle location: ``$R2END_HOME/bundles/<dataset>/<variant>``."""
    return home() / "bundles" / dataset / variant


def teacher_complete(model: TrainedR2END) -> tuple[bool, str]:
    """Whether every teacher output this configuration uses exists, and a one-line account."""
    stages = model.report["stages"]
    parts, complete = [], True
    descriptions = stages["item_embeddings"].get("descriptions")
    if isinstance(descriptions, dict):
        complete &= descriptions["missing"] == 0
        parts.append(f"descriptions {descriptions['usable']}/{descriptions['total']} (flagged {descriptions['flagged']})")
    rationales = stages["targets"].get("rationales")
    if isinstance(rationales, dict):
        complete &= rationales["missing"] == 0
        parts.append(f"rationales {rationales['usable']}/{rationales['total']} (flagged {rationales['flagged']})")
    return complete, "; ".join(parts) or "no teacher data used"


def train_and_report(
    config: R2ENDConfig,
    ds: PreparedDataset,
    data_dir: Path | None = None,
    export_to: Path | None = None,
    allow_partial: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, evaluate (validation + test) and, if asked, export a bundle.

    Results go to ``docs/results/<dataset>/<variant>.json`` only when the teacher data
    the configuration needs is complete; a run on partial data writes to
    ``$R2END_HOME/runs`` instead (never into the committed tables).
    """
    started = time.perf_counter()
    model = train_r2end(config, ds, data_dir, log)
    valid = evaluate(model, ds, "valid")
    test = evaluate(model, ds, "test")
    complete, account = teacher_complete(model)
    if not complete and not allow_partial:
        raise RuntimeError(f"teacher data incomplete for {config.variant} ({account}); use --allow-partial for a trial run")
    out_dir = results_dir() if complete else home() / "runs" / "partial-results"
    notes = f"teacher data: {account}" + ("" if complete else " — PARTIAL, not a final result")
    path = write_result(ds, config.variant, test, config=config.model_dump(), valid=valid,
                        training_log=model.report.get("projection_log", []), out_dir=out_dir, notes=notes)
    summary: dict[str, Any] = {"result": str(path), "test": test.metrics, "valid": valid.metrics,
                               "train_seconds": model.report["train_seconds"], "teacher": account, "complete": complete}
    if export_to is not None:
        from training.export import export_bundle

        manifest = export_bundle(model, ds, export_to, metrics={"test": test.metrics, "valid": valid.metrics})
        summary["bundle"] = str(export_to)
        summary["onnx_parity"] = manifest.metrics["onnx_parity"]
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def ablation_configs(base: R2ENDConfig, names: list[str] | None = None) -> list[R2ENDConfig]:
    """The paper's Table 2 switches applied to ``base`` (ablation 4 is the meanpool baseline)."""
    chosen = names or list(ABLATIONS)
    unknown = [n for n in chosen if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; known: {list(ABLATIONS)}")
    return [base.model_copy(update={**ABLATIONS[name], "variant": name}) for name in chosen]
