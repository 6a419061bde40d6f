"""Evaluation integrity (issue #12): each test fails if the leak or bug it names is introduced.

The checks run the real code paths (teacher task builders, the R2END pipeline, SASRec's
training loop, the evaluator, the report) on tiny data. The R2END pipeline runs with a
fake text encoder that remembers which text made which vector, so the test can read
back exactly which texts were distilled, and in no time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from locations import MOVIES

from index.catalog import Catalog, ItemMeta
from index.verbalize import item_text
from training.data.preprocess import PreparedDataset, prepare
from training.data.recbole import load_recbole
from training.evaluation.coldstart import pick_cold_items, training_view
from training.evaluation.evaluator import EvalResult, evaluate
from training.evaluation.metrics import expected_hit, expected_ndcg, greater_and_ties
from training.r2end import pipeline
from training.r2end.config import R2ENDConfig
from training.teacher.cache import TeacherCache
from training.teacher.runner import cache_path, task_key
from training.teacher.tasks import build_tasks, oracle_tasks, prior_item_evidence, unguided_tasks

FIXTURE = MOVIES
TEACHER = "fixture-teacher"
COLD_SHARE = 0.2


def _ds() -> PreparedDataset:
    ds = prepare(load_recbole(FIXTURE, "movies"), k=5)
    labels = [item_text(item) for item in ds.catalog]
    assert not any(a in b for a in labels for b in labels if a is not b), "item texts must be unambiguous probes"
    return ds


def _label(ds: PreparedDataset, row: int) -> str:
    return item_text(ds.catalog.at(row))


def _cold(ds: PreparedDataset) -> np.ndarray:
    return pick_cold_items(ds, COLD_SHARE, R2ENDConfig().seed)


# --------------------------------------------------------------------------- teacher prompts


def test_oracle_prompt_targets_the_training_target_and_never_shows_validation_or_test():
    ds = _ds()
    for u, task in enumerate(oracle_tasks(ds)):
        seq = ds.sequences[u]
        history_part, target_part = task.prompt.split("Target Item:\n", 1)
        assert _label(ds, seq[-3][0]) in target_part, f"user {u}: the oracle target must be the last training event"
        assert _label(ds, seq[-3][0]) not in history_part, f"user {u}: the target must not be in its own history"
        for row, _ in seq[-2:]:
            assert _label(ds, row) not in task.prompt, f"user {u}: validation/test item in the oracle prompt"


def test_unguided_prompt_shows_no_target():
    ds = _ds()
    for u, task in enumerate(unguided_tasks(ds)):
        for row, _ in ds.sequences[u][-3:]:
            assert _label(ds, row) not in task.prompt, f"user {u}: a target in the unguided prompt"


def _training_priors(ds: PreparedDataset) -> dict[int, set[int]]:
    priors: dict[int, set[int]] = {row: set() for row in range(ds.n_items)}
    for u in range(ds.n_users):
        train = ds.train_sequence(u)
        for (prev, _), (cur, _) in itertools.pairwise(train):
            priors[cur].add(prev)
    return priors


def test_description_evidence_uses_training_transitions_only():
    ds = _ds()
    priors = _training_priors(ds)
    evidence = prior_item_evidence(ds)
    leaked = {
        (row, other)
        for row, (text, _) in evidence.items()
        for other in range(ds.n_items)
        if other not in priors[row] and _label(ds, other) in text
    }
    assert not leaked, f"evidence names items that precede the item only outside training: {sorted(leaked)[:5]}"


def test_description_reviews_come_from_training_transitions_only():
    # z follows p only as u0's validation target and c only as u1's test target: no training evidence.
    items = [ItemMeta(item_id=i, title=f"Film {i.upper()}") for i in ("a", "b", "c", "p", "q", "z")]
    row = {item.item_id: n for n, item in enumerate(items)}
    sequences = [[(row[i], t) for t, i in enumerate("abpzq")], [(row[i], t) for t, i in enumerate("apbcz")]]
    reviews = {("u0", "p"): "P WAS GREAT", ("u1", "c"): "C WAS GREAT", ("u0", "b"): "B WAS FINE"}
    ds = PreparedDataset("toy", Catalog(items), ["u0", "u1"], sequences, reviews)
    evidence = prior_item_evidence(ds)
    assert evidence[row["z"]] == ("- (none recorded)", False)
    assert evidence[row["q"]] == ("- (none recorded)", False)
    everything = "\n".join(text for text, _ in evidence.values())
    assert "P WAS GREAT" not in everything and "C WAS GREAT" not in everything
    assert "B WAS FINE" in evidence[row["p"]][0]  # the training transition b -> p is quoted


# --------------------------------------------------------------------------- cold items


def test_cold_view_keeps_cold_items_out_of_every_training_part():
    ds = _ds()
    cold = _cold(ds)
    assert cold.sum() == round(COLD_SHARE * ds.n_items)
    view = training_view(ds, cold)
    assert 0 < view.n_users < ds.n_users
    for u in range(view.n_users):
        assert not any(cold[row] for row, _ in view.train_sequence(u)), f"cold item in the training part of {view.users[u]}"
        assert not cold[view.example(u, "valid")[1]], "a cold validation target would select models on cold items"
    original = dict(zip(ds.users, ds.sequences, strict=True))
    for user, seq in zip(view.users, view.sequences, strict=True):
        assert seq[-2:] == original[user][-2:], "validation and test events are kept as they are"


def test_teacher_prompts_of_the_cold_view_never_mention_a_cold_item():
    ds = _ds()
    cold = _cold(ds)
    view = training_view(ds, cold)
    cold_labels = [_label(ds, row) for row in np.flatnonzero(cold)]
    for task in build_tasks(view, "oracle") + build_tasks(view, "unguided"):
        assert not [label for label in cold_labels if label in task.prompt], task.subject
    for row, (text, _) in prior_item_evidence(view).items():
        assert not [label for label in cold_labels if label in text], f"cold item in the description evidence of row {row}"


class FakeEncoder:
    """Deterministic unit vectors per text; ``book`` maps each vector back to its text."""

    dim = 12

    def __init__(self, book: dict[bytes, str]):
        self.book = book
        self.max_seq_length = 256

    def encode(self, texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False):
        vectors = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            self.book[vector.tobytes()] = text
            vectors.append(vector)
        return np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)


@pytest.fixture
def spied_training(monkeypatch):
    """Run train_r2end with the fake encoder; record what distillation and the projection train on."""
    book: dict[bytes, str] = {}
    seen: dict[str, list] = {"distill": [], "projection": []}
    monkeypatch.setattr(pipeline, "load_encoder", lambda name: FakeEncoder(book))

    def distill(config, student, histories, targets):
        seen["distill"].append((list(histories), [book[np.asarray(t, np.float32).tobytes()] for t in targets]))
        return student

    real_projection = pipeline.train_projection

    def projection(config, user_vectors, positive_rows, item_vectors, **kwargs):
        pool = kwargs.get("negative_pool")
        seen["projection"].append(
            {"positives": np.asarray(positive_rows).copy(), "negative_pool": None if pool is None else np.asarray(pool)}
        )
        return real_projection(config, user_vectors, positive_rows, item_vectors, **kwargs)

    from training.r2end import distill as distillation

    monkeypatch.setattr(distillation, "distill_student", distill)  # what the student cache calls on a miss
    monkeypatch.setattr(pipeline, "train_projection", projection)
    return seen


def _write_teacher(ds: PreparedDataset, data_dir: Path) -> None:
    for kind in ("oracle", "description"):
        cache = TeacherCache(cache_path(data_dir, ds.name, kind))
        for task in build_tasks(ds, kind):
            cache.append(
                {"key": task_key(task, TEACHER), "status": "ok", "text": f"{kind} for {task.subject}", "subject": task.subject}
            )


def _config(**update) -> R2ENDConfig:
    return R2ENDConfig(
        **{
            "dataset": "movies",
            "teacher_model": TEACHER,
            "projection_dim": 16,
            "projection_epochs": 1,
            "threads": 1,
            "student_cache": False,  # the spy must see every distillation, and its fake students must not be kept
            **update,
        }
    )


def test_distillation_and_projection_train_on_each_users_training_target(tmp_path, spied_training):
    ds = _ds()
    _write_teacher(ds, tmp_path)
    pipeline.train_r2end(_config(), ds, tmp_path)
    [(histories, targets)] = spied_training["distill"]
    assert len(targets) == ds.n_users
    for u, (history, target) in enumerate(zip(histories, targets, strict=True)):
        seq = ds.sequences[u]
        assert target.startswith(f"oracle for user:{ds.users[u]}\n"), "targets are in user order"
        assert target.endswith(_label(ds, seq[-3][0])), f"user {u}: R'_u must carry the training target's metadata"
        assert _label(ds, seq[-3][0]) not in history
        for row, _ in seq[-2:]:
            assert _label(ds, row) not in target and _label(ds, row) not in history, f"user {u}: validation/test item distilled"
    [projection] = spied_training["projection"]
    assert projection["positives"].tolist() == [seq[-3][0] for seq in ds.sequences]


def test_r2end_under_the_cold_protocol_never_trains_on_a_cold_item(tmp_path, monkeypatch, spied_training):
    from training.r2end import run

    ds = _ds()
    config = _config(cold_start_share=COLD_SHARE)
    cold = pick_cold_items(ds, COLD_SHARE, config.seed)
    _write_teacher(training_view(ds, cold), tmp_path)
    cold_labels = [_label(ds, row) for row in np.flatnonzero(cold)]

    class Trained(Exception):
        pass

    def train_then_stop(config, train_ds, data_dir, *_log, trainable=None):
        pipeline.train_r2end(config, train_ds, data_dir, trainable=trainable)
        raise Trained

    monkeypatch.setattr(run, "train_r2end", train_then_stop)
    with pytest.raises(Trained):
        run.train_and_report(config, ds, tmp_path, None)
    [(histories, targets)] = spied_training["distill"]
    assert histories, "something was distilled"
    for text in histories + targets:
        assert not [label for label in cold_labels if label in text], "a cold item in a distillation input or target"
    [projection] = spied_training["projection"]
    assert not cold[projection["positives"]].any(), "a cold item as a projection positive"
    assert projection["negative_pool"] is not None and not cold[projection["negative_pool"]].any(), "a cold item as a negative"
    assert sorted(projection["negative_pool"].tolist()) == np.flatnonzero(~cold).tolist()


def test_cf_head_examples_of_the_cold_view_hold_no_cold_item():
    from training.r2end.collaborative import training_examples

    ds = _ds()
    cold = _cold(ds)
    examples = training_examples(training_view(ds, cold), per_user=10)
    assert examples
    for _, history, target in examples:
        assert not cold[target] and not any(cold[row] for row, _ in history)


@pytest.fixture
def isolated_results(tmp_path, monkeypatch):
    """Result files and SASRec checkpoints go to tmp_path."""
    from training.evaluation import report

    monkeypatch.setenv("R2END_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(report, "results_dir", lambda: tmp_path / "results")
    return tmp_path / "results"


def _spy_sasrec_batches(monkeypatch) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Every (inputs, labels, items blocked from the softmax) batch SASRec's training loop computes a loss on."""
    from training.models import sasrec

    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    real_loss = sasrec.next_item_loss

    def spy(net, inputs, labels, blocked=None):
        batches.append((inputs.numpy().copy(), labels.numpy().copy(), None if blocked is None else blocked.numpy().copy()))
        return real_loss(net, inputs, labels, blocked=blocked)

    monkeypatch.setattr(sasrec, "next_item_loss", spy)
    return batches


