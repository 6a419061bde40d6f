"""End to end on tiny data: fixture rationales -> distillation -> projection -> ONNX bundle -> reload.

The fixture "teacher" writes deterministic rationales and descriptions into a real
TeacherCache under the keys the pipeline looks up, so the oracle path is exercised
exactly as with LLM output. Takes about a minute (real MiniLM, real ONNX export).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cf_util import enlarge_collaborative_term
from locations import MOVIES

from index import bundle as B
from index.verbalize import item_text, target_text
from training.data.preprocess import prepare
from training.data.recbole import load_recbole
from training.export import export_bundle
from training.r2end.bundle_scorer import BundleScorer
from training.r2end.config import R2ENDConfig
from training.r2end.pipeline import encode, train_r2end
from training.teacher.cache import TeacherCache
from training.teacher.runner import cache_path, task_key
from training.teacher.tasks import build_tasks

FIXTURE = MOVIES
TEACHER = "fixture-teacher"


def _fixture_text(ds, task) -> str:
    kind, subject = task.kind, task.subject.split(":", 1)[1]
    if kind == "description":
        item = ds.catalog[subject]
        return (
            f"Users who prefer {', '.join(item.categories) or 'films'} would find this item suitable, like fans of {item.title}."
        )
    user = ds.users.index(subject)
    _, target = ds.example(user, "train")
    item = ds.catalog.at(target)
    return (
        f"The user's preferences related to the target item are as follows. The user keeps returning to "
        f"{', '.join(item.categories) or 'varied'} films and would enjoy {item_text(item)}."
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = prepare(load_recbole(FIXTURE, "movies"), k=5)
    data_dir = tmp_path_factory.mktemp("teacher")
    for kind in ("oracle", "description"):
        cache = TeacherCache(cache_path(data_dir, ds.name, kind))
        for task in build_tasks(ds, kind):
            cache.append(
                {"key": task_key(task, TEACHER), "status": "ok", "text": _fixture_text(ds, task), "subject": task.subject}
            )
    config = R2ENDConfig(
        dataset=ds.name, variant="e2e", teacher_model=TEACHER, projection_epochs=2, distill_batch_size=8, distill_lr=5e-5
    )
    model = train_r2end(config, ds, data_dir)
    bundle_dir = tmp_path_factory.mktemp("bundle") / "e2e"
    manifest = export_bundle(model, ds, bundle_dir, metrics={"note": "test"})
    return ds, model, bundle_dir, manifest


def test_teacher_outputs_are_used(trained):
    ds, model, _, _ = trained
    stages = model.report["stages"]
    assert stages["targets"]["rationales"]["usable"] == ds.n_users
    assert stages["item_embeddings"]["descriptions"]["usable"] == ds.n_items
    assert stages["distillation"]["trained"] is True


def test_a_rationale_subset_is_seeded_nested_and_is_what_is_distilled(trained, tmp_path):
    """The learning curve's subsets (R2ENDConfig.rationale_users): same seed, same users; a smaller one inside a larger."""
    from training.r2end.pipeline import rationale_subset

    users = np.arange(100, 200)
    small, large = rationale_subset(users, 10, 22), rationale_subset(users, 40, 22)
    assert len(small) == 10 and set(small) <= set(large) and (np.diff(large) > 0).all()
    assert np.array_equal(small, rationale_subset(users, 10, 22)) and not np.array_equal(small, rationale_subset(users, 10, 5))
    assert np.array_equal(rationale_subset(users, 500, 22), users)  # more than there are: all of them

    ds, _, _, _ = trained
    teacher_dir = tmp_path / "teacher"
    cache = TeacherCache(cache_path(teacher_dir, ds.name, "oracle"))
    for task in build_tasks(ds, "oracle"):
        cache.append({"key": task_key(task, TEACHER), "status": "ok", "text": _fixture_text(ds, task), "subject": task.subject})
    config = R2ENDConfig(
        dataset=ds.name, teacher_model=TEACHER, item_text="metadata", rationale_users=3, distill=False, projection=False
    )
    targets = train_r2end(config, ds, teacher_dir).report["stages"]["targets"]
    assert targets["distillation_examples"] == 3 and targets["rationale_users"] == {"asked": 3, "used": 3}


