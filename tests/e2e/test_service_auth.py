"""Credentials on the real server: catalogue writes and admin routes need a bearer token; reads and /recommend do not.

No credential: 401 + ``WWW-Authenticate: Bearer``; a wrong one: 403; the token unset: 403 (the
routes are off). A refused write changes nothing: not the catalogue, not the item log.
"""

from __future__ import annotations

import pytest
from service_util import ADMIN_TOKEN, WRITE_AUTH, WRITE_TOKEN, assert_error_shape, metric_sum, parse_metrics

from service.deps import same_token

ITEM = {
    "title": "Intruder",
    "year": 1977,
    "categories": ["Action", "Sci-Fi"],
    "description": "A film that should never be served.",
}
WRONG = [
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}"},  # the admin token is not a write token
    {"Authorization": f"Bearer {WRITE_TOKEN}x"},
    {"Authorization": WRITE_TOKEN},  # no scheme
    {"Authorization": f"Basic {WRITE_TOKEN}"},
]


@pytest.fixture(scope="module")
def client(service):
    with service.client() as http:
        yield http


def refused(response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    [detail] = assert_error_shape(response)
    assert detail["loc"] == ["header", "authorization"] and detail["type"] == reason, detail
    assert "R2END_WRITE_TOKEN" in detail["msg"] or "R2END_ADMIN_TOKEN" in detail["msg"], detail


def test_writes_without_a_credential_answer_401_and_change_nothing(client, service):
    before = client.get("/items/5").json()
    put = client.put("/items/intruder", json=ITEM)
    refused(put, 401, "unauthorized")
    assert put.headers["www-authenticate"] == "Bearer"
    delete = client.delete("/items/5")
    refused(delete, 401, "unauthorized")
    assert delete.headers["www-authenticate"] == "Bearer"
    assert client.request("PUT", "/items/intruder", json=ITEM, headers={"Authorization": ""}).status_code == 401
    assert client.get("/items/intruder").status_code == 404
    assert client.get("/items/5").json() == before
    log = service.settings["item_log_path"]
    assert not log.exists() or "intruder" not in log.read_text()


@pytest.mark.parametrize("headers", WRONG, ids=["other", "admin-token", "longer", "no-scheme", "basic"])
def test_writes_with_a_wrong_credential_answer_403_and_change_nothing(client, headers):
    refused(client.put("/items/intruder", json=ITEM, headers=headers), 403, "forbidden")
    refused(client.delete("/items/5", headers=headers), 403, "forbidden")
    assert client.get("/items/intruder").status_code == 404
    assert client.get("/items/5").status_code == 200


def test_reads_and_recommendations_need_no_credential(client):
    assert client.get("/items/5").status_code == 200
    assert client.post("/recommend", json={"history": [{"item_id": "5"}], "k": 3}).status_code == 200
    assert client.post("/recommend/batch", json={"requests": [{"history_text": "Heat", "k": 2}]}).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_the_right_credential_writes(client):
    created = client.put("/items/auth-ok", json=ITEM, headers=WRITE_AUTH)
    assert created.status_code == 201, created.text
    lowercase = {"Authorization": f"bearer {WRITE_TOKEN}"}  # the scheme is case-insensitive (RFC 7235)
    assert client.delete("/items/auth-ok", headers=lowercase).status_code == 200
    assert client.get("/items/auth-ok").status_code == 404


def test_admin_routes_use_the_same_check(client):
    missing = client.post("/admin/reload")
    refused(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    refused(client.post("/admin/reload", headers=WRITE_AUTH), 403, "forbidden")  # the write token is not an admin token


def test_refusals_are_counted(client):
    metrics = parse_metrics(client.get("/metrics").text)
    assert metric_sum(metrics, "r2end_errors_total", reason="unauthorized") >= 2
    assert metric_sum(metrics, "r2end_errors_total", reason="forbidden") >= 2


def test_writes_are_off_while_no_write_token_is_set(make_service):
    server = make_service(write_token="")  # blank = unset
    with server.client() as http:
        for headers in ({}, WRITE_AUTH, {"Authorization": "Bearer"}):
            put = http.put("/items/intruder", json=ITEM, headers=headers)
            assert put.status_code == 403, put.text
            [detail] = assert_error_shape(put)
            assert detail["type"] == "forbidden" and "disabled" in detail["msg"] and "R2END_WRITE_TOKEN" in detail["msg"]
            assert http.delete("/items/5", headers=headers).status_code == 403
        assert http.get("/items/intruder").status_code == 404 and http.get("/items/5").status_code == 200
        assert http.post("/recommend", json={"history": [{"item_id": "5"}], "k": 3}).status_code == 200
    assert not server.settings["item_log_path"].exists()


def test_same_token():
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("ab", "abc") and not same_token("", "abc")
    assert same_token("日本", "日本") and not same_token("日本", "日")