def test_sasrec_trains_on_each_users_training_part_only(monkeypatch, isolated_results):
    from training import baselines

    ds = _ds()
    batches = _spy_sasrec_batches(monkeypatch)
    baselines.run_sasrec(ds, "none", {"hidden": 16, "max_len": 20, "batch_size": 8, "max_epochs": 1, "patience": 100})
    training_parts = {tuple(row for row, _ in ds.train_sequence(u)) for u in range(ds.n_users)}
    assert max(map(len, training_parts)) <= 20, "no truncation in this check"
    rows = 0
    for inputs, labels, blocked in batches:
        assert blocked is None
        for x, y in zip(inputs, labels, strict=True):
            seen = (x[x > 0] - 1).tolist()
            assert y[y >= 0].tolist() == seen[1:] + [int(y[-1])], "labels are the inputs shifted by one"
            assert tuple(seen + [int(y[-1])]) in training_parts, "SASRec trained on events outside a training part"
            rows += 1
    assert rows == ds.n_users


def test_sasrec_under_the_cold_protocol_never_trains_on_a_cold_item(monkeypatch, isolated_results):
    from training import baselines

    ds = _ds()
    cold = pick_cold_items(ds, COLD_SHARE)
    batches = _spy_sasrec_batches(monkeypatch)
    path = baselines.run_sasrec(
        ds, "none", {"hidden": 16, "max_len": 20, "batch_size": 8, "max_epochs": 2, "patience": 100}, cold_share=COLD_SHARE
    )
    assert json.loads(path.read_text())["cold_start"]["cold_items"] == int(cold.sum())
    assert batches
    for inputs, labels, blocked in batches:
        rows_in = inputs[inputs > 0] - 1
        rows_out = labels[labels >= 0]
        assert not cold[rows_in].any(), "a cold item in SASRec's input"
        assert not cold[rows_out].any(), "a cold item as SASRec's training label"
        assert blocked is not None and (blocked == cold).all(), "cold items must be out of SASRec's output softmax"


