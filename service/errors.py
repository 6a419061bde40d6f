"""One error shape for every non-2xx answer: ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.

``type`` is a short machine-readable reason; it is also the ``reason`` label of the
``r2end_errors_total`` counter. Unexpected exceptions become a 500 in the same shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Loc = Sequence[str | int]


class ServiceError(Exception):
    """An error answer: HTTP status, where (``loc``) and why (``msg``), and a short ``reason``."""

    def __init__(
        self, status: int, msg: str, loc: Loc = (), reason: str = "invalid_request", headers: dict[str, str] | None = None
    ):
        super().__init__(msg)
        self.status, self.msg, self.loc, self.reason, self.headers = status, msg, tuple(loc), reason, headers

    def body(self) -> dict[str, Any]:
        return error_body([{"loc": list(self.loc), "msg": self.msg, "type": self.reason}])


class Unavailable(ServiceError):
    """503 with ``Retry-After``: the queue is full or no model is loaded yet."""

    def __init__(self, msg: str, reason: str, retry_after: int = 1):
        super().__init__(503, msg, (), reason, {"Retry-After": str(retry_after)})


def error_body(details: list[dict[str, Any]]) -> dict[str, Any]:
    return {"detail": details}


async def send_error(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    loc: list[str],
    msg: str,
    reason: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer from a plain ASGI middleware (before FastAPI): the same shape as every other error."""
    payload = json.dumps(error_body([{"loc": loc, "msg": msg, "type": reason}])).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the echoed input (which can be a whole 1 MiB body)."""
    details = []
    for error in exc.errors():
        msg = str(error.get("msg", "invalid value"))
        details.append({"loc": list(error.get("loc", ())), "msg": msg, "type": str(error.get("type", "invalid"))})
    return details


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Register the handlers that give every error the same JSON shape and count it."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        metrics.errors.labels(reason=exc.reason).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels(reason="invalid_request").inc()
        return JSONResponse(error_body(_validation_details(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(reason=reason).inc()
        loc = ["path"] if exc.status_code in (404, 405) else []
        body = error_body([{"loc": loc, "msg": str(exc.detail), "type": reason}])
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        metrics.errors.labels(reason="internal").inc()
        body = error_body([{"loc": [], "msg": f"internal error ({type(exc).__name__}); see the server log", "type": "internal"}])
        return JSONResponse(body, status_code=500)
