"""``create_app``: the FastAPI application (routes, error handlers, limits, metrics, lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service.admission import AdmissionMiddleware
from service.errors import install_error_handlers
from service.limits import BodyLimitMiddleware
from service.metrics import ServiceMetrics, instrument
from service.routes import admin, health, items, recommend
from service.runtime import Runtime
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

DESCRIPTION = """R2END online recommender: a user's history is verbalised, encoded by the distilled
student encoder (ONNX Runtime) and matched against the item index (FAISS). No LLM runs here.

Errors always look like `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`."""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The service application for ``settings`` (default: from the ``R2END_*`` environment)."""
    settings = settings or ServiceSettings()  # type: ignore[call-arg]
    metrics = ServiceMetrics()
    runtime = Runtime(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _single_threaded_faiss()
        await runtime.start()
        loop = asyncio.get_running_loop()
        hup = _add_signal_handler(loop, signal.SIGHUP, runtime.request_reload)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await runtime.stop()

    app = FastAPI(title="R2END recommender", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.runtime = settings, metrics, runtime
    install_error_handlers(app, metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    instrument(app, metrics)  # outside the body limit: it times every answer including 413s
    # added last: outermost, so an overloaded service refuses before any other work (not timed by the instrumentator)
    app.add_middleware(
        AdmissionMiddleware, limit=settings.inflight_limit, retry_after_seconds=settings.retry_after_seconds, metrics=metrics
    )
    for router in (recommend.router, items.router, health.router, admin.router):
        app.include_router(router)
    return app


def _add_signal_handler(loop: asyncio.AbstractEventLoop, signum: int, callback) -> bool:
    try:
        loop.add_signal_handler(signum, callback)
        return True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / not Unix
        log.warning("no handler for signal %s here: reload with POST /admin/reload", signum)
        return False


def _single_threaded_faiss() -> None:
    """Searches are per request and small; FAISS's OpenMP threads would only compete with ONNX Runtime's."""
    import faiss

    faiss.omp_set_num_threads(1)