# --------------------------------------------------------------------------- evaluator


class TargetFirst:
    """Scores the stage's target 2, every history item 1, the rest 0."""

    name = "target-first"

    def __init__(self, stage: str):
        self.stage = stage

    def score(self, ds, users, histories):
        scores = np.zeros((len(users), ds.n_items))
        for row, (user, history) in enumerate(zip(users, histories, strict=True)):
            scores[row, [item for item, _ in history]] = 1.0
            scores[row, ds.example(user, self.stage)[1]] = 2.0
        return scores


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_history_masking_never_masks_the_target(stage):
    # Item 1 is both in the history and the target of every stage (as a repeat consumption can be).
    items = [ItemMeta(item_id=f"i{n}", title=f"Film {n}") for n in range(30)]
    sequences = [[(0, 0), (1, 1), (2, 2), (1, 3), (1, 4)], [(5, 0), (1, 1), (6, 2), (1, 3), (1, 4)]]
    ds = PreparedDataset("toy", Catalog(items), ["u0", "u1"], sequences)
    assert all(1 in [row for row, _ in ds.example(u, stage)[0]] and ds.example(u, stage)[1] == 1 for u in range(2))
    result = evaluate(TargetFirst(stage), ds, stage)
    assert result.metrics["HR@5"] == 1.0 and result.metrics["NDCG@10"] == 1.0


