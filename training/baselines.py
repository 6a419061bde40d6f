"""Run a baseline through the shared evaluator and write its result file.

``sasrec-ce`` is tuned on a grid: each configuration trains with early stopping on
validation NDCG@10, the best configuration (by validation, never by test) is
evaluated on test, and the whole grid is recorded in the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.evaluation.report import write_result
from training.models.meanpool import MeanPool
from training.models.popularity import Popularity
from training.paths import home

BASELINES = ("pop", "sasrec-ce", "meanpool")
SASREC_GRIDS: dict[str, dict[str, list[Any]]] = {
    "none": {},
    "small": {"hidden": [64, 128], "dropout": [0.2, 0.5]},
    "wide": {"hidden": [64, 128], "dropout": [0.2, 0.5], "layers": [2, 3], "lr": [1e-3, 5e-4]},
}


def grid_configs(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid (one empty dict for no grid)."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cold_setup(ds: PreparedDataset, cold_share: float, seed: int = 22) -> tuple[PreparedDataset, Any]:
    """``(training data, cold mask or None)`` for the cold-start protocol (share 0 = off)."""
    if cold_share <= 0:
        return ds, None
    from training.evaluation.coldstart import pick_cold_items, training_view

    cold = pick_cold_items(ds, cold_share, seed)
    return training_view(ds, cold), cold


def cold_extra(ds: PreparedDataset, cold: Any, test: Any, share: float, view: PreparedDataset) -> dict[str, Any]:
    """The cold/warm-target breakdown stored with a cold-start result."""
    if cold is None:
        return {}
    from training.evaluation.coldstart import split_by_target, subset

    cold_users, warm_users = split_by_target(ds, cold)
    return {"cold_start": {"share": share, "cold_items": int(cold.sum()), "training_view_users": view.n_users,
                           "cold_target": subset(test, cold_users), "warm_target": subset(test, warm_users),
                           "cold_target_users": cold_users}}


def run_pop(ds: PreparedDataset, mask_history: bool = True, cold_share: float = 0.0) -> Path:
    """Popularity on validation and test (counted on the training view under the cold-start protocol)."""
    view, cold = cold_setup(ds, cold_share)
    valid = evaluate(Popularity("valid", view), view, "valid", mask_history)
    test = evaluate(Popularity("test", view), ds, "test", mask_history)
    name = "pop" if cold is None else "pop-cold"
    return write_result(ds, name, test, config={"cold_start_share": cold_share}, valid=valid, extra=cold_extra(ds, cold, test, cold_share, view))


def run_meanpool(ds: PreparedDataset, encoder: str, max_items: int = 8, mask_history: bool = True) -> Path:
    """Frozen-encoder mean pooling of the verbalised history items."""
    model = MeanPool(encoder, max_items=max_items)
    valid = evaluate(model, ds, "valid", mask_history)
    test = evaluate(model, ds, "test", mask_history)
    name = "meanpool" if max_items == 8 else f"meanpool-{max_items}"
    return write_result(ds, name, test, config={"encoder": encoder, "max_items": max_items}, valid=valid)


NOT_CONVERGED = "stopped by the epoch cap, not converged"


def run_sasrec(
    ds: PreparedDataset,
    grid_name: str = "small",
    overrides: dict[str, Any] | None = None,
    mask_history: bool = True,
    on_epoch: Callable[[str, dict], None] | None = None,
    curve_path: Path | None = None,
    cold_share: float = 0.0,
) -> Path:
    """Tune SASRec-CE on a grid by validation NDCG@10, then evaluate the best on test.

    Under the cold-start protocol (``cold_share`` > 0) it trains and validates on the
    training view, with the held-out items also out of its output softmax (see
    :meth:`SASRec.fit`), and is tested on the full split, like every other model.
    """
    from training.models.sasrec import SASRec, SASRecConfig

    full, (ds, cold) = ds, cold_setup(ds, cold_share)

    trials = []
    best_model, best_valid = None, None
    for grid_point in grid_configs(SASREC_GRIDS[grid_name]):
        config = SASRecConfig(**{**(overrides or {}), **grid_point})
        model = SASRec(config)
        label = ",".join(f"{k}={v}" for k, v in grid_point.items()) or "default"
        checkpoint = home() / "runs" / "sasrec" / ds.name / f"{label}{'-cold' if cold is not None else ''}-{ds.split_hash[:8]}.pt"
        model.fit(
            ds,
            validate=lambda m: evaluate(m, ds, "valid", mask_history, keep_per_user=False).metrics,
            progress=(lambda entry, label=label: on_epoch(label, entry)) if on_epoch else None,
            checkpoint=checkpoint,
            held_out=cold,
        )
        valid = evaluate(model, ds, "valid", mask_history, keep_per_user=False)
        best_epoch = max(model.log, key=lambda e: e["valid_NDCG@10"])
        trials.append({"config": config.model_dump(), "grid_point": grid_point, "best_epoch": best_epoch["epoch"],
                       "epochs_run": len(model.log), "valid": valid.metrics, "log": model.log})
        if best_valid is None or valid.metrics["NDCG@10"] > best_valid.metrics["NDCG@10"]:
            best_model, best_valid = model, valid
    assert best_model is not None and best_valid is not None
    test = evaluate(best_model, full, "test", mask_history)
    best_trial = next(t for t in trials if t["config"] == best_model.config.model_dump())
    notes = (
        f"grid '{grid_name}' ({len(trials)} configurations) selected by validation NDCG@10; "
        f"best stopped at epoch {best_trial['best_epoch']} of {best_trial['epochs_run']} "
        f"(patience {best_model.config.patience})"
    )
    if best_trial["epochs_run"] >= best_model.config.max_epochs and best_trial["epochs_run"] - best_trial["best_epoch"] < best_model.config.patience:
        notes += f"; {NOT_CONVERGED} at max_epochs={best_model.config.max_epochs} while validation NDCG@10 still improved"
        notes += " (the checkpoint resumes with a higher cap)"
    name = "sasrec-ce" if cold is None else "sasrec-ce-cold"
    if curve_path is not None:
        plot_curves(trials, curve_path.with_name(f"{name}-curves.png"), f"{name} on {ds.name}: validation NDCG@10 per epoch")
    return write_result(
        full, name, test, config={"best": best_model.config.model_dump(), "grid": SASREC_GRIDS[grid_name], "cold_start_share": cold_share,
                                  "trials": [{k: v for k, v in t.items() if k != "log"} for t in trials]},
        valid=best_valid, training_log=best_trial["log"], notes=notes, extra=cold_extra(full, cold, test, cold_share, ds),
    )


def plot_curves(trials: list[dict], path: Path, title: str) -> None:
    """Validation NDCG@10 per epoch for every trial, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in trials:
        label = ",".join(f"{k}={v}" for k, v in trial["grid_point"].items()) or "default"
        ax.plot([e["epoch"] for e in trial["log"]], [e["valid_NDCG@10"] for e in trial["log"]], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
