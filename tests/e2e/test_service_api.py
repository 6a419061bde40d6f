"""Every route of the real service (uvicorn subprocess) on the tiny bundle, happy paths."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from service_util import WRITE_AUTH, metric_names, metric_sum, parse_metrics

from index import bundle as B
from index.catalog import Catalog
from index.onnx_encoder import OnnxTextEncoder
from index.verbalize import HistoryEvent, item_document

HISTORY = [
    {"item_id": "1", "timestamp": 881250949},
    {"item_id": "7", "timestamp": 881350949},
    {"item_id": "20", "timestamp": 881450949},
]


@pytest.fixture(scope="module")
def client(service):
    with service.client() as http:
        yield http


@pytest.fixture(scope="module")
def manifest(tiny_bundle):
    return B.load_manifest(tiny_bundle)


def test_healthz_and_readyz(client, manifest, tiny_bundle):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    bundle = ready.json()["bundle"]
    assert bundle["bundle_version"] == manifest.bundle_version
    assert bundle["variant"] == "tiny" and bundle["n_items"] == manifest.n_items and bundle["int8"] is False
    assert bundle["bundle_path"] == str(tiny_bundle)


def test_recommend_matches_offline_scoring(client, tiny_bundle, manifest):
    """The service's ranking equals the bundle scored by hand: verbaliser -> ONNX -> cosine with item_vectors."""
    response = client.post("/recommend", json={"history": HISTORY, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    catalog = Catalog.load_jsonl(tiny_bundle / B.CATALOG)
    text = manifest.verbaliser.history_text([HistoryEvent(e["item_id"], e["timestamp"]) for e in HISTORY], catalog.__getitem__)
    encoder = OnnxTextEncoder(tiny_bundle / B.USER_ONNX, tiny_bundle / B.TOKENIZER, manifest.max_seq_length, threads=1)
    scores = encoder.encode([text])[0] @ np.load(tiny_bundle / B.ITEM_VECTORS).T
    seen = {e["item_id"] for e in HISTORY}
    expected = [catalog.at(int(row)).item_id for row in np.argsort(-scores) if catalog.at(int(row)).item_id not in seen][:5]
    assert [item["item_id"] for item in body["items"]] == expected
    for item in body["items"]:
        assert item["score"] == pytest.approx(float(scores[catalog.row(item["item_id"])]), abs=1e-4)
        assert item["title"] == catalog[item["item_id"]].title
        assert item["categories"] == list(catalog[item["item_id"]].categories)
    assert body["unknown_item_ids"] == [] and body["bundle_version"] == manifest.bundle_version and body["variant"] == "tiny"


def test_recommend_reports_unknown_ids_and_sorts_by_time(client):
    base = client.post("/recommend", json={"history": HISTORY, "k": 5}).json()
    shuffled = [HISTORY[2], {"item_id": "no-such-item"}, HISTORY[0], HISTORY[1]]
    # one event without timestamp: the order given is kept, so drop the unknown one's effect by giving timestamps
    response = client.post(
        "/recommend", json={"history": [HISTORY[2], HISTORY[0], {"item_id": "nope", "timestamp": 5}, HISTORY[1]], "k": 5}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["unknown_item_ids"] == ["nope"]
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in base["items"]]
    mixed = client.post("/recommend", json={"history": shuffled, "k": 5})
    assert mixed.status_code == 200 and mixed.json()["unknown_item_ids"] == ["no-such-item"]


def test_exclude_seen_and_default_k(client, manifest):
    everything = client.post("/recommend", json={"history": HISTORY, "k": manifest.n_items, "exclude_seen": False}).json()
    ids = [item["item_id"] for item in everything["items"]]
    assert len(ids) == manifest.n_items and {e["item_id"] for e in HISTORY} <= set(ids)
    scores = [item["score"] for item in everything["items"]]
    assert scores == sorted(scores, reverse=True)
    excluded = client.post("/recommend", json={"history": HISTORY, "k": manifest.n_items}).json()
    assert len(excluded["items"]) == manifest.n_items - len(HISTORY)
    assert not {e["item_id"] for e in HISTORY} & {item["item_id"] for item in excluded["items"]}
    assert len(client.post("/recommend", json={"history": HISTORY}).json()["items"]) == 10


def test_history_text(client):
    response = client.post(
        "/recommend", json={"history_text": "Toy Story (1995); Categories: Animation, Children's, Comedy", "k": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 3 and body["unknown_item_ids"] == []
    assert body["items"][0]["item_id"] == "1"  # the movie itself (nothing is "seen" in a free-text history)
    odd = client.post("/recommend", json={"history_text": "日本語 ✓ \u0000 \U0001f600 " * 50, "k": 2})
    assert odd.status_code == 200 and len(odd.json()["items"]) == 2


def test_batch_equals_single_calls(client):
    requests = [
        {"history": HISTORY, "k": 4},
        {"history": HISTORY[:1], "k": 2, "exclude_seen": False},
        {"history_text": "Heat", "k": 3},
    ]
    response = client.post("/recommend/batch", json={"requests": requests})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    for request, result in zip(requests, results, strict=True):
        single = client.post("/recommend", json=request).json()
        assert [i["item_id"] for i in result["items"]] == [i["item_id"] for i in single["items"]]
        assert [i["score"] for i in result["items"]] == pytest.approx([i["score"] for i in single["items"]], abs=1e-5)


def test_live_item_lifecycle(client):
    item = {
        "title": "Heat",
        "year": 1995,
        "categories": ["Action", "Crime", "Thriller"],
        "description": "Career criminals and a detective.",
        "brand": "Warner",
        "price": 9.5,
        "extra": {"director": "Michael Mann"},
    }
    created = client.put("/items/live-heat", json=item, headers=WRITE_AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["created"] is True and created.json()["item"]["title"] == "Heat"
    got = client.get("/items/live-heat").json()
    assert got["description"] == item["description"] and got["extra"] == {"director": "Michael Mann"} and got["price"] == 9.5
    # searchable at once: its own document as the query finds it first
    from index.catalog import ItemMeta

    meta = ItemMeta("live-heat", "Heat", ("Action", "Crime", "Thriller"), "Warner", 1995, item["description"], 9.5)
    found = client.post("/recommend", json={"history_text": item_document(item["description"], meta), "k": 1}).json()
    assert found["items"][0]["item_id"] == "live-heat"
    replaced = client.put(
        "/items/live-heat", json={**item, "title": "Heat (director's cut)", "item_id": "live-heat"}, headers=WRITE_AUTH
    )
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    assert client.get("/items/live-heat").json()["title"] == "Heat (director's cut)"
    # a live item can be in a history
    with_live = client.post("/recommend", json={"history": [{"item_id": "live-heat"}], "k": 3}).json()
    assert with_live["unknown_item_ids"] == [] and "live-heat" not in [i["item_id"] for i in with_live["items"]]
    deleted = client.delete("/items/live-heat", headers=WRITE_AUTH)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert client.get("/items/live-heat").status_code == 404
    assert client.delete("/items/live-heat", headers=WRITE_AUTH).status_code == 404
    after = client.post("/recommend", json={"history_text": item_document(item["description"], meta), "k": 30}).json()
    assert "live-heat" not in [i["item_id"] for i in after["items"]]


def test_get_bundle_item(client, tiny_bundle):
    catalog = Catalog.load_jsonl(tiny_bundle / B.CATALOG)
    body = client.get("/items/2").json()
    assert body["item_id"] == "2" and body["title"] == catalog["2"].title and body["year"] == catalog["2"].year


def test_concurrent_requests_all_succeed(client, service):
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda n: client.post("/recommend", json={"history": HISTORY[: 1 + n % 3], "k": 3}).status_code, range(24))
        )
    assert statuses == [200] * 24


def test_metrics_exposes_the_documented_names(client):
    client.post("/recommend", json={"history": HISTORY, "k": 2})
    text = client.get("/metrics").text
    names = metric_names(text)
    for name in (
        "http_request_duration_seconds_bucket",
        "http_request_duration_highr_seconds_bucket",
        "http_requests_total",
        "r2end_tokenize_seconds_bucket",
        "r2end_encode_seconds_bucket",
        "r2end_search_seconds_bucket",
        "r2end_queue_wait_seconds_bucket",
        "r2end_batch_size_bucket",
        "r2end_queue_depth_bucket",
        "r2end_queue_pending",
        "r2end_in_flight_requests",
        "r2end_rejected_requests_total",
        "r2end_reloads_total",
        "r2end_bundle_info",
        "r2end_catalog_items",
    ):
        assert name in names, name
    metrics = parse_metrics(text)
    assert metric_sum(metrics, "http_request_duration_seconds_count", handler="/recommend") >= 1
    assert metric_sum(metrics, "r2end_encode_seconds_count", encoder="user") >= 1
    assert metric_sum(metrics, "r2end_reloads_total", outcome="ok") == 1


def test_openapi_documents_routes_and_examples(client):
    spec = client.get("/openapi.json").json()
    for path in ("/recommend", "/recommend/batch", "/items/{item_id}", "/healthz", "/readyz", "/metrics", "/admin/reload"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert schemas["RecommendRequest"]["examples"] and schemas["ItemIn"]["examples"]
    assert "422" in spec["paths"]["/recommend"]["post"]["responses"]
    json.dumps(spec)
