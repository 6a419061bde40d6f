"""Bad input against the real server: each is a clear 4xx JSON naming the field and reason, never a 500."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from service_util import ADMIN_TOKEN, WRITE_AUTH, assert_error_shape, metric_sum, parse_metrics

EVENT = {"item_id": "1", "timestamp": 881250949}
MAX_K, MAX_BATCH = 100, 64  # the defaults the shared server runs with
BODY_LIMIT_EVENTS = (1 << 20) // 16 + 1  # more events than a 1 MiB body (the default limit) can carry

# (name, method, path, json body, expected status, expected loc, expected type)
CASES = [
    (
        "unknown ids only",
        "POST",
        "/recommend",
        {"history": [{"item_id": "x1"}, {"item_id": "x2"}]},
        422,
        ["body", "history"],
        "unknown_items",
    ),
    ("empty history", "POST", "/recommend", {"history": []}, 422, ["body", "history"], "empty_history"),
    (
        "history beyond the body limit",
        "POST",
        "/recommend",
        {"history": [{"item_id": "1"}] * BODY_LIMIT_EVENTS},
        413,
        ["body"],
        "body_too_large",
    ),
    ("k zero", "POST", "/recommend", {"history": [EVENT], "k": 0}, 422, ["body", "k"], "greater_than_equal"),
    ("k negative", "POST", "/recommend", {"history": [EVENT], "k": -3}, 422, ["body", "k"], "greater_than_equal"),
    ("k above max", "POST", "/recommend", {"history": [EVENT], "k": MAX_K + 1}, 422, ["body", "k"], "k_too_large"),
    ("k huge", "POST", "/recommend", {"history": [EVENT], "k": 10**30}, 422, ["body", "k"], None),
    ("k wrong type", "POST", "/recommend", {"history": [EVENT], "k": "ten"}, 422, ["body", "k"], "int_parsing"),
    ("k fractional", "POST", "/recommend", {"history": [EVENT], "k": 2.5}, 422, ["body", "k"], "int_from_float"),
    ("history not a list", "POST", "/recommend", {"history": "1,2,3"}, 422, ["body", "history"], "list_type"),
    (
        "new_item_bias on a bundle that is not a hybrid",
        "POST",
        "/recommend",
        {"history": [EVENT], "new_item_bias": 0.5},
        422,
        ["body", "new_item_bias"],
        "not_hybrid",
    ),
    (
        "new_item_bias not a hybrid, in a batch",
        "POST",
        "/recommend/batch",
        {"requests": [{"history": [EVENT]}, {"history": [EVENT], "new_item_bias": 0.5}]},
        422,
        ["body", "requests", 1, "new_item_bias"],
        "not_hybrid",
    ),
    (
        "new_item_bias beyond its bound",
        "POST",
        "/recommend",
        {"history": [EVENT], "new_item_bias": 11},
        422,
        ["body", "new_item_bias"],
        "less_than_equal",
    ),
    (
        "new_item_bias not finite",
        "POST",
        "/recommend",
        {"history": [EVENT], "new_item_bias": float("inf")},
        422,
        ["body", "new_item_bias"],
        None,
    ),
    (
        "new_item_bias not a number",
        "POST",
        "/recommend",
        {"history": [EVENT], "new_item_bias": "more"},
        422,
        ["body", "new_item_bias"],
        "float_parsing",
    ),
    ("event not an object", "POST", "/recommend", {"history": ["1"]}, 422, ["body", "history", 0], "model_attributes_type"),
    (
        "event without item_id",
        "POST",
        "/recommend",
        {"history": [{"timestamp": 5}]},
        422,
        ["body", "history", 0, "item_id"],
        "missing",
    ),
    (
        "item_id a number",
        "POST",
        "/recommend",
        {"history": [{"item_id": 1}]},
        422,
        ["body", "history", 0, "item_id"],
        "string_type",
    ),
    (
        "item_id empty",
        "POST",
        "/recommend",
        {"history": [{"item_id": ""}]},
        422,
        ["body", "history", 0, "item_id"],
        "string_too_short",
    ),
    (
        "item_id too long",
        "POST",
        "/recommend",
        {"history": [{"item_id": "x" * 300}]},
        422,
        ["body", "history", 0, "item_id"],
        "string_too_long",
    ),
    (
        "timestamp negative",
        "POST",
        "/recommend",
        {"history": [{"item_id": "1", "timestamp": -1}]},
        422,
        ["body", "history", 0, "timestamp"],
        "greater_than_equal",
    ),
    (
        "timestamp past year 9999",
        "POST",
        "/recommend",
        {"history": [{"item_id": "1", "timestamp": 10**15}]},
        422,
        ["body", "history", 0, "timestamp"],
        "less_than_equal",
    ),
    (
        "timestamp text",
        "POST",
        "/recommend",
        {"history": [{"item_id": "1", "timestamp": "yesterday"}]},
        422,
        ["body", "history", 0, "timestamp"],
        "int_parsing",
    ),
    (
        "unknown event field",
        "POST",
        "/recommend",
        {"history": [{"item_id": "1", "rating": 5}]},
        422,
        ["body", "history", 0, "rating"],
        "extra_forbidden",
    ),
    ("unknown field", "POST", "/recommend", {"history": [EVENT], "user": "u1"}, 422, ["body", "user"], "extra_forbidden"),
    (
        "history and history_text",
        "POST",
        "/recommend",
        {"history": [EVENT], "history_text": "Heat"},
        422,
        ["body", "history_text"],
        "exclusive_fields",
    ),
    ("neither history nor text", "POST", "/recommend", {"k": 3}, 422, ["body", "history"], "missing_history"),
    ("empty history_text", "POST", "/recommend", {"history_text": "   "}, 422, ["body", "history_text"], "empty_history"),
    (
        "history_text too long",
        "POST",
        "/recommend",
        {"history_text": "a" * 20_001},
        422,
        ["body", "history_text"],
        "history_too_long",
    ),
    ("history_text not a string", "POST", "/recommend", {"history_text": ["Heat"]}, 422, ["body", "history_text"], "string_type"),
    (
        "exclude_seen not a bool",
        "POST",
        "/recommend",
        {"history": [EVENT], "exclude_seen": "maybe"},
        422,
        ["body", "exclude_seen"],
        "bool_parsing",
    ),
    ("body a list", "POST", "/recommend", [EVENT], 422, ["body"], "model_attributes_type"),
    ("no body", "POST", "/recommend", None, 422, ["body"], "missing"),
    (
        "batch too large",
        "POST",
        "/recommend/batch",
        {"requests": [{"history": [EVENT]}] * (MAX_BATCH + 1)},
        422,
        ["body", "requests"],
        "batch_too_large",
    ),
    ("batch empty", "POST", "/recommend/batch", {"requests": []}, 422, ["body", "requests"], "too_short"),
    (
        "batch entry k above max",
        "POST",
        "/recommend/batch",
        {"requests": [{"history": [EVENT]}, {"history": [EVENT], "k": 101}]},
        422,
        ["body", "requests", 1, "k"],
        "k_too_large",
    ),
    (
        "batch entry unknown ids",
        "POST",
        "/recommend/batch",
        {"requests": [{"history": [EVENT]}, {"history": [{"item_id": "zz"}]}]},
        422,
        ["body", "requests", 1, "history"],
        "unknown_items",
    ),
    ("put without title", "PUT", "/items/new-x", {"year": 2000}, 422, ["body", "title"], "missing"),
    ("put empty title", "PUT", "/items/new-x", {"title": ""}, 422, ["body", "title"], "string_too_short"),
    ("put id mismatch", "PUT", "/items/new-x", {"title": "X", "item_id": "other"}, 422, ["body", "item_id"], "item_id_mismatch"),
    ("put year text", "PUT", "/items/new-x", {"title": "X", "year": "nineteen"}, 422, ["body", "year"], "int_parsing"),
    ("put negative price", "PUT", "/items/new-x", {"title": "X", "price": -1}, 422, ["body", "price"], "greater_than_equal"),
    (
        "put categories not a list",
        "PUT",
        "/items/new-x",
        {"title": "X", "categories": "Action"},
        422,
        ["body", "categories"],
        "list_type",
    ),
    ("put unknown field", "PUT", "/items/new-x", {"title": "X", "rating": 5}, 422, ["body", "rating"], "extra_forbidden"),
    (
        "lone surrogate in history_text",
        "POST",
        "/recommend",
        {"history_text": "abc \ud800 def"},
        422,
        ["body", "history_text"],
        "string_unicode",
    ),
    (
        "lone surrogate in item_id",
        "POST",
        "/recommend",
        {"history": [{"item_id": "\udfff"}]},
        422,
        ["body", "history", 0, "item_id"],
        "string_unicode",
    ),
    (
        "lone surrogate in categories",
        "PUT",
        "/items/new-x",
        {"title": "X", "categories": ["\ud800"]},
        422,
        ["body", "categories", 0],
        "string_unicode",
    ),
    (
        "lone surrogate in extra",
        "PUT",
        "/items/new-x",
        {"title": "X", "extra": {"\ud800": "v"}},
        422,
        ["body", "extra"],
        "string_unicode",
    ),
    (
        "lone surrogate in description",
        "PUT",
        "/items/new-x",
        {"title": "X", "description": "\ud800"},
        422,
        ["body", "description"],
        "string_unicode",
    ),
    ("put id too long", "PUT", "/items/" + "x" * 300, {"title": "X"}, 422, ["path", "item_id"], "string_too_long"),
    ("get unknown item", "GET", "/items/no-such-item", None, 404, ["path", "item_id"], "unknown_item"),
    ("delete unknown item", "DELETE", "/items/no-such-item", None, 404, ["path", "item_id"], "unknown_item"),
    ("unknown route", "GET", "/no/such/route", None, 404, ["path"], "not_found"),
    ("wrong method", "GET", "/recommend", None, 405, ["path"], "method_not_allowed"),
    ("reload without token", "POST", "/admin/reload", None, 401, ["header", "authorization"], "unauthorized"),
    (
        "reload missing bundle",
        "POST",
        "/admin/reload",
        {"bundle_path": "/nonexistent/bundle"},
        422,
        ["body", "bundle_path"],
        "bundle_error",
    ),
    (
        "reload path with NUL",
        "POST",
        "/admin/reload",
        {"bundle_path": "/tmp/\u0000bundle"},
        422,
        ["body", "bundle_path"],
        "bundle_error",
    ),
    ("reload unknown field", "POST", "/admin/reload", {"path": "/x"}, 422, ["body", "path"], "extra_forbidden"),
]


@pytest.fixture(scope="module")
def client(service):
    with service.client() as http:
        yield http


@pytest.mark.parametrize("name, method, path, body, status, loc, kind", CASES, ids=[c[0] for c in CASES])
def test_bad_request(client, name, method, path, body, status, loc, kind):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/admin") and name != "reload without token" else {}
    if method in ("PUT", "DELETE"):  # with the credential, so the input itself is what gets checked
        headers = dict(WRITE_AUTH)
    if body is not None:  # json.dumps keeps "\ud800" escaped (ASCII), as a client in another language could send it
        headers["content-type"] = "application/json"
        response = client.request(method, path, content=json.dumps(body).encode(), headers=headers)
    else:
        response = client.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    details = assert_error_shape(response)
    assert any(entry["loc"][: len(loc)] == loc for entry in details), details
    if kind is not None:
        assert kind in {entry["type"] for entry in details}, details


def test_messages_name_the_reason(client):
    unknown = client.post("/recommend", json={"history": [{"item_id": "x1"}]}).json()["detail"][0]["msg"]
    assert "x1" in unknown and "catalogue" in unknown


def test_wrong_admin_token(client):
    response = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 403
    assert_error_shape(response)
    assert client.post("/admin/reload", headers={"Authorization": ADMIN_TOKEN}).status_code == 403  # no "Bearer"


def test_malformed_json(client):
    for raw in (b"{bad", b'{"history": [', b"", b"\x00\x01", b"null", b'"text"', b"12"):
        response = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (raw, response.text)
        assert_error_shape(response)


def test_deeply_nested_json(client):
    response = client.post("/recommend", content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert_error_shape(response)


def test_not_utf8(client):
    for raw in (b'{"history_text": "caf\xe9"}', b"\xff\xfe{\x00}\x00"):
        response = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        [detail] = assert_error_shape(response)
        assert detail["loc"] == ["body"] and detail["type"] == "invalid_utf8" and "UTF-8" in detail["msg"]


def test_body_too_large_by_content_length(client):
    body = b'{"history_text": "' + b"a" * (1 << 20) + b'"}'
    response = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    [detail] = assert_error_shape(response)
    assert detail["type"] == "body_too_large" and str(len(body)) in detail["msg"]


def test_body_too_large_while_streaming(service):
    """Chunked upload without Content-Length: the limit is enforced on the bytes received."""

    def chunks():
        yield b'{"history_text": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    with httpx.Client(base_url=service.url, timeout=30) as http:
        response = http.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    [detail] = assert_error_shape(response)
    assert detail["type"] == "body_too_large"


def test_invalid_content_length_header(service):
    """A Content-Length that is not a number: 4xx from the HTTP layer, not a crash."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}")
        reply = sock.recv(65536).decode(errors="replace")
    status = int(reply.split(" ", 2)[1])
    assert 400 <= status < 500, reply


