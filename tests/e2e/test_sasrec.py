"""SASRec-CE: it learns on a tiny dataset, and a checkpointed run resumes where it stopped."""

from __future__ import annotations

from locations import MOVIES

from training.data.preprocess import prepare
from training.data.recbole import load_recbole
from training.evaluation.evaluator import evaluate
from training.models.sasrec import SASRec, SASRecConfig

FIXTURE = MOVIES


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
    resumed = SASRec(config.model_copy(update={"max_epochs": 4})).fit(
        ds, _validate(ds), progress=seen.append, checkpoint=checkpoint
    )
    assert [e["epoch"] for e in seen] == [3, 4], "resumed run must only train the missing epochs"
    assert resumed[:2] == first
    uninterrupted = SASRec(config.model_copy(update={"max_epochs": 4})).fit(ds, _validate(ds))
    assert [e["loss"] for e in uninterrupted] == [e["loss"] for e in resumed], "resuming must not change the result"


def test_a_run_ended_by_the_epoch_cap_is_labelled_not_converged(tmp_path, monkeypatch):
    import json

    from training.baselines import NOT_CONVERGED, run_sasrec
    from training.evaluation import report
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


# --------------------------------------------------------------------------- cold-start protocol (issue #12)


def _toy_batch():
    from training.models.sasrec import _left_pad

    inputs = _left_pad([[0, 1, 2], [4, 5, 6, 8]], 6)
    labels = _left_pad([[1, 2, 9], [5, 6, 8, 10]], 6) - 1
    return inputs, labels


def test_held_out_items_get_no_gradient_and_do_not_change_the_loss():
    import torch

    from training.models.sasrec import SASRecNet, next_item_loss

    torch.manual_seed(0)
    net = SASRecNet(12, SASRecConfig(hidden=8, max_len=6, dropout=0.0)).eval()
    blocked = torch.zeros(12, dtype=torch.bool)
    blocked[[3, 7, 11]] = True
    inputs, labels = _toy_batch()

    loss, n = next_item_loss(net, inputs, labels, blocked=blocked)
    assert n == 7
    loss.backward()
    grad = net.items.weight.grad[1:]
    assert torch.count_nonzero(grad[blocked]) == 0, "held-out output embeddings must get no gradient"
    assert torch.count_nonzero(grad[~blocked]) > 0

    with torch.no_grad():
        big = 20.0 * torch.randn(int(blocked.sum()), 8, generator=torch.Generator().manual_seed(1))
        net.items.weight[1:][blocked] = big  # logits of held-out items become huge: the loss must not notice
        again, _ = next_item_loss(net, inputs, labels, blocked=blocked)
        unmasked, _ = next_item_loss(net, inputs, labels)
    assert again.item() == loss.item()
    assert unmasked.item() > loss.item() + 1.0, "without the mask the same logits would weigh in (the test has teeth)"


def test_a_held_out_item_as_a_training_label_is_an_error():
    import pytest
    import torch

    from training.models.sasrec import SASRecNet, next_item_loss

    net = SASRecNet(12, SASRecConfig(hidden=8, max_len=6))
    blocked = torch.zeros(12, dtype=torch.bool)
    blocked[9] = True  # a label of the toy batch
    with pytest.raises(ValueError, match=r"held-out item rows \[9\] are training labels"):
        next_item_loss(net, *_toy_batch(), blocked=blocked)


def test_fit_leaves_held_out_rows_as_initialised():
    import numpy as np
    import torch

    from training.evaluation.coldstart import pick_cold_items, training_view
    from training.models.sasrec import SASRecNet

    ds = _ds()
    cold = pick_cold_items(ds, 0.2)
    view = training_view(ds, cold)
    config = SASRecConfig(hidden=16, max_len=20, max_epochs=2, patience=100, batch_size=8, weight_decay=0.01)
    torch.manual_seed(config.seed)
    initial = SASRecNet(ds.n_items, config).items.weight.detach()[1:].clone()
    model = SASRec(config)
    model.fit(view, _validate(view), held_out=cold)
    trained = model.net.items.weight.detach()[1:]
    assert torch.equal(trained[torch.from_numpy(cold)], initial[torch.from_numpy(cold)]), (
        "held-out rows must not move (weight decay included)"
    )
    assert not torch.equal(trained[torch.from_numpy(~cold)], initial[torch.from_numpy(~cold)])
    assert np.isfinite(model.score(ds, [0], [ds.example(0, "test")[0]])).all(), "held-out items are still scored"