def test_a_text_path_refit_without_items_never_trains_on_them(trained, monkeypatch):
    """The hybrid's pseudo-new probe: the held-out items are no example's target and no negative, the epochs
    are the ones validation chose, and the trained model is left as it was."""
    from training.r2end import pipeline

    ds, model, _, _ = trained
    held_out = np.zeros(ds.n_items, dtype=bool)
    held_out[[ds.example(u, "train")[1] for u in range(0, ds.n_users, 3)]] = True  # some users' own training targets
    seen: dict = {}
    real = pipeline.train_projection

    def spy(config, users, positives, items, validate=None, negative_pool=None):
        seen.update(positives=np.asarray(positives), pool=np.asarray(negative_pool), epochs=config.projection_epochs)
        return real(config, users, positives, items, validate=validate, negative_pool=negative_pool)

    monkeypatch.setattr(pipeline, "train_projection", spy)
    before = model.item_vectors.copy()
    refit = pipeline.refit_without_items(model, ds, held_out)
    assert len(seen["positives"]) > 0 and not held_out[seen["positives"]].any()
    assert not held_out[seen["pool"]].any() and len(seen["pool"]) == int((~held_out).sum())
    assert seen["epochs"] == model.report["stages"]["projection"]["selected_epoch"]
    assert refit.report["refit_without_items"]["held_out_items"] == int(held_out.sum())
    assert refit.projection is not model.projection and refit.student is model.student
    np.testing.assert_array_equal(model.item_vectors, before)  # the trained text path is untouched
    assert not np.allclose(refit.item_vectors, before, atol=1e-4)


def test_an_identical_distillation_comes_from_the_student_cache(trained, tmp_path, monkeypatch):
    """The cache returns the student trained on the very same inputs, and any change of input trains a new one."""
    from training.encoders import load_encoder
    from training.r2end import distill
    from training.r2end.distill import cached_student, student_key

    monkeypatch.setenv("R2END_HOME", str(tmp_path / "home"))
    ds, model, _, _ = trained
    histories = model.history_texts(ds, [ds.example(u, "train")[0] for u in range(4)])
    targets = model.item_embeddings[:4]
    config = R2ENDConfig(dataset=ds.name, distill_batch_size=2, distill_lr=5e-5, threads=1)

    def fresh():
        return load_encoder(config.encoder)

    trained_once, first = cached_student(config, histories, targets, fresh)
    cached, second = cached_student(config, histories, targets, fresh)
    assert (first["cache"], second["cache"], first["key"]) == ("stored", "hit", second["key"])
    np.testing.assert_allclose(encode(cached, histories), encode(trained_once, histories), atol=1e-6)
    assert not np.allclose(encode(cached, histories), encode(model.encoder, histories), atol=1e-4)  # it was distilled
    keys = {
        student_key(config, histories, targets),
        student_key(config, histories[:3] + ["another history"], targets),
        student_key(config, histories, targets + 1e-3),
        student_key(config.model_copy(update={"distill_lr": 1e-5}), histories, targets),
        student_key(config.model_copy(update={"seed": 1}), histories, targets),
    }
    assert len(keys) == 5
    monkeypatch.setattr(distill, "_distillation_code", lambda: b"def distill_student(): changed")
    assert student_key(config, histories, targets) not in keys  # a change to the training code retrains
    _, off = cached_student(config.model_copy(update={"student_cache": False}), histories, targets, fresh)
    assert off["cache"] == "off"