def random_value(rng, depth: int = 0):
    kinds = ["int", "str", "float", "bool", "null", "bigint", "list", "dict"] if depth < 3 else ["int", "str", "null"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, -1, 5, 100, 101, 2**31, -(2**63)])
    if kind == "bigint":
        return 10 ** rng.randint(19, 400)
    if kind == "float":
        return rng.choice([0.5, -1.5, 1e308, 1e-308, 3.0])
    if kind == "str":
        return rng.choice(["", "1", "2", "x" * 300, "\ud800", "\u0000", "日本", "Toy Story", "' OR 1=1 --", "{}", "%s%n"])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        "history",
        "history_text",
        "k",
        "exclude_seen",
        "item_id",
        "timestamp",
        "requests",
        "title",
        "extra",
        "bundle_path",
        "x",
    ]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_fuzzed_bodies_never_cause_a_500(client):
    """Random JSON (and random mutations of valid requests) at every body-taking route: always a 2xx or a 4xx."""
    import random

    rng = random.Random(1234)
    valid = {"history": [{"item_id": "1", "timestamp": 881250949}, {"item_id": "2"}], "k": 3, "exclude_seen": True}
    routes = [("POST", "/recommend"), ("POST", "/recommend/batch"), ("PUT", "/items/fuzz-item")]
    statuses = []
    for n in range(240):
        method, path = routes[n % len(routes)]
        if rng.random() < 0.5:
            body = dict(valid)
            body[rng.choice(["history", "history_text", "k", "exclude_seen", "extra"])] = random_value(rng, 1)
            if path == "/recommend/batch":
                body = {"requests": [body, random_value(rng, 2)]}
        else:
            body = random_value(rng)
        raw = json.dumps(body)  # ASCII: lone surrogates travel as \ud800 escapes
        headers = {"content-type": "application/json", **(WRITE_AUTH if method == "PUT" else {})}
        response = client.request(method, path, content=raw.encode(), headers=headers)
        assert response.status_code < 500, (method, path, raw[:300], response.text[:300])
        statuses.append(response.status_code)
        if response.status_code >= 400:
            assert_error_shape(response)
    client.delete("/items/fuzz-item", headers=WRITE_AUTH)
    assert 200 in statuses and 422 in statuses


def test_none_of_the_bad_inputs_caused_a_500(client, service):
    """Runs last in this module: the server counted no internal error, answered no 500 and logged no traceback."""
    metrics = parse_metrics(client.get("/metrics").text)
    assert metric_sum(metrics, "r2end_errors_total", reason="internal") == 0
    assert metric_sum(metrics, "http_requests_total", status="500") == 0
    assert metric_sum(metrics, "r2end_errors_total") >= len(CASES)
    assert client.get("/readyz").status_code == 200
    assert "Traceback" not in service.log()
