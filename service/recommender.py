"""Answer recommendation queries for one model: batched encode, history term, search, response bodies.

The engine between :meth:`service.runtime.Runtime.recommend` (which picks the model and builds
the queries) and the :class:`~service.batcher.MicroBatcher` (which shares ONNX runs between
requests); it owns the mapping of a full or stopped queue to a 503.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
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
        vectors = await self._user_vectors(model, [q.text for q in queries])
        hits = await run_in_threadpool(self._rank, model, vectors, queries)
        return [response(model, query, found) for query, found in zip(queries, hits, strict=True)]

    def _rank(self, model: ServingModel, vectors: np.ndarray, queries: Sequence[Query]) -> list[list[Hit]]:
        """History term (an R2END+CF tower's or R2END-Hybrid's SASRec run) and search, off the event loop."""
        vectors = model.add_history(vectors, [q.history_rows for q in queries], [q.new_item_bias for q in queries])
        started = time.perf_counter()
        hits = model.search(vectors, [q.k for q in queries], [q.exclude for q in queries])
        self.metrics.search_seconds.observe((time.perf_counter() - started) / len(queries))
        return hits

    async def _user_vectors(self, model: ServingModel, texts: list[str]) -> np.ndarray:
        """Text vectors for ``texts``: from the model's cache where it has them, the rest encoded in batches."""
        cache = model.user_cache
        found = [cache.get(text) for text in texts] if cache is not None else [None] * len(texts)
        missing = [n for n, vector in enumerate(found) if vector is None]
        if cache is not None:
            self.metrics.user_cache.labels(result="hit").inc(len(texts) - len(missing))
            self.metrics.user_cache.labels(result="miss").inc(len(missing))
        if missing:
            encoded = await self._encode(model, [texts[n] for n in missing])
            for n, vector in zip(missing, encoded, strict=True):
                found[n] = vector
                if cache is not None:
                    cache.put(texts[n], vector)
        return np.stack(found)  # type: ignore[arg-type]

    async def _encode(self, model: ServingModel, texts: list[str]) -> np.ndarray:
        try:
            return await self.batcher.encode(model.user_encoder, texts)
        except QueueFull as exc:
            self.metrics.rejected.inc()
            raise Unavailable(f"overloaded: {exc}; retry later", "queue_full", self.retry_after_seconds) from exc
        except BatcherStopped as exc:
            raise Unavailable(str(exc), "shutting_down", self.retry_after_seconds) from exc


def response(model: ServingModel, query: Query, hits: list[Hit]) -> RecommendResponse:
    """The response body for one query (its items without metadata unless the request wants it)."""
    if query.include_metadata:
        items = [ItemOut.from_meta(hit.item, hit.score) for hit in hits]
    else:  # only these two fields are set, and the routes leave unset fields out
        items = [ItemOut(item_id=hit.item.item_id, score=hit.score) for hit in hits]
    return RecommendResponse(
        items=items,
        unknown_item_ids=list(query.unknown_item_ids),
        history_used=query.history_used,
        bundle_version=model.manifest.bundle_version,
        variant=model.manifest.variant,
    )