def test_non_finite_target_scores_are_misses():
    scores = np.array(
        [[np.nan, 0.0, 0.0, 0.0], [np.inf, 0.0, 0.0, 0.0], [-np.inf, -np.inf, -np.inf, 0.0], [1.0, np.nan, 2.0, 0.0]]
    )
    greater, ties = greater_and_ties(scores, np.array([0, 0, 0, 0]))
    for k in (1, 5, 10):
        assert expected_hit(greater, ties, k)[:3].tolist() == [0.0, 0.0, 0.0]
        assert expected_ndcg(greater, ties, k)[:3].tolist() == [0.0, 0.0, 0.0]
    assert greater[3] == 2, "an item scored NaN counts as ranked above the target"


def test_a_nan_target_score_is_never_a_hit_in_the_evaluator():
    ds = _ds()

    class NaNOnTarget(TargetFirst):
        def score(self, ds, users, histories):
            scores = np.zeros((len(users), ds.n_items))
            scores[np.arange(len(users)), [ds.example(u, self.stage)[1] for u in users]] = np.nan
            return scores

    result = evaluate(NaNOnTarget("test"), ds)
    assert result.metrics["HR@10"] == 0.0 and result.metrics["NDCG@10"] == 0.0


def test_all_nan_scores_are_an_error():
    ds = _ds()

    class Broken(TargetFirst):
        name = "broken"

        def score(self, ds, users, histories):
            scores = np.zeros((len(users), ds.n_items))
            scores[-1] = np.nan
            return scores

    with pytest.raises(ValueError, match=r"broken returned only NaN scores for 1 of \d+ users"):
        evaluate(Broken("test"), ds)


