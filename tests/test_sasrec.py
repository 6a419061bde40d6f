"""SASRec-CE: it learns on a tiny dataset, and a checkpointed run resumes where it stopped."""

from __future__ import annotations

from pathlib import Path

from training.data.preprocess import prepare
from training.data.recbole import load_recbole
from training.evaluation.evaluator import evaluate
from training.models.sasrec import SASRec, SASRecConfig

FIXTURE = Path(__file__).parent / "fixtures" / "recbole" / "movies"


def _ds():
    return prepare(load_recbole(FIXTURE, "movies"), k=5)


def _validate(ds):
    return lambda model: evaluate(model, ds, "valid", keep_per_user=False).metrics


def test_training_lowers_the_loss():
    ds = _ds()
    model = SASRec(SASRecConfig(hidden=16, max_len=20, max_epochs=8, patience=100, batch_size=8))
    log = model.fit(ds, _validate(ds))
    assert len(log) == 8
    assert log[-1]["loss"] < log[0]["loss"]


def test_checkpoint_resumes_instead_of_restarting(tmp_path):
    ds = _ds()
    config = SASRecConfig(hidden=16, max_len=20, max_epochs=2, patience=100, batch_size=8)
    checkpoint = tmp_path / "sasrec.pt"
    first = SASRec(config).fit(ds, _validate(ds), checkpoint=checkpoint)
    assert [e["epoch"] for e in first] == [1, 2] and checkpoint.is_file()
    seen = []
    resumed = SASRec(config.model_copy(update={"max_epochs": 4})).fit(ds, _validate(ds), progress=seen.append, checkpoint=checkpoint)
    assert [e["epoch"] for e in seen] == [3, 4], "resumed run must only train the missing epochs"
    assert resumed[:2] == first
    uninterrupted = SASRec(config.model_copy(update={"max_epochs": 4})).fit(ds, _validate(ds))
    assert [e["loss"] for e in uninterrupted] == [e["loss"] for e in resumed], "resuming must not change the result"


def test_a_run_ended_by_the_epoch_cap_is_labelled_not_converged(tmp_path, monkeypatch):
    import json

    import training.evaluation.report as report
    from training.baselines import NOT_CONVERGED, run_sasrec
    from training.evaluation.summary import main_table

    monkeypatch.setenv("R2END_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(report, "results_dir", lambda: tmp_path / "results")
    ds = _ds()
    common = {"hidden": 16, "max_len": 20, "batch_size": 8, "patience": 100}
    capped = json.loads(run_sasrec(ds, "none", {**common, "max_epochs": 3}).read_text())
    assert NOT_CONVERGED in capped["notes"] and "max_epochs=3" in capped["notes"]
    row = next(line for line in main_table(ds.name, tmp_path / "results") if line.startswith("| SASRec-CE"))
    assert f"({NOT_CONVERGED}: epoch 3)" in row

    converged = json.loads(run_sasrec(ds, "none", {**common, "max_epochs": 30, "patience": 1}).read_text())
    assert NOT_CONVERGED not in converged["notes"]
