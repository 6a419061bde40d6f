"""Request body limits, before any parsing: size (413, from Content-Length and while streaming) and UTF-8 (400).

A plain ASGI middleware: it reads the body once (at most ``max_bytes``), answers the error
itself, or hands the buffered body on to the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.errors import send_error
from service.metrics import ServiceMetrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``; 400 for bodies that are not UTF-8."""

    def __init__(self, app: Callable, max_bytes: int, metrics: ServiceMetrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._reject(
                    send, 400, ["header", "content-length"], f"invalid Content-Length {length!r}", "bad_content_length"
                )
                return
            if int(length) > self.max_bytes:
                await self._too_large(send, f"Content-Length {int(length)}")
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(send, f"at least {size} bytes streamed")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await self._reject(
                    send,
                    400,
                    ["body"],
                    f"request body is not valid UTF-8 (byte {body[exc.start]:#04x} at offset {exc.start})",
                    "invalid_utf8",
                )
                return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, send: Send, what: str) -> None:
        await self._reject(
            send,
            413,
            ["body"],
            f"request body too large: {what}; at most {self.max_bytes} bytes (R2END_MAX_BODY_BYTES)",
            "body_too_large",
        )

    async def _reject(self, send: Send, status: int, loc: list[str], msg: str, reason: str) -> None:
        self.metrics.errors.labels(reason=reason).inc()
        await send_error(send, status, loc, msg, reason, {"Connection": "close"})  # the rest of the body is not read


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
