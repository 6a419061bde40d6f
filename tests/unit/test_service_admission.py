"""Admission control (issue #16): beyond the in-flight limit an expensive request is refused at once
(503 + Retry-After, the usual error shape) before its body is read; health, readiness and metrics still answer.

The middleware alone, on an ASGI app that holds requests in flight until an event (nothing is timed).
The burst against a real server is tests/e2e/test_service_overload.py.
"""

from __future__ import annotations

import asyncio
import json

from service.admission import AdmissionMiddleware, expensive
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings


def test_expensive_routes():
    assert expensive("POST", "/recommend") and expensive("POST", "/recommend/batch") and expensive("PUT", "/items/x")
    assert expensive("POST", "/recommend/")
    for method, path in (
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/items/x"),
        ("DELETE", "/items/x"),
        ("POST", "/admin/reload"),
        ("GET", "/recommend"),
        ("POST", "/recommendations"),
        ("GET", "/docs"),
    ):
        assert not expensive(method, path), (method, path)


def test_default_limit_follows_the_batcher(tmp_path):
    settings = ServiceSettings(bundle_path=tmp_path / "b")
    assert settings.max_inflight is None
    assert (
        settings.inflight_limit == settings.queue_size + settings.encode_workers * settings.max_batch_size
    )  # each worker holds a batch
    assert ServiceSettings(bundle_path=tmp_path / "b", queue_size=32, max_batch_size=8, encode_workers=2).inflight_limit == 48
    assert ServiceSettings(bundle_path=tmp_path / "b", max_inflight=5).inflight_limit == 5


def test_middleware_refuses_beyond_the_limit_without_reading_the_body():
    async def scenario():
        release = asyncio.Event()
        entered: list[str] = []

        async def app(scope, receive, send):  # holds every request it gets until released
            entered.append(scope["path"])
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        metrics = ServiceMetrics()
        sample = metrics.registry.get_sample_value
        middleware = AdmissionMiddleware(app, limit=2, retry_after_seconds=3, metrics=metrics)

        def call(method: str, path: str):
            sent: list[dict] = []
            reads = 0

            async def receive():
                nonlocal reads
                reads += 1
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": method, "path": path, "headers": []}
            return asyncio.ensure_future(middleware(scope, receive, send)), sent, lambda: reads

        held = [call("POST", "/recommend"), call("PUT", "/items/a")]
        await asyncio.sleep(0)
        assert middleware.in_flight == 2 and sample("r2end_in_flight_requests") == 2
        refused, sent, reads = call("POST", "/recommend/batch")
        await refused
        start, body = sent
        assert start["status"] == 503 and dict(start["headers"])[b"retry-after"] == b"3"
        [detail] = json.loads(body["body"])["detail"]
        assert detail["type"] == "overloaded" and "R2END_MAX_INFLIGHT" in detail["msg"] and detail["loc"] == []
        assert reads() == 0 and entered == ["/recommend", "/items/a"]  # refused from method and path alone
        cheap = [call("GET", "/healthz"), call("GET", "/items/a"), call("POST", "/admin/reload")]
        await asyncio.sleep(0)
        assert entered[2:] == ["/healthz", "/items/a", "/admin/reload"] and middleware.in_flight == 2  # never counted
        release.set()
        await asyncio.gather(*(task for task, _s, _r in held + cheap))
        assert middleware.in_flight == 0 and sample("r2end_in_flight_requests") == 0
        assert sample("r2end_errors_total", {"reason": "overloaded"}) == 1
        after, sent, _ = call("POST", "/recommend")
        await after
        assert sent[0]["status"] == 200

    asyncio.run(scenario())
