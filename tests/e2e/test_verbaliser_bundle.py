"""One verbaliser end to end: a bundle trained with a non-default one, and every reader of it (training,
the bundle scorer, the service, the generative baseline) makes the same history text."""

from __future__ import annotations

import pytest
from locations import MOVIES

from index.verbalize import Verbaliser

PAPER = Verbaliser()
CUSTOM = Verbaliser(max_items=3, window_days=3650, format="lines")


@pytest.fixture(scope="module")
def custom_bundle(tmp_path_factory):
    """A real (small, undistilled) bundle trained with a non-default verbaliser."""
    from training.data.preprocess import prepare
    from training.data.recbole import load_recbole
    from training.export import export_bundle
    from training.r2end.config import R2ENDConfig
    from training.r2end.pipeline import train_r2end

    ds = prepare(load_recbole(MOVIES, "movies"), k=2)
    config = R2ENDConfig(
        item_text="metadata",
        rationale="item",
        distill=False,
        projection_epochs=1,
        threads=2,
        variant="verbaliser",
        verbaliser=CUSTOM,
    )
    model = train_r2end(config, ds)
    path = tmp_path_factory.mktemp("bundle") / "verbaliser"
    export_bundle(model, ds, path, int8=False)
    return ds, model, path


def test_export_writes_the_configs_verbaliser_and_every_reader_makes_the_same_text(custom_bundle):
    from index.bundle import load_manifest
    from loadtest.generative_app import Baseline, GenerativeSettings, history_of
    from service.model import ServingModel
    from service.schemas import RecommendRequest
    from service.settings import ServiceSettings
    from training.r2end.bundle_scorer import BundleScorer

    ds, model, path = custom_bundle
    assert load_manifest(path).verbaliser == CUSTOM == model.config.verbaliser
    histories = [ds.example(u, "test")[0] for u in range(ds.n_users)]
    training = model.history_texts(ds, histories)
    assert training != ds.history_texts(histories, PAPER), "the custom verbaliser must make a difference here"
    assert BundleScorer(path).history_texts(ds, histories) == training

    serving = ServingModel.load(path, ServiceSettings(bundle_path=path, warmup=False))
    items = {item.item_id: item for item in ds.catalog}
    assert [serving.history_text(ds.history_events(h), items) for h in histories] == training

    generative = Baseline.load(path)
    settings = GenerativeSettings(bundle_path=path, llm_url="http://127.0.0.1:9", model="unused")
    requests = [
        RecommendRequest(history=[{"item_id": e.item_id, "timestamp": e.timestamp} for e in ds.history_events(h)])
        for h in histories
    ]
    assert [history_of(request, generative, settings)[0] for request in requests] == training
