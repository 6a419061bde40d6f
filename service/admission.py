"""Admission control: shed load at the door, before a request's body is read or parsed.

Under overload the costly part of a refused request used to be everything before the refusal:
reading, parsing and validating its JSON on the event loop, only for the batcher's full queue
to answer 503. This plain ASGI middleware sits in front of FastAPI and counts the requests in
flight on the expensive routes (:data:`EXPENSIVE`); beyond the limit it answers 503 with
``Retry-After`` at once, from the method and path alone. The count is exact without a lock:
it changes only on the event loop, with no ``await`` between the check and the increment.

Liveness, readiness, metrics, reads and admin routes are never counted, so they answer under
overload.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from service.errors import send_error
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

EXPENSIVE = (("POST", "/recommend"), ("POST", "/recommend/batch"), ("PUT", "/items/"))
"""(method, path) of the routes that encode: an exact path, or a prefix when it ends with ``/``."""


def expensive(method: str, path: str) -> bool:
    """Whether a request to ``method path`` runs the encoder (and so counts against the limit)."""
    return any(method == m and (path.startswith(p) if p.endswith("/") else path.rstrip("/") == p) for m, p in EXPENSIVE)


class AdmissionMiddleware:
    """At most ``limit`` expensive requests in flight; the next one gets an immediate 503 + ``Retry-After``."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_seconds: int, metrics: ServiceMetrics):
        self.app, self.limit, self.retry_after, self.metrics = app, limit, retry_after_seconds, metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not expensive(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.errors.labels(reason="overloaded").inc()
            await send_error(
                send,
                503,
                [],
                f"overloaded: {self.in_flight} requests in flight, at most {self.limit} "
                f"(R2END_MAX_INFLIGHT); retry after {self.retry_after} s",
                "overloaded",
                {"Retry-After": str(self.retry_after)},
            )
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