def test_a_checkpoint_is_not_resumed_with_other_held_out_items(tmp_path):
    from training.evaluation.coldstart import pick_cold_items, training_view

    ds = _ds()
    cold = pick_cold_items(ds, 0.2)
    view = training_view(ds, cold)
    config = SASRecConfig(hidden=16, max_len=20, max_epochs=1, patience=100, batch_size=8)
    checkpoint = tmp_path / "sasrec.pt"
    SASRec(config).fit(view, _validate(view), checkpoint=checkpoint)  # as before issue #12: cold items in the softmax
    seen = []
    SASRec(config).fit(view, _validate(view), progress=seen.append, checkpoint=checkpoint, held_out=cold)
    assert [e["epoch"] for e in seen] == [1], "a checkpoint trained with another softmax must start over"


def test_the_hybrid_tower_reuses_the_baselines_finished_run_of_the_tuned_model_and_nothing_else(tmp_path, monkeypatch):
    from training.evaluation import report
    from training.evaluation.coldstart import pick_cold_items
    from training.models.sasrec import checkpoint_path, finished_checkpoint
    from training.paths import runs_dir
    from training.r2end.collaborative import sasrec_checkpoint

    monkeypatch.setenv("R2END_HOME", str(tmp_path / "home"))
    ds = _ds()
    config = SASRecConfig(hidden=16, max_len=20, max_epochs=2, patience=100, batch_size=8)
    folder = runs_dir() / "sasrec" / ds.name
    baseline = checkpoint_path(folder, "hidden=16", config, ds.split_hash)
    SASRec(config.model_copy(update={"max_epochs": 1})).fit(ds, _validate(ds), checkpoint=baseline)
    assert finished_checkpoint(folder, config, ds.split_hash) is None, "a run still going is its own process's file"
    SASRec(config).fit(ds, _validate(ds), checkpoint=baseline)
    assert finished_checkpoint(folder, config, ds.split_hash) == baseline
    assert finished_checkpoint(folder, config.model_copy(update={"hidden": 32}), ds.split_hash) is None
    assert finished_checkpoint(folder, config, ds.split_hash, pick_cold_items(ds, 0.2)) is None

    monkeypatch.setattr(report, "load_results", lambda name: [{"model": "sasrec-ce", "config": {"best": config.model_dump()}}])
    written = baseline.stat().st_mtime_ns
    assert sasrec_checkpoint(ds) == str(baseline)
    assert baseline.stat().st_mtime_ns == written, "a finished run is reused as it is, not trained further"
    assert sorted(p.name for p in folder.iterdir()) == [baseline.name], "no second tower was trained"


# --------------------------------------------------------------------------- the tuning grid (issue #12)


def test_the_wide_grid_is_the_issue_grid():
    from training.baselines import SASREC_GRIDS, select_grid

    points = select_grid("wide")
    assert len(points) == 3 * 2 * 3 * 2
    assert {p["hidden"] for p in points} == {64, 128, 256} and {p["layers"] for p in points} == {2, 3}
    assert {p["dropout"] for p in points} == {0.1, 0.2, 0.5} and {p["max_len"] for p in points} == {50, 200}
    assert all(p["patience"] >= 20 for p in points)
    assert {p["hidden"] for p in select_grid("wide-1m")} >= {128, 256}
    for grid in SASREC_GRIDS.values():
        for key in grid:
            assert key in SASRecConfig.model_fields


def test_only_selects_a_subset_and_names_a_bad_key_or_value():
    import pytest

    from training.baselines import select_grid

    subset = select_grid("wide", {"hidden": [256]})
    assert len(subset) == 12 and all(p["hidden"] == 256 for p in subset)
    assert len(select_grid("wide", {"hidden": [128, 256], "max_len": [200]})) == 12
    with pytest.raises(ValueError, match="grid 'wide' does not vary 'lr'"):
        select_grid("wide", {"lr": [1e-3]})
    with pytest.raises(ValueError, match=r"--only hidden=512: not in grid 'wide' \(hidden in \[64, 128, 256\]\)"):
        select_grid("wide", {"hidden": [512]})
    with pytest.raises(ValueError, match="unknown grid 'huge'"):
        select_grid("huge")


