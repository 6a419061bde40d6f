"""One R2END configuration from teacher data to result file and bundle; and the ablation suite."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.evaluation.report import write_result
from training.paths import bundles_dir, runs_dir
from training.r2end.config import ABLATIONS, R2ENDConfig
from training.r2end.pipeline import TrainedR2END, train_r2end


def bundle_dir(dataset: str, variant: str) -> Path:
    """Default bundle location: ``$R2END_HOME/bundles/<dataset>/<variant>``."""
    return bundles_dir() / dataset / variant


def run_dir(dataset: str, variant: str) -> Path:
    """Where ``r2end train`` leaves the trained model for ``r2end export``."""
    return runs_dir() / dataset / variant


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
    results_to: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate (validation + test) and, if asked, export a bundle.

    With ``config.cf`` the collaborative head is trained on top (R2END+CF); with
    ``config.cold_start_share`` the cold-start protocol applies (see
    :mod:`training.evaluation.coldstart`) and the result carries cold/warm breakdowns.
    Results go to ``docs/results/<dataset>/<variant>.json`` only when the teacher data
    the configuration needs is complete; a run on partial data writes to
    ``$R2END_HOME/runs`` instead (never into the committed tables); ``results_to`` sends a
    complete run's result elsewhere (``make demo`` does, so a user's demo never rewrites them). Without
    ``allow_partial``, incomplete teacher data is refused before anything is trained
    (:class:`~training.r2end.teacher_data.TeacherDataIncomplete`, a RuntimeError).
    """
    from training.evaluation.coldstart import pick_cold_items, split_by_target, subset, training_view

    started = time.perf_counter()
    cold = pick_cold_items(ds, config.cold_start_share, config.seed) if config.cold_start_share > 0 else None
    train_ds = training_view(ds, cold) if cold is not None else ds
    trainable = None if cold is None else ~cold
    from training.r2end.teacher_data import require_teacher_data

    require_teacher_data(config, train_ds, data_dir, allow_partial)  # before any model is loaded or trained
    base = train_r2end(config, train_ds, data_dir, trainable=trainable)
    complete, account = teacher_complete(base)
    if not complete and not allow_partial:
        raise RuntimeError(f"teacher data incomplete for {config.variant} ({account}); use --allow-partial for a trial run")
    model: Any = base
    exportable, history_table, history_items, tower, hybrid = base, None, 50, None, None
    if config.cf is not None:
        from training.r2end.collaborative import CFConfig, train_cf

        cf_config = CFConfig(**config.cf)
        model = train_cf(base, train_ds, cf_config, trainable)
        model.name = config.variant
        exportable = replace(base, projection=model.head.projection, item_vectors=model.item_vectors)
        history_table, history_items, tower = model.history_table, cf_config.history_items, model.head.tower
    if config.hybrid is not None:
        if config.cf is not None:
            raise ValueError(f"{config.variant}: choose R2END+CF (cf) or R2END-Hybrid (hybrid), not both")
        from training.r2end.hybrid import HybridConfig, train_hybrid

        model = hybrid = train_hybrid(base, train_ds, HybridConfig(**config.hybrid), trainable)
        model.name = config.variant
    summary: dict[str, Any] = {}
    if cold is None:
        from training.r2end.artifacts import save_run

        summary["run"] = str(
            save_run(
                exportable, run_dir(ds.name, config.variant), history_table, history_items, ds.name, ds.split_hash, tower, hybrid
            )
        )
    bundle_path = export_to
    scratch = None
    if cold is not None and bundle_path is None:
        scratch = tempfile.TemporaryDirectory()
        bundle_path = Path(scratch.name) / "bundle"
    if bundle_path is not None:
        from training.export import export_bundle

        manifest = export_bundle(
            exportable,
            ds,
            bundle_path,
            metrics={},
            history_table=history_table,
            history_items=history_items,
            tower=tower,
            hybrid=hybrid,
        )
        summary["bundle"] = str(bundle_path)
        summary["onnx_parity"] = manifest.metrics["onnx_parity"]
    extra: dict[str, Any] = {}
    if cold is not None:
        _add_cold_items(model, ds, cold, Path(bundle_path))
        extra["cold_start"] = {
            "share": config.cold_start_share,
            "cold_items": int(cold.sum()),
            "training_view_users": train_ds.n_users,
            "how": "cold items embedded from metadata by the item ONNX graph (the service's PUT /items path)",
        }
    valid = evaluate(model, train_ds, "valid")
    test = evaluate(model, ds, "test")
    if cold is not None:
        cold_users, warm_users = split_by_target(ds, cold)
        extra["cold_start"]["cold_target"] = subset(test, cold_users)
        extra["cold_start"]["warm_target"] = subset(test, warm_users)
        extra["cold_start"]["cold_target_users"] = cold_users
    if scratch is not None:
        scratch.cleanup()
        summary.pop("bundle", None)
    out_dir = results_to if complete else runs_dir() / "partial-results"  # None: write_result's default (results_root)
    notes = f"teacher data: {account}" + ("" if complete else " — PARTIAL, not a final result")
    recorded = config.model_dump()
    # every HybridConfig / CFConfig field, defaults included: the file outlives a change of default
    if hybrid is not None:
        recorded["hybrid"] = hybrid.config.model_dump(mode="json")
    if config.cf is not None:
        recorded["cf"] = model.config.model_dump(mode="json")
    path = write_result(
        ds,
        config.variant,
        test,
        config=recorded,
        valid=valid,
        training_log=base.report.get("projection_log", []) + getattr(model, "log", []),
        out_dir=out_dir,
        notes=notes,
        extra=extra,
    )
    summary.update(
        {
            "result": str(path),
            "test": test.metrics,
            "valid": valid.metrics,
            "teacher": account,
            "complete": complete,
            "train_seconds": base.report["train_seconds"],
            **extra,
        }
    )
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _add_cold_items(model: Any, ds: PreparedDataset, cold: np.ndarray, bundle_path: Path) -> None:
    """Embed held-out items from metadata with the bundle's item graph, as ``PUT /items`` does."""
    from index import bundle as B
    from index.onnx_encoder import OnnxTextEncoder
    from index.verbalize import item_document

    manifest = B.load_manifest(bundle_path)
    encoder = OnnxTextEncoder(bundle_path / B.ITEM_ONNX, bundle_path / B.TOKENIZER, manifest.max_seq_length)
    rows = np.flatnonzero(cold)
    vectors = np.concatenate(
        [encoder.encode([item_document(None, ds.catalog.at(int(r))) for r in rows[i : i + 32]]) for i in range(0, len(rows), 32)]
    )
    if hasattr(model, "set_text_item_vectors"):  # R2END-Hybrid: item vectors are built from the text vectors
        model.set_text_item_vectors(rows, vectors)
        return
    model.item_vectors = model.item_vectors.copy()
    model.item_vectors[rows] = vectors


def ablation_configs(base: R2ENDConfig, names: list[str] | None = None) -> list[R2ENDConfig]:
    """The paper's Table 2 switches applied to ``base`` (ablation 4 is the meanpool baseline)."""
    chosen = names or list(ABLATIONS)
    unknown = [n for n in chosen if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; known: {list(ABLATIONS)}")
    return [base.model_copy(update={**ABLATIONS[name], "variant": name}) for name in chosen]