# --------------------------------------------------------------------------- paired comparisons


def _result(users: list[int], hr: list[float]) -> EvalResult:
    metrics = {
        "HR@5": 0.0,
        "NDCG@5": 0.0,
        "HR@10": float(np.mean(hr)),
        "NDCG@10": float(np.mean(hr)),
        "tail_HR@10": 0.0,
        "tail_NDCG@10": 0.0,
        "coverage@10": 0.0,
    }
    return EvalResult("test", metrics, len(users), True, users, {"HR@10": hr, "NDCG@10": hr})


@pytest.mark.parametrize("cold", [False, True])
def test_paired_comparisons_refuse_different_splits(tmp_path, cold):
    from training.evaluation.report import write_result
    from training.evaluation.summary import SplitMismatch, cold_table, main_table

    ds = _ds()
    users = list(range(ds.n_users))
    suffix = "-cold" if cold else ""
    extra = (
        {
            "cold_start": {
                "cold_target": {"HR@10": 0.0, "NDCG@10": 0.0},
                "warm_target": {"HR@10": 0.0, "NDCG@10": 0.0},
                "cold_target_users": users[:5],
            }
        }
        if cold
        else None
    )
    write_result(ds, f"sasrec-ce{suffix}", _result(users, [1.0] * len(users)), out_dir=tmp_path, extra=extra)
    other = write_result(ds, f"pop{suffix}", _result(users, [0.0] * len(users)), out_dir=tmp_path, extra=extra)
    table = cold_table if cold else main_table
    pop_row = next(line for line in table(ds.name, tmp_path) if line.startswith("| Pop"))
    assert "0.00×" in pop_row, "on the same split the paired comparison is made"

    record = json.loads(other.read_text())
    record["split_hash"] = "0" * 64
    other.write_text(json.dumps(record))
    with pytest.raises(
        SplitMismatch, match=rf"cannot compare movies/pop{suffix}.json \(split 000000000000\) with movies/sasrec-ce{suffix}.json"
    ):
        table(ds.name, tmp_path)


# --------------------------------------------------------------------------- teacher coverage decided before training (issue #11)