def test_cli_only_errors_before_loading_data(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from training.cli import app
    from training.cli import model as cli_model

    monkeypatch.setattr(cli_model, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    runner = CliRunner()
    for args, message in [
        (["--only", "hidden=512"], "--only hidden=512: not in grid 'wide'"),
        (["--only", "hidden"], "expected key=value"),
        (["--only", "lr=0.001"], "does not vary 'lr'"),
    ]:
        result = runner.invoke(app, ["baseline", "sasrec-ce", "ml-100k", "--grid", "wide", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
    result = runner.invoke(app, ["baseline", "pop", "ml-100k", "--only", "hidden=64"])
    assert result.exit_code == 2 and "apply to sasrec-ce only" in result.output


TINY = {"hidden": [8, 16], "dropout": [0.1]}
COMMON = {"max_len": 20, "batch_size": 8, "max_epochs": 3, "patience": 100}


def _tiny_grid(tmp_path, monkeypatch, home: str):
    from training import baselines
    from training.evaluation import report

    monkeypatch.setitem(baselines.SASREC_GRIDS, "tiny", TINY)
    monkeypatch.setenv("R2END_HOME", str(tmp_path / home))
    monkeypatch.setattr(report, "results_dir", lambda: tmp_path / "results")
    return baselines


def test_every_trial_is_recorded_and_a_killed_grid_resumes_in_its_trial(tmp_path, monkeypatch):
    import json

    import pytest

    baselines = _tiny_grid(tmp_path, monkeypatch, "home")
    ds = _ds()

    def kill(label, entry):
        if label == "dropout=0.1,hidden=16" and entry["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=kill)
    seen = []
    path = baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=lambda label, e: seen.append((label, e["epoch"])))
    assert seen == [("dropout=0.1,hidden=16", 2), ("dropout=0.1,hidden=16", 3)], "finished trials reload; the killed one resumes"

    record = json.loads(path.read_text())
    trials = record["config"]["trials"]
    assert [t["grid_point"] for t in trials] == [{"dropout": 0.1, "hidden": 8}, {"dropout": 0.1, "hidden": 16}]
    for trial in trials:
        assert trial["config"]["hidden"] == trial["grid_point"]["hidden"] and trial["epochs_run"] == 3
        assert trial["stopped_by"] == "epoch cap" and 1 <= trial["best_epoch"] <= 3
        assert trial["valid_NDCG@10"] == trial["valid"]["NDCG@10"]
    best = max(trials, key=lambda t: t["valid_NDCG@10"])
    assert record["config"]["best"] == best["config"], "chosen on validation"
    assert record["config"]["grid_name"] == "tiny" and record["config"]["grid"] == TINY

    # the interrupted grid ends exactly where an uninterrupted one does
    baselines = _tiny_grid(tmp_path, monkeypatch, "fresh-home")
    fresh = json.loads(baselines.run_sasrec(ds, "tiny", COMMON).read_text())
    assert [t["valid"] for t in fresh["config"]["trials"]] == [t["valid"] for t in trials]
    assert fresh["test"] == record["test"]


def test_a_grid_subset_is_recorded_apart_from_the_results(tmp_path, monkeypatch):
    import json

    baselines = _tiny_grid(tmp_path, monkeypatch, "home")
    ds = _ds()
    path = baselines.run_sasrec(ds, "tiny", {**COMMON, "max_epochs": 1}, only={"hidden": [16]})
    assert path == tmp_path / "home" / "runs" / "partial-results" / ds.name / "sasrec-ce.json"
    assert not (tmp_path / "results" / ds.name / "sasrec-ce.json").exists()
    record = json.loads(path.read_text())
    assert [t["grid_point"]["hidden"] for t in record["config"]["trials"]] == [16]
    assert record["config"]["only"] == {"hidden": [16]} and baselines.PARTIAL in record["notes"]


def test_grid_status_reads_each_trial_from_its_checkpoint_and_trains_nothing(tmp_path, monkeypatch):
    import pytest

    baselines = _tiny_grid(tmp_path, monkeypatch, "home")
    ds = _ds()
    assert [r["state"] for r in baselines.grid_status(ds, "tiny", COMMON)] == ["not started", "not started"]

    def kill(label, entry):
        if label == "dropout=0.1,hidden=16" and entry["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=kill)
    first, second = baselines.grid_status(ds, "tiny", COMMON)
    assert (
        first["trial"] == "dropout=0.1,hidden=8" and first["state"] == "done (epoch cap), not archived" and first["epochs"] == 3
    )
    assert 1 <= first["best_epoch"] <= 3 and 0 <= first["valid_NDCG@10"] <= first["valid_HR@10"] <= 1
    assert second["state"] == "unfinished (resumes), not archived" and second["epochs"] == 2  # epoch 3 died before its checkpoint
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "home" / "runs" / "sasrec").rglob("*.pt")}
    baselines.grid_status(ds, "tiny", COMMON)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "status must not write a checkpoint"
    # a higher epoch cap is the same run (a run's identity leaves the cap out): it resumes
    assert baselines.grid_status(ds, "tiny", {**COMMON, "max_epochs": 5})[0]["state"] == "unfinished (resumes), not archived"
    # under the cold-start protocol the same grid has its own checkpoints: none yet
    assert [r["state"] for r in baselines.grid_status(ds, "tiny", COMMON, cold_share=0.2)] == ["not started", "not started"]


def test_cli_status_prints_the_grid_without_training(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import training.cli.model as cli_model
    from training.cli import app

    _tiny_grid(tmp_path, monkeypatch, "home")

    monkeypatch.setattr(cli_model, "load_dataset", lambda *a, **k: _ds())
    args = ["baseline", "sasrec-ce", "movies", "--grid", "tiny", "--status", "--set", "max_len=20", "--set", "max_epochs=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dropout=0.1,hidden=8" in result.output and "not started" in result.output and "0 of 2 trials done" in result.output
    assert not (tmp_path / "home" / "runs" / "sasrec").exists()
    _archive_to(tmp_path, monkeypatch)
    archived = CliRunner().invoke(app, [*args[:5], "--archive", *args[6:]])
    assert archived.exit_code == 0 and "dropout=0.1,hidden=8: nothing (no checkpoint here)" in archived.output, archived.output
    whole = CliRunner().invoke(app, [*args, "--whole"])
    assert whole.exit_code == 2 and "--whole applies to --archive only" in whole.output
    refused = CliRunner().invoke(app, ["baseline", "pop", "movies", "--status"])
    assert refused.exit_code != 0 and "--status and --archive apply to sasrec-ce only" in refused.output


# --------------------------------------------------------------------------- the archive in data/runs/ (lost machines)


def _archive_to(tmp_path, monkeypatch):
    from training import run_archive

    monkeypatch.setattr(run_archive, "archive_dir", lambda: tmp_path / "archive")
    return tmp_path / "archive"


def test_a_grid_archived_as_records_survives_a_lost_home_and_retrains_only_its_winner(tmp_path, monkeypatch):
    import json
    import shutil

    baselines = _tiny_grid(tmp_path, monkeypatch, "home")
    archive = _archive_to(tmp_path, monkeypatch)
    ds = _ds()
    before = json.loads(baselines.run_sasrec(ds, "tiny", COMMON).read_text())
    assert [r["state"] for r in baselines.grid_status(ds, "tiny", COMMON)] == ["done (epoch cap), not archived"] * 2
    kept = baselines.archive_grid(ds, "tiny", COMMON)
    assert [r["state"] for r in baselines.grid_status(ds, "tiny", COMMON)] == ["done (epoch cap), archived"] * 2
    assert [label for label, _ in kept] == ["dropout=0.1,hidden=8", "dropout=0.1,hidden=16"]
    assert all(what.startswith("record ") for _, what in kept)
    assert not list(archive.rglob("*.pt")), "records only: no weights without --whole"
    shutil.rmtree(tmp_path / "home")  # the machine and $R2END_HOME with it

    rows = baselines.grid_status(ds, "tiny", COMMON)
    assert [r["state"] for r in rows] == ["done (epoch cap), archived record"] * 2
    assert [r["valid_NDCG@10"] for r in rows] == [round(t["valid_NDCG@10"], 5) for t in before["config"]["trials"]]
    # a longer run than the record's is not done: it would train from scratch
    assert [r["state"] for r in baselines.grid_status(ds, "tiny", {**COMMON, "max_epochs": 5})] == ["not started"] * 2

    seen = []
    after = json.loads(baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=lambda label, e: seen.append(label)).read_text())
    winner = next(
        baselines.trial_label(t["grid_point"]) for t in before["config"]["trials"] if t["config"] == before["config"]["best"]
    )
    assert set(seen) == {winner} and len(seen) == 3, "only the winner is retrained (its weights are needed for test)"
    assert [t["valid"] for t in after["config"]["trials"]] == [t["valid"] for t in before["config"]["trials"]]
    assert after["config"]["best"] == before["config"]["best"] and after["test"] == before["test"]
    assert "retrained from scratch" in after["notes"]
    assert len(list((tmp_path / "home" / "runs" / "sasrec").rglob("*.pt"))) == 1


def test_a_run_archived_whole_resumes_where_it_stopped_on_another_machine(tmp_path, monkeypatch):
    import shutil

    import pytest
    import torch

    from training.models.sasrec import SASRecConfig, finished_checkpoint, load_net
    from training.paths import runs_dir

    baselines = _tiny_grid(tmp_path, monkeypatch, "home")
    archive = _archive_to(tmp_path, monkeypatch)
    ds = _ds()
    only = {"hidden": [8]}

    def kill(label, entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=kill, only=only)
    assert baselines.archive_grid(ds, "tiny", COMMON, only) == [
        ("dropout=0.1,hidden=8", "nothing (unfinished; --whole keeps it)")
    ]
    ((label, what),) = baselines.archive_grid(ds, "tiny", COMMON, only, whole=True)
    assert label == "dropout=0.1,hidden=8" and what.startswith("checkpoint ") and "record" not in what
    shutil.rmtree(tmp_path / "home")

    assert baselines.grid_status(ds, "tiny", COMMON, only)[0]["state"] == "unfinished (resumes), archived"
    seen = []
    baselines.run_sasrec(ds, "tiny", COMMON, on_epoch=lambda label, e: seen.append(e["epoch"]), only=only)
    assert seen == [2, 3], "resumed at the archived epoch, not from scratch"
    assert baselines.grid_status(ds, "tiny", COMMON, only)[0]["state"] == "done (epoch cap), archived at epoch 1"

    # a finished run archived whole is what the hybrid's tower finds, after another loss; it keeps
    # its best weights only, and the test scores of the restored file are those of the live one
    live = next((tmp_path / "home" / "runs" / "sasrec").rglob("*.pt"))
    ((_, what),) = baselines.archive_grid(ds, "tiny", COMMON, only, whole=True)
    assert "(best weights only)" in what and "record " in what
    kept = torch.load(archive.joinpath(live.relative_to(tmp_path / "home" / "runs")), weights_only=False)
    assert kept["best_only"] and kept["optimiser"] is None and kept["net"] is kept["best_state"]
    expected = load_net(live, ds.n_items, ds.split_hash).state_dict()
    shutil.rmtree(tmp_path / "home")
    config = SASRecConfig(**{**COMMON, "dropout": 0.1, "hidden": 8})
    found = finished_checkpoint(runs_dir() / "sasrec" / ds.name, config, ds.split_hash)
    assert found is not None and found.is_file() and found.parent == runs_dir() / "sasrec" / ds.name
    restored = load_net(found, ds.n_items, ds.split_hash).state_dict()
    assert all(torch.equal(restored[k], expected[k]) for k in expected)
    # a run reduced to its best weights cannot train on (its optimiser is gone): refused, not restarted silently
    with pytest.raises(ValueError, match="best weights only"):
        baselines.run_sasrec(ds, "tiny", {**COMMON, "max_epochs": 5}, only=only)