def test_a_cached_students_history_embeddings_are_kept_on_disk_for_the_next_run(trained, tmp_path, monkeypatch):
    """The text-path CF rows re-encode every training prefix with the same student: a second run with that
    student reads them from disk, and a student with other weights or settings never does."""
    from training.encoders import load_encoder, weights_identity
    from training.r2end.distill import cached_student, student_folder
    from training.r2end.pipeline import TrainedR2END, _student_store

    monkeypatch.setenv("R2END_HOME", str(tmp_path / "home"))
    ds, model, _, _ = trained
    histories = model.history_texts(ds, [ds.example(u, "train")[0] for u in range(6)])
    config = R2ENDConfig(dataset=ds.name, distill_batch_size=2, distill_lr=5e-5, threads=1)
    student, info = cached_student(config, histories[:4], model.item_embeddings[:4], lambda: load_encoder(config.encoder))
    store = _student_store(config, info)
    assert store is not None and store[0] == str(student_folder(info["key"]))

    class Counting:
        def __init__(self):
            self.texts = 0

        def encode(self, texts, **kwargs):
            self.texts += len(texts)
            return student.encode(texts, **kwargs)

    def run(encoder) -> np.ndarray:
        fresh = TrainedR2END(config, model.encoder, encoder, None, model.item_embeddings, model.item_embeddings, [])
        fresh.student_store = store
        return fresh.user_embeddings(histories)

    first, second = Counting(), Counting()
    vectors = run(first)
    np.testing.assert_allclose(vectors, encode(student, histories), atol=1e-6)
    assert first.texts == len(set(histories))
    assert np.array_equal(run(second), vectors) and second.texts == 0  # the next run encodes nothing

    folder = student_folder(info["key"])
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    weights = next(other.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert (
        len({store[1], weights_identity(other, 256, 64), weights_identity(folder, 128, 64), weights_identity(folder, 256, 32)})
        == 4
    )
    assert _student_store(config, {"cache": "off", "key": info["key"]}) is None  # weights nowhere on disk: never kept
    frozen = _student_store(config.model_copy(update={"distill": False}), {})
    assert frozen is not None and frozen[1] != store[1]


def test_distillation_moves_student_towards_targets(trained):
    ds, model, _, _ = trained
    examples = [ds.example(u, "train") for u in range(ds.n_users)]
    texts = model.history_texts(ds, [h for h, _ in examples])
    oracle = {t.subject: t for t in build_tasks(ds, "oracle")}
    targets = encode(
        model.encoder,
        [
            target_text(_fixture_text(ds, oracle[f"user:{user}"]), ds.catalog.at(target))
            for user, (_, target) in zip(ds.users, examples, strict=True)
        ],
    )
    before = (encode(model.encoder, texts) * targets).sum(1).mean()
    after = (encode(model.student, texts) * targets).sum(1).mean()
    assert after > before + 1e-3, f"student did not move towards the teacher targets ({before:.4f} -> {after:.4f})"


def test_bundle_reloads_and_onnx_top_k_matches_pytorch(trained):
    ds, model, bundle_dir, manifest = trained
    assert B.load_manifest(bundle_dir).bundle_version == manifest.bundle_version
    parity = manifest.metrics["onnx_parity"]
    assert parity["user_fp32_max_abs_diff"] < 1e-4 and parity["item_fp32_max_abs_diff"] < 1e-4
    users = list(range(ds.n_users))
    histories = [ds.example(u, "test")[0] for u in users]
    torch_scores = model.score(ds, users, histories)
    onnx_scores = BundleScorer(bundle_dir).score(ds, users, histories)
    assert np.abs(torch_scores - onnx_scores).max() < 1e-4
    same = [set(np.argsort(-t)[:10]) == set(np.argsort(-o)[:10]) for t, o in zip(torch_scores, onnx_scores, strict=True)]
    assert sum(same) >= 0.95 * len(same)


def test_bundle_refuses_tampered_files(trained, tmp_path):
    _, _, bundle_dir, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    vectors = np.load(broken / B.ITEM_VECTORS)
    vectors[0, 0] += 1.0
    np.save(broken / B.ITEM_VECTORS, vectors)
    with pytest.raises(B.BundleError, match="item_vectors.npy: sha256"):
        B.load_manifest(broken)


def test_bundle_refuses_wrong_schema_and_dims(trained, tmp_path):
    _, _, bundle_dir, _ = trained
    for change, message in ((("schema_version", 99), "schema_version 99"), (("output_dim", 7), "shape")):
        broken = tmp_path / f"broken-{change[0]}"
        shutil.copytree(bundle_dir, broken)
        raw = json.loads((broken / B.MANIFEST).read_text())
        raw[change[0]] = change[1]
        (broken / B.MANIFEST).write_text(json.dumps(raw))
        with pytest.raises(B.BundleError, match=message):
            B.load_manifest(broken)


@pytest.mark.parametrize("design", ["item-residual", "history-tower", "sequence-tower"])
def test_cf_bundle_serves_what_training_scored(trained, tmp_path, design):
    """R2END+CF exported with its history table: the service's model reproduces the training scores."""
    from dataclasses import replace

    from index.verbalize import HistoryEvent
    from service.model import ServingModel
    from service.settings import ServiceSettings
    from training.r2end.collaborative import CFConfig, train_cf

    ds, model, _, _ = trained
    cf = train_cf(model, ds, CFConfig(design=design, epochs=3, prefixes_per_user=3))
    assert (design == "history-tower") == (cf.history_table is not None)
    assert (design == "sequence-tower") == (cf.head.tower is not None)
    enlarge_collaborative_term(cf)  # so that a service ignoring it would fail below
    exportable = replace(model, projection=cf.head.projection, item_vectors=cf.item_vectors)
    bundle_dir = tmp_path / design
    export_bundle(
        exportable,
        ds,
        bundle_dir,
        int8=False,
        history_table=cf.history_table,
        history_items=cf.config.history_items,
        tower=cf.head.tower,
    )
    serving = ServingModel.load(bundle_dir, ServiceSettings(bundle_path=bundle_dir, warmup=False))
    users = list(range(ds.n_users))
    histories = [ds.example(u, "test")[0] for u in users]
    expected = cf.score(ds, users, histories)
    texts = [
        serving.history_text([HistoryEvent(ds.catalog.at(r).item_id, t) for r, t in h], {i.item_id: i for i in ds.catalog})
        for h in histories
    ]
    vectors = serving.add_history(serving.user_encoder.encode(texts), [[r for r, _ in h] for h in histories])
    served = vectors @ np.load(bundle_dir / B.ITEM_VECTORS).T
    assert np.abs(served - expected).max() < 1e-4
    if design != "item-residual":
        text_only = serving.user_encoder.encode(texts) @ np.load(bundle_dir / B.ITEM_VECTORS).T
        assert np.abs(text_only - expected).max() > 1e-3, "the collaborative term should change the scores"
