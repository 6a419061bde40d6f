"""Request-path levers behind settings or request flags, on a real server: the user-vector cache and answers without
metadata (the cache alone: tests/unit/test_user_cache.py)."""

from __future__ import annotations

import pytest
from service_util import ADMIN_TOKEN, metric_sum, parse_metrics

HISTORY = [{"item_id": "1", "timestamp": 881250949}, {"item_id": "7", "timestamp": 881350949}]


def ranking(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def scores(body: dict) -> list[float]:
    return [item["score"] for item in body["items"]]


def test_cached_user_vectors_give_the_same_answer_and_are_counted(make_service):
    server = make_service(user_cache_size=4, admin_token=ADMIN_TOKEN)
    body = {"history": HISTORY, "k": 5}
    with server.client(timeout=300) as http:  # a reload loads and warms a bundle: slow on a busy machine
        first = http.post("/recommend", json=body).json()
        again = http.post("/recommend", json=body).json()
        other = http.post("/recommend/batch", json={"requests": [body, {"history": HISTORY[:1], "k": 5}]}).json()
        assert ranking(again) == ranking(first) == ranking(other["results"][0])
        assert scores(again) == scores(first) == scores(other["results"][0])  # the very same vector
        metrics = parse_metrics(http.get("/metrics").text)
        assert metric_sum(metrics, "r2end_user_cache_lookups_total", result="hit") == 2  # the repeat, and the batch's first
        assert metric_sum(metrics, "r2end_user_cache_lookups_total", result="miss") == 2
        assert metric_sum(metrics, "r2end_batch_size_sum") == 2  # only the misses were encoded
        reload = http.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert reload.status_code == 200, reload.text
        fresh = http.post("/recommend", json=body).json()
        assert ranking(fresh) == ranking(first) and scores(fresh) == pytest.approx(scores(first), abs=1e-5)
        metrics = parse_metrics(http.get("/metrics").text)
        assert (
            metric_sum(metrics, "r2end_user_cache_lookups_total", result="miss") == 3
        )  # a reloaded bundle starts an empty cache


@pytest.fixture(scope="module")
def client(service):
    with service.client() as http:
        yield http


def test_answers_without_metadata(client):
    full = client.post("/recommend", json={"history": HISTORY, "k": 4}).json()
    assert all(item["title"] for item in full["items"]) and "categories" in full["items"][0]
    slim = client.post("/recommend", json={"history": HISTORY, "k": 4, "include_metadata": False}).json()
    assert [set(item) for item in slim["items"]] == [{"item_id", "score"}] * 4
    assert ranking(slim) == ranking(full) and scores(slim) == pytest.approx(scores(full), abs=1e-5)
    assert {k: v for k, v in slim.items() if k != "items"} == {k: v for k, v in full.items() if k != "items"}
    batch = client.post(
        "/recommend/batch",
        json={"requests": [{"history": HISTORY, "k": 4, "include_metadata": False}, {"history": HISTORY, "k": 4}]},
    ).json()["results"]
    assert [set(item) for item in batch[0]["items"]] == [{"item_id", "score"}] * 4
    assert ranking(batch[1]) == ranking(full) and [i["title"] for i in batch[1]["items"]] == [i["title"] for i in full["items"]]


def test_the_cache_is_off_by_default(client):
    client.post("/recommend", json={"history": HISTORY, "k": 2})
    assert metric_sum(parse_metrics(client.get("/metrics").text), "r2end_user_cache_lookups_total") == 0
