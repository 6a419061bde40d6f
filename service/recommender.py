"""Answer recommendation queries for one model: batched encode, history term, search, response bodies.

The engine between :meth:`service.runtime.Runtime.recommend` (which picks the model and builds
the queries) and the :class:`~service.batcher.MicroBatcher` (which shares ONNX runs between
requests); it owns the mapping of a full or stopped queue to a 503.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool

from service.batcher import BatcherStopped, MicroBatcher, QueueFull
from service.errors import Unavailable
from service.metrics import ServiceMetrics
from service.model import Hit, ServingModel
from service.query import Query
from service.schemas import ItemOut, RecommendResponse


class Recommender:
    """Top-k answers for queries against the model a request was admitted with."""

    def __init__(self, batcher: MicroBatcher, metrics: ServiceMetrics, retry_after_seconds: int):
        self.batcher = batcher
        self.metrics = metrics
        self.retry_after_seconds = retry_after_seconds

    async def recommend(self, model: ServingModel, queries: Sequence[Query]) -> list[RecommendResponse]:
        """Top-k for each query with ``model``; 503 (:class:`Unavailable`) when the encode queue is full."""
        try:
            vectors = await self.batcher.encode(model.user_encoder, [q.text for q in queries])
        except QueueFull as exc:
            self.metrics.rejected.inc()
            raise Unavailable(f"overloaded: {exc}; retry later", "queue_full", self.retry_after_seconds) from exc
        except BatcherStopped as exc:
            raise Unavailable(str(exc), "shutting_down", self.retry_after_seconds) from exc
        vectors = model.add_history(vectors, [q.history_rows for q in queries])
        started = time.perf_counter()
        hits = await run_in_threadpool(model.search, vectors, [q.k for q in queries], [q.exclude for q in queries])
        self.metrics.search_seconds.observe((time.perf_counter() - started) / len(queries))
        return [response(model, query, found) for query, found in zip(queries, hits)]


def response(model: ServingModel, query: Query, hits: list[Hit]) -> RecommendResponse:
    """The response body for one query."""
    return RecommendResponse(
        items=[ItemOut.from_meta(hit.item, hit.score) for hit in hits],
        unknown_item_ids=list(query.unknown_item_ids),
        history_used=query.history_used,
        bundle_version=model.manifest.bundle_version,
        variant=model.manifest.variant,
    )
