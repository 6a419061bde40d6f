"""Prometheus metrics: HTTP latency from prometheus-fastapi-instrumentator plus the model's own stages.

Exported names (the Grafana dashboard and tests use these):

* ``http_request_duration_seconds`` (histogram, labels handler/method) and
  ``http_request_duration_highr_seconds`` (histogram, fine buckets, no labels),
  ``http_requests_total`` (counter, labels handler/method/status): the instrumentator's.
* ``r2end_tokenize_seconds``, ``r2end_encode_seconds`` (label ``encoder`` = user|item),
  ``r2end_search_seconds``, ``r2end_queue_wait_seconds``: stage latencies (histograms).
* ``r2end_batch_size``, ``r2end_queue_depth``: per ONNX batch (histograms);
  ``r2end_queue_pending``: encodes waiting right now (gauge).
* ``r2end_rejected_requests_total``: 503s because the batcher's queue was full (counter).
* ``r2end_in_flight_requests``: expensive requests (``/recommend``, ``/recommend/batch``, ``PUT /items``)
  admitted and not yet answered (gauge); beyond ``R2END_MAX_INFLIGHT`` they are refused at the door.
* ``r2end_user_cache_lookups_total{result}``: user-vector cache ``hit`` / ``miss`` (counter; only with
  ``R2END_USER_CACHE_SIZE`` > 0).
* ``r2end_errors_total{reason}``: every error answer by reason (counter), including ``overloaded``
  (refused at the door; these never reach the app, so ``http_requests_total`` does not count them).
* ``r2end_reloads_total{outcome}``, ``r2end_bundle_info{bundle_version,variant}``,
  ``r2end_catalog_items``, ``r2end_live_item_changes_total{op}``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator

METRICS_PATH = "/metrics"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    """All service-specific collectors, registered in one (per-app) registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tokenize_seconds = Histogram(
            "r2end_tokenize_seconds", "Tokenisation time per batch", buckets=STAGE_BUCKETS, registry=r
        )
        self.encode_seconds = Histogram(
            "r2end_encode_seconds", "ONNX Runtime time per run", ["encoder"], buckets=STAGE_BUCKETS, registry=r
        )
        self.search_seconds = Histogram("r2end_search_seconds", "FAISS search time per query", buckets=STAGE_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram(
            "r2end_queue_wait_seconds", "Time an encode waited in the batcher's queue", buckets=STAGE_BUCKETS, registry=r
        )
        self.batch_size = Histogram("r2end_batch_size", "Histories per ONNX batch", buckets=SIZE_BUCKETS, registry=r)
        self.queue_depth = Histogram(
            "r2end_queue_depth", "Encodes waiting when a batch was taken (including the batch)", buckets=SIZE_BUCKETS, registry=r
        )
        self.queue_pending = Gauge("r2end_queue_pending", "Encodes waiting in the batcher right now", registry=r)
        self.rejected = Counter("r2end_rejected_requests", "Requests refused with 503 because the queue was full", registry=r)
        self.user_cache = Counter(
            "r2end_user_cache_lookups", "User-vector cache lookups by result (hit/miss)", ["result"], registry=r
        )
        self.in_flight = Gauge("r2end_in_flight_requests", "Expensive requests admitted and not yet answered", registry=r)
        self.errors = Counter("r2end_errors", "Error answers by reason", ["reason"], registry=r)
        self.reloads = Counter("r2end_reloads", "Bundle loads by outcome", ["outcome"], registry=r)
        self.bundle_info = Gauge(
            "r2end_bundle_info", "The bundle being served (value 1)", ["bundle_version", "variant"], registry=r
        )
        self.catalog_items = Gauge("r2end_catalog_items", "Items in the served index", registry=r)
        self.item_changes = Counter("r2end_live_item_changes", "Live item changes applied", ["op"], registry=r)

    def set_bundle(self, bundle_version: str, variant: str, n_items: int) -> None:
        """Point ``r2end_bundle_info`` at the bundle now served."""
        self.bundle_info.clear()
        self.bundle_info.labels(bundle_version=bundle_version, variant=variant).set(1)
        self.catalog_items.set(n_items)


def instrument(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Add the HTTP latency middleware and the ``/metrics`` route (served from the app's registry)."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=True,
        excluded_handlers=[METRICS_PATH],
        registry=metrics.registry,
    )
    instrumentator.instrument(app, latency_lowr_buckets=LATENCY_BUCKETS)
    instrumentator.expose(app, endpoint=METRICS_PATH, include_in_schema=True, tags=["ops"])
    _document_text_exposition(app)


def _document_text_exposition(app: FastAPI) -> None:
    """The OpenAPI entry of ``/metrics`` says what it serves: Prometheus text, not JSON.

    The instrumentator registers the route with FastAPI's default (JSON) response class; its
    handler returns its own Response, so only the published schema changes here.
    """
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path == METRICS_PATH:
            route.response_class = PlainTextResponse
            route.responses = {
                200: {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            }
    app.openapi_schema = None  # rebuilt on the next request for it
