"""What the int8 user graph costs, measured at export (``metrics.int8``): present and well-formed, scored as served
(the paper's R2END and R2END+CF's history towers; R2END-Hybrid in test_hybrid_cli.py), a seeded sample of users,
the export warning, and the service's startup line.

The model is the teacher-free text path (item targets, metadata item text) on the fixture movies with the tests'
tiny encoder (every stage real, the model too small to mean anything).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from cf_util import enlarge_collaborative_term
from encoder_util import build_tiny_encoder
from locations import MOVIES

from index import bundle as B


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.data.preprocess import prepare
    from training.data.recbole import load_recbole
    from training.export import export_bundle
    from training.r2end.config import R2ENDConfig
    from training.r2end.pipeline import train_r2end

    tmp = tmp_path_factory.mktemp("int8")
    with pytest.MonkeyPatch.context() as env:  # nothing of this run under the real $R2END_HOME
        env.setenv("R2END_HOME", str(tmp / "home"))
        ds = prepare(load_recbole(MOVIES, "movies"), k=5)
        config = R2ENDConfig(
            encoder=str(build_tiny_encoder(tmp / "encoder")),
            item_text="metadata",
            rationale="item",
            max_seq_length=64,
            projection_epochs=2,
            threads=1,
            variant="int8-check",
        )
        model = train_r2end(config, ds)
        manifest = export_bundle(model, ds, tmp / "bundle")
    return ds, model, tmp / "bundle", manifest


def test_export_stores_the_int8_cost_on_validation_users(trained):
    from training.evaluation.evaluator import evaluate

    ds, model, bundle, manifest = trained
    assert B.load_manifest(bundle).metrics["int8"] == manifest.metrics["int8"]
    cost = manifest.int8_cost
    assert cost is not None and cost.stage == "valid" and cost.users == ds.n_users  # fewer than Int8Check.users: all
    assert cost.max_relative_loss == 0.02 and cost.exceeds == (cost.relative_loss > 0.02)
    assert cost.relative_loss == pytest.approx((cost.ndcg10_fp32 - cost.ndcg10_int8) / cost.ndcg10_fp32, abs=1e-5)
    assert 0.5 <= cost.top10_overlap <= 1 and 0.9 < cost.text_cosine_min <= cost.text_cosine_mean <= 1 + 1e-5
    assert 0 < cost.seconds <= manifest.metrics["export_seconds"]
    # the fp32 side is the trained model, scored through the bundle (ONNX) as served
    assert cost.ndcg10_fp32 == pytest.approx(evaluate(model, ds, "valid").metrics["NDCG@10"], abs=1e-3)


def test_a_seeded_sample_of_users_when_there_are_more(trained):
    from training.export import Int8Check, measure_int8_cost

    ds, _, bundle, _ = trained
    check = Int8Check(users=7, seed=3)
    first, again = measure_int8_cost(bundle, ds, check), measure_int8_cost(bundle, ds, check)
    assert first.users == 7 and first.model_dump(exclude={"seconds"}) == again.model_dump(exclude={"seconds"})


def test_a_loss_above_the_threshold_is_an_export_warning(trained, monkeypatch, caplog):
    from training.export import Int8Check, measure_int8_cost

    ds, _, bundle, _ = trained
    monkeypatch.setattr(B.Int8Cost, "exceeds", property(lambda self: True))
    with caplog.at_level(logging.INFO, logger="training.export"):
        cost = measure_int8_cost(bundle, ds, Int8Check(users=5))
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "training.export"]
    assert (logging.INFO, f"export: {cost.describe()} ({cost.seconds:.1f} s)") in messages
    warnings = [m for level, m in messages if level == logging.WARNING]
    assert len(warnings) == 1 and "serve this bundle in fp32" in warnings[0] and "Int8Check.max_relative_loss" in warnings[0]


def test_no_int8_graph_no_cost(trained, tmp_path):
    from training.export import export_bundle

    ds, model, _, _ = trained
    manifest = export_bundle(model, ds, tmp_path / "fp32", int8=False)
    assert "int8" not in manifest.metrics and manifest.int8_cost is None


def test_the_service_started_with_int8_says_what_it_costs(trained, caplog):
    from service.model import ServingModel
    from service.settings import ServiceSettings

    _, _, bundle, manifest = trained
    with caplog.at_level(logging.INFO, logger="service.model"):
        ServingModel.load(bundle, ServiceSettings(bundle_path=bundle, use_int8=True, warmup=False))
    said = [r for r in caplog.records if r.name == "service.model" and "R2END_USE_INT8" in r.getMessage()]
    assert len(said) == 1 and manifest.int8_cost.describe() in said[0].getMessage()
    assert said[0].levelno == (logging.WARNING if manifest.int8_cost.exceeds else logging.INFO)


@pytest.mark.parametrize("design", ["history-tower", "sequence-tower"])
def test_cf_bundles_are_scored_with_their_collaborative_term(trained, tmp_path, design):
    """R2END+CF: the bundle scorer (and so the int8 check) adds the history tower's term, as the service does."""
    from service.model import ServingModel
    from service.settings import ServiceSettings
    from training.evaluation.evaluator import evaluate
    from training.export import export_bundle
    from training.r2end.bundle_scorer import BundleScorer
    from training.r2end.collaborative import CFConfig, train_cf

    ds, model, _, _ = trained
    cf = train_cf(model, ds, CFConfig(design=design, epochs=2, prefixes_per_user=2))
    enlarge_collaborative_term(cf)  # so that scoring without it would show
    exportable = replace(model, projection=cf.head.projection, item_vectors=cf.item_vectors)
    manifest = export_bundle(
        exportable,
        ds,
        tmp_path / design,
        history_table=cf.history_table,
        history_items=cf.config.history_items,
        tower=cf.head.tower,
    )
    users = list(range(ds.n_users))
    histories = [ds.example(u, "valid")[0] for u in users]
    scorer = BundleScorer(tmp_path / design)
    expected = cf.score(ds, users, histories)
    assert np.abs(scorer.score(ds, users, histories) - expected).max() < 1e-4
    text_only = scorer.scores(scorer.text_vectors(ds, histories))
    assert np.abs(text_only - expected).max() > 1e-3, "the collaborative term should change the scores"
    serving = ServingModel.load(tmp_path / design, ServiceSettings(bundle_path=tmp_path / design, warmup=False))
    served = serving.add_history(scorer.text_vectors(ds, histories), [[r for r, _ in h] for h in histories])
    assert np.abs(scorer.scores(served) - expected).max() < 1e-4  # the service's term (index.history_tower) is the same
    cost = manifest.int8_cost
    assert cost is not None and cost.users == ds.n_users
    assert cost.ndcg10_fp32 == pytest.approx(evaluate(cf, ds, "valid").metrics["NDCG@10"], abs=1e-3)
