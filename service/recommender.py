"""Answer recommendation queries: batched encode, then search, then the response bodies."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool

from service.batcher import BatcherStopped, QueueFull
from service.errors import Unavailable
from service.model import Hit, ServingModel
from service.query import Query
from service.runtime import Runtime
from service.schemas import ItemOut, RecommendResponse


async def recommend(runtime: Runtime, model: ServingModel, queries: list[Query]) -> list[RecommendResponse]:
    """Top-k for each query with ``model`` (the one captured when the request was admitted)."""
    try:
        vectors = await runtime.batcher.encode(model, [q.text for q in queries])
    except QueueFull as exc:
        runtime.metrics.rejected.inc()
        raise Unavailable(f"overloaded: {exc}; retry later", "queue_full", runtime.settings.retry_after_seconds) from exc
    except BatcherStopped as exc:
        raise Unavailable(str(exc), "shutting_down", runtime.settings.retry_after_seconds) from exc
    vectors = model.add_history(vectors, [q.history_rows for q in queries])
    started = time.perf_counter()
    hits = await run_in_threadpool(model.search, vectors, [q.k for q in queries], [q.exclude for q in queries])
    runtime.metrics.search_seconds.observe((time.perf_counter() - started) / len(queries))
    return [response(model, query, found) for query, found in zip(queries, hits)]


def response(model: ServingModel, query: Query, hits: list[Hit]) -> RecommendResponse:
    return RecommendResponse(
        items=[ItemOut.from_meta(hit.item, hit.score) for hit in hits],
        unknown_item_ids=list(query.unknown_item_ids),
        bundle_version=model.manifest.bundle_version,
        variant=model.manifest.variant,
    )