def _write_partial_teacher(ds: PreparedDataset, data_dir: Path, oracle_users: int, flagged: int = 0) -> None:
    cache = TeacherCache(cache_path(data_dir, ds.name, "description"))
    for task in build_tasks(ds, "description"):
        cache.append(
            {"key": task_key(task, TEACHER), "status": "ok", "text": f"description for {task.subject}", "subject": task.subject}
        )
    cache = TeacherCache(cache_path(data_dir, ds.name, "oracle"))
    for n, task in enumerate(build_tasks(ds, "oracle")[: oracle_users + flagged]):
        status = "ok" if n < oracle_users else "flagged"
        cache.append(
            {"key": task_key(task, TEACHER), "status": status, "text": f"oracle for {task.subject}", "subject": task.subject}
        )


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt to load an encoder or train R2END fails the test; returns the calls made with partial data allowed."""
    from training.r2end import run

    calls: list[str] = []

    class TrainingStarted(Exception):
        pass

    def trainer(config, *args, **kwargs):
        calls.append(config.variant)
        raise TrainingStarted(config.variant)

    monkeypatch.setattr(run, "train_r2end", trainer)
    monkeypatch.setattr(pipeline, "load_encoder", lambda name: pytest.fail("an encoder was loaded"))
    return calls, TrainingStarted


def test_incomplete_teacher_data_is_refused_before_anything_trains(tmp_path, no_training):
    from training.r2end import run
    from training.r2end.teacher_data import TeacherDataIncomplete

    calls, started = no_training
    ds = _ds()
    _write_partial_teacher(ds, tmp_path, oracle_users=10, flagged=1)
    with pytest.raises(TeacherDataIncomplete) as info:
        run.train_and_report(_config(), ds, tmp_path, None)
    message = str(info.value)
    assert calls == [], "the trainer must not be called"
    assert "oracle: 10 usable of 40 needed (1 flagged, 29 missing)" in message
    assert "description: 30 usable of 30 needed (0 flagged, 0 missing)" in message
    assert "--kinds oracle`" in message and "--allow-partial" in message and "nothing was trained" in message

    with pytest.raises(started):  # allowed: training starts
        run.train_and_report(_config(), ds, tmp_path, None, allow_partial=True)
    assert calls == ["r2end"]


def test_coverage_counts_what_each_configuration_reads(tmp_path):
    from training.r2end.config import ABLATIONS
    from training.r2end.teacher_data import require_teacher_data, teacher_kinds

    ds = _ds()
    _write_partial_teacher(ds, tmp_path, oracle_users=ds.n_users)
    coverage = require_teacher_data(_config(), ds, tmp_path)
    assert coverage.complete and set(coverage.texts) == {"description", "oracle"}
    kinds = {name: teacher_kinds(_config(**switches)) for name, switches in ABLATIONS.items()}
    assert kinds["r2end"] == ["description", "oracle"]
    assert kinds["abl1-unguided"] == kinds["abl2-unguided-rs"] == ["description", "unguided"]
    assert kinds["abl3-item-target"] == ["description"]
    assert teacher_kinds(_config(rationale="item", item_text="metadata")) == []
    assert not require_teacher_data(_config(rationale="unguided"), ds, tmp_path, allow_partial=True).complete


def test_cli_train_and_ablations_decide_coverage_up_front(tmp_path, monkeypatch, no_training):
    from typer.testing import CliRunner

    from training.cli import app
    from training.cli import model as cli_model

    calls, _ = no_training
    ds = _ds()
    _write_partial_teacher(ds, tmp_path, oracle_users=10)
    monkeypatch.setattr(cli_model, "load_dataset", lambda *a, **k: ds)
    common = ["--dataset", "movies", "--data-dir", str(tmp_path), "--set", f"teacher_model={TEACHER}"]
    runner = CliRunner()

    result = runner.invoke(app, ["train", *common, "--no-export"])
    assert result.exit_code == 2, result.output
    assert "teacher data incomplete for r2end on movies (description: 30 usable of 30 needed" in result.output
    assert "oracle: 10 usable of 40 needed" in result.output and "--allow-partial" in result.output

    result = runner.invoke(app, ["ablations", *common, "--only", "r2end,abl1-unguided,abl6-no-reg"])
    assert result.exit_code == 0, result.output
    for variant in ("r2end", "abl1-unguided", "abl6-no-reg"):
        assert f"skipped {variant}" in result.output
    assert "unguided: 0 usable of 40 needed (0 flagged, 40 missing)" in result.output
    assert calls == [], "no variant may start training on missing data"
