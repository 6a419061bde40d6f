"""Run a baseline through the shared evaluator and write its result file.

``sasrec-ce`` is tuned on a grid: each configuration trains with early stopping on
validation NDCG@10, the best configuration (by validation, never by test) is
evaluated on test, and every configuration tried is recorded in the result (its
config, best epoch, validation scores and what stopped it). Each trial checkpoints
after every epoch under ``$R2END_HOME/runs/sasrec/<dataset>/``, so a killed grid
resumes in the trial it was in (finished trials only reload); a subset of the grid
(``only``) can run in another session or on a GPU and its checkpoints be copied back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import run_archive
from training.data.preprocess import PreparedDataset
from training.evaluation.evaluator import evaluate
from training.evaluation.report import write_result
from training.models.meanpool import MeanPool
from training.models.popularity import Popularity
from training.paths import runs_dir

BASELINES = ("pop", "sasrec-ce", "meanpool")
SASREC_GRIDS: dict[str, dict[str, list[Any]]] = {
    "none": {},
    "small": {"hidden": [64, 128], "dropout": [0.2, 0.5]},
    # issue #12's ML-100K grid: 36 configurations, patience 20
    "wide": {"hidden": [64, 128, 256], "layers": [2, 3], "dropout": [0.1, 0.2, 0.5], "max_len": [50, 200], "patience": [20]},
    # what ML-1M affords (1.5-2.5 CPU-hours a trial): the larger hidden sizes, otherwise the defaults
    "wide-1m": {"hidden": [128, 256], "patience": [20]},
}
"""Named SASRec grids: each key is a :class:`~training.models.sasrec.SASRecConfig` field."""
PARTIAL = "grid subset, not a tuned result"


def grid_configs(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid (one empty dict for no grid)."""
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def select_grid(grid_name: str, only: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """The grid points of ``grid_name`` whose values are in ``only`` (all of them without ``only``).

    Raises ValueError naming an unknown grid, a key the grid does not vary, or a value it
    does not hold: a typo must not silently select nothing or something else.
    """
    if grid_name not in SASREC_GRIDS:
        raise ValueError(f"unknown grid {grid_name!r}; known: {', '.join(SASREC_GRIDS)}")
    grid = SASREC_GRIDS[grid_name]
    for key, values in (only or {}).items():
        if key not in grid:
            raise ValueError(
                f"--only {key}: grid {grid_name!r} does not vary {key!r}; it varies {', '.join(sorted(grid)) or 'nothing'}"
            )
        missing = [v for v in values if v not in grid[key]]
        if missing:
            raise ValueError(f"--only {key}={','.join(map(str, missing))}: not in grid {grid_name!r} ({key} in {grid[key]})")
    return [point for point in grid_configs(grid) if all(point[k] in v for k, v in (only or {}).items())]


def trial_label(grid_point: dict[str, Any]) -> str:
    """``hidden=128,layers=2`` (or ``default``): how a trial is named in logs and plots."""
    return ",".join(f"{k}={v}" for k, v in grid_point.items()) or "default"


def best_epoch(log: list[dict]) -> int:
    """The epoch with the best validation NDCG@10 in a training log (the weights a run keeps)."""
    return max(log, key=lambda e: e["valid_NDCG@10"])["epoch"]


def stopped_by(log: list[dict], config: Any) -> str:
    """``patience`` (converged by early stopping), ``epoch cap`` (still improving when it hit
    max_epochs) or ``unfinished``, for a training log under ``config``'s patience and cap."""
    if len(log) - best_epoch(log) >= config.patience:
        return "patience"
    return "epoch cap" if len(log) >= config.max_epochs else "unfinished"


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
    return {
        "cold_start": {
            "share": share,
            "cold_items": int(cold.sum()),
            "training_view_users": view.n_users,
            "cold_target": subset(test, cold_users),
            "warm_target": subset(test, warm_users),
            "cold_target_users": cold_users,
        }
    }


def run_pop(ds: PreparedDataset, mask_history: bool = True, cold_share: float = 0.0) -> Path:
    """Popularity on validation and test (counted on the training view under the cold-start protocol)."""
    view, cold = cold_setup(ds, cold_share)
    valid = evaluate(Popularity("valid", view), view, "valid", mask_history)
    test = evaluate(Popularity("test", view), ds, "test", mask_history)
    name = "pop" if cold is None else "pop-cold"
    return write_result(
        ds, name, test, config={"cold_start_share": cold_share}, valid=valid, extra=cold_extra(ds, cold, test, cold_share, view)
    )


def run_meanpool(ds: PreparedDataset, encoder: str, max_items: int = 8, mask_history: bool = True) -> Path:
    """Frozen-encoder mean pooling of the verbalised history items."""
    model = MeanPool(encoder, max_items=max_items)
    valid = evaluate(model, ds, "valid", mask_history)
    test = evaluate(model, ds, "test", mask_history)
    name = "meanpool" if max_items == 8 else f"meanpool-{max_items}"
    return write_result(ds, name, test, config={"encoder": encoder, "max_items": max_items}, valid=valid)


NOT_CONVERGED = "stopped by the epoch cap, not converged"


@dataclass(frozen=True)
class PlannedTrial:
    """One configuration of a grid: what it trains and where its checkpoint lives."""

    grid_point: dict[str, Any]
    config: Any  # SASRecConfig (imported lazily: it needs torch)
    label: str
    checkpoint: Path


def plan_trials(
    view: PreparedDataset,
    grid_name: str,
    overrides: dict[str, Any] | None = None,
    only: dict[str, list[Any]] | None = None,
    cold: Any = None,
) -> list[PlannedTrial]:
    """The trials of a grid on ``view`` (the training view under the cold-start protocol), in order:
    the one place that names their configurations and checkpoint files (training and status read it)."""
    from training.models.sasrec import SASRecConfig, checkpoint_path

    points = select_grid(grid_name, only)
    if not points:
        raise ValueError(f"--only {only}: no configuration of grid {grid_name!r} left")
    folder = runs_dir() / "sasrec" / view.name
    plan = []
    for grid_point in points:
        config = SASRecConfig(**{**(overrides or {}), **grid_point})
        label = trial_label(grid_point)
        plan.append(PlannedTrial(grid_point, config, label, checkpoint_path(folder, label, config, view.split_hash, cold)))
    return plan


def _trial_entry(planned: PlannedTrial, log: list[dict], valid: dict[str, float]) -> dict[str, Any]:
    """What the result file records of one trial (trained here or read from its archived record)."""
    return {
        "config": planned.config.model_dump(),
        "grid_point": planned.grid_point,
        "best_epoch": best_epoch(log),
        "epochs_run": len(log),
        "stopped_by": stopped_by(log, planned.config),
        "valid_NDCG@10": valid["NDCG@10"],
        "valid": valid,
        "checkpoint": planned.checkpoint.name,
        "log": log,
    }


def _finished_record(planned: PlannedTrial, split_hash: str, cold: Any) -> dict[str, Any] | None:
    """The archived record of this trial when its checkpoint is gone and the record says it is done
    under this run's patience and cap (a record of a shorter run is no substitute for training)."""
    from training.models.sasrec import run_identity

    if planned.checkpoint.is_file() or run_archive.archived_checkpoint(planned.checkpoint).is_file():
        return None
    record = run_archive.read_record(planned.checkpoint, run_identity(planned.config, split_hash, cold))
    return record if record is not None and stopped_by(record["log"], planned.config) != "unfinished" else None


def grid_status(
    ds: PreparedDataset,
    grid_name: str,
    overrides: dict[str, Any] | None = None,
    only: dict[str, list[Any]] | None = None,
    cold_share: float = 0.0,
) -> list[dict[str, Any]]:
    """Where each trial of a grid stands, read from its checkpoint (live, else archived whole, else its
    archived record; nothing is trained or written): a grid runs for hours, across sessions and
    machines, and a user needs to see what is done, what resumes and what is left.
    The validation scores are the training log's; selection still happens when the grid has run."""
    import torch

    from training.models.sasrec import run_identity

    view, cold = cold_setup(ds, cold_share)
    rows = []
    for planned in plan_trials(view, grid_name, overrides, only, cold):
        row: dict[str, Any] = {"trial": planned.label, "state": "not started", "epochs": 0, "best_epoch": None}
        row |= {"valid_NDCG@10": None, "valid_HR@10": None}
        source = next((p for p in (planned.checkpoint, run_archive.archived_checkpoint(planned.checkpoint)) if p.is_file()), None)
        state = torch.load(source, weights_only=False, map_location="cpu") if source is not None else None
        record = _finished_record(planned, view.split_hash, cold) if source is None else None
        where = _archive_note(planned.checkpoint, source, state)
        if state is not None and state["identity"] != run_identity(planned.config, view.split_hash, cold):
            row["state"] = "other run in this file (restarts)"
        elif log := (state or record or {}).get("log"):
            best = max(log, key=lambda e: e["valid_NDCG@10"])
            stop = stopped_by(log, planned.config)
            row |= {
                "epochs": len(log),
                "best_epoch": best["epoch"],
                "state": ("unfinished (resumes)" if stop == "unfinished" else f"done ({stop})") + where,
            }
            row |= {"valid_NDCG@10": best["valid_NDCG@10"], "valid_HR@10": best["valid_HR@10"]}
        rows.append(row)
    return rows


def _archive_note(checkpoint: Path, source: Path | None, state: dict | None) -> str:
    """How a trial stands against the archive: read from it, kept in it (and at which epoch, when
    the live run went on since), or not kept (the work a lost machine would cost)."""
    if source is None:
        return ", archived record"
    if source != checkpoint:
        return ", archived"
    whole = run_archive.archived_checkpoint(checkpoint)
    if whole.is_file():
        import torch

        kept = len(torch.load(whole, weights_only=False, map_location="cpu")["log"])
        return ", archived" if kept == len(state["log"]) else f", archived at epoch {kept}"
    return ", archived" if run_archive.archived_record(checkpoint).is_file() else ", not archived"


def archive_grid(
    ds: PreparedDataset,
    grid_name: str,
    overrides: dict[str, Any] | None = None,
    only: dict[str, list[Any]] | None = None,
    cold_share: float = 0.0,
    whole: bool = False,
    mask_history: bool = True,
) -> list[tuple[str, str]]:
    """Archive what a grid has reached into ``data/runs/`` (see :mod:`training.run_archive`): each
    finished trial's record (its best weights reloaded and evaluated on validation, nothing trained)
    and, with ``whole``, every checkpoint as it is, finished or not. Returns (trial, what was kept)."""
    from training.models.sasrec import SASRec, best_only, run_identity

    view, cold = cold_setup(ds, cold_share)
    kept = []
    for planned in plan_trials(view, grid_name, overrides, only, cold):
        if not planned.checkpoint.is_file():
            kept.append((planned.label, "nothing (no checkpoint here)"))
            continue
        what = []
        model = SASRec(planned.config.model_copy(update={"max_epochs": 0}))  # reload, never train
        model.fit(view, validate=lambda m: {}, checkpoint=planned.checkpoint, held_out=cold)
        finished = bool(model.log) and stopped_by(model.log, planned.config) != "unfinished"
        if whole:
            kept_whole = run_archive.keep_checkpoint(planned.checkpoint, best_only if finished else None)
            what.append(f"checkpoint {kept_whole}" + (" (best weights only)" if finished else ""))
        if finished:
            valid = evaluate(model, view, "valid", mask_history, keep_per_user=False).metrics
            record = {"identity": run_identity(planned.config, view.split_hash, cold), "log": model.log, "valid": valid}
            what.append(f"record {run_archive.keep_record(planned.checkpoint, record)}")
        kept.append((planned.label, ", ".join(what) or "nothing (unfinished; --whole keeps it)"))
    return kept


def run_sasrec(
    ds: PreparedDataset,
    grid_name: str = "small",
    overrides: dict[str, Any] | None = None,
    mask_history: bool = True,
    on_epoch: Callable[[str, dict], None] | None = None,
    curve_path: Path | None = None,
    cold_share: float = 0.0,
    only: dict[str, list[Any]] | None = None,
) -> Path:
    """Tune SASRec-CE on a grid by validation NDCG@10, then evaluate the best on test.

    Under the cold-start protocol (``cold_share`` > 0) it trains and validates on the
    training view, with the held-out items also out of its output softmax (see
    :meth:`SASRec.fit`), and is tested on the full split, like every other model.
    With ``only`` (a subset of the grid's values) the result is written to
    ``$R2END_HOME/runs/partial-results`` and never into the committed tables.
    A trial whose checkpoint is gone is restored from ``data/runs/`` (whole) or taken from its
    archived record (validation only): such a trial is retrained only if it wins.
    """
    from training.models.sasrec import SASRec

    full, (ds, cold) = ds, cold_setup(ds, cold_share)

    def train(planned: PlannedTrial) -> tuple[Any, Any]:
        run_archive.restore(planned.checkpoint)
        model = SASRec(planned.config)
        model.fit(
            ds,
            validate=lambda m: evaluate(m, ds, "valid", mask_history, keep_per_user=False).metrics,
            progress=(lambda entry, label=planned.label: on_epoch(label, entry)) if on_epoch else None,
            checkpoint=planned.checkpoint,
            held_out=cold,
        )
        return model, evaluate(model, ds, "valid", mask_history, keep_per_user=False)

    trials, best = [], None  # best: (trial entry, planned, model or None, valid or None)
    for planned in plan_trials(ds, grid_name, overrides, only, cold):
        record = _finished_record(planned, ds.split_hash, cold)
        if record is not None:
            model, valid, entry = None, None, _trial_entry(planned, record["log"], record["valid"])
        else:
            model, valid = train(planned)
            entry = _trial_entry(planned, model.log, valid.metrics)
        trials.append(entry)
        if best is None or entry["valid_NDCG@10"] > best[0]["valid_NDCG@10"]:
            best = (entry, planned, model, valid)
    assert best is not None
    best_trial, best_planned, best_model, best_valid = best
    retrained = ""
    if best_model is None:  # the winner is known from its archived record only: its weights are needed for test
        best_model, best_valid = train(best_planned)
        retrained = (
            f"; the best configuration was retrained from scratch (its checkpoint was lost; archived record: "
            f"valid NDCG@10 {best_trial['valid_NDCG@10']:.5f}, retrained {best_valid.metrics['NDCG@10']:.5f})"
        )
    test = evaluate(best_model, full, "test", mask_history)
    subset = f" (subset {only} of {len(select_grid(grid_name))}: {PARTIAL})" if only else ""
    notes = (
        f"grid '{grid_name}' ({len(trials)} configurations{subset}) selected by validation NDCG@10; "
        f"best stopped at epoch {best_trial['best_epoch']} of {best_trial['epochs_run']} "
        f"(patience {best_model.config.patience}){retrained}"
    )
    if best_trial["stopped_by"] == "epoch cap":
        notes += f"; {NOT_CONVERGED} at max_epochs={best_model.config.max_epochs} while validation NDCG@10 still improved"
        notes += " (the checkpoint resumes with a higher cap)"
    name = "sasrec-ce" if cold is None else "sasrec-ce-cold"
    out_dir = runs_dir() / "partial-results" if only else None
    if curve_path is not None and not only:
        plot_curves(trials, curve_path.with_name(f"{name}-curves.png"), f"{name} on {ds.name}: validation NDCG@10 per epoch")
    return write_result(
        full,
        name,
        test,
        config={
            "best": best_model.config.model_dump(),
            "grid_name": grid_name,
            "grid": SASREC_GRIDS[grid_name],
            "only": only,
            "cold_start_share": cold_share,
            "trials": [{k: v for k, v in t.items() if k != "log"} for t in trials],
        },
        valid=best_valid,
        training_log=best_model.log,
        notes=notes,
        extra=cold_extra(full, cold, test, cold_share, ds),
        out_dir=out_dir,
    )


def plot_curves(trials: list[dict], path: Path, title: str) -> None:
    """Validation NDCG@10 per epoch for every trial, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in trials:
        label = trial_label(trial["grid_point"])
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
