"""The service's state: which model is served, loading and hot reload, live item changes, and the
one entry point of the recommendation routes (:meth:`Runtime.recommend`).

A reload loads the new bundle *beside* the old one (the old keeps serving), replays the
item log into it, warms it up and swaps the reference in one assignment. Requests hold the
model they started with, so in-flight requests finish on the old one. Item changes and the
final step of a reload share a lock, so no change is lost between replay and swap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from index.bundle import BundleError
from index.catalog import ItemMeta
from service.batcher import MicroBatcher
from service.errors import ServiceError, Unavailable
from service.item_log import ItemChangeRecord, ItemLog, fold
from service.metrics import ServiceMetrics
from service.model import ServingModel
from service.query import build_query
from service.recommender import Recommender
from service.schemas import BatchRecommendRequest, BundleInfo, RecommendRequest, RecommendResponse
from service.settings import ServiceSettings

log = logging.getLogger(__name__)
REPLAY_BATCH = 32


@dataclass(frozen=True)
class ReloadResult:
    model: ServingModel
    previous_bundle_version: str | None
    load_seconds: float
    replayed: int


def bundle_info(model: ServingModel) -> BundleInfo:
    m = model.manifest
    return BundleInfo(
        bundle_version=m.bundle_version,
        variant=m.variant,
        bundle_path=str(model.path),
        dataset=m.dataset,
        encoder=m.encoder,
        n_items=model.n_items,
        int8=model.int8,
        new_item_bias=m.hybrid.bias if m.hybrid is not None else None,
    )


def apply_changes(model: ServingModel, changes: list[ItemChangeRecord]) -> int:
    """Replay logged item changes into a model not yet serving; returns how many were applied."""
    final = fold(changes)
    if final and not model.supports_live_items:
        log.warning("%d logged item changes not applied: the bundle's %s index cannot change", len(final), model.index.kind)
        return 0
    applied = 0
    for change in final:
        if change.op == "delete":
            applied += model.remove(change.item_id)
    puts = [c.item for c in final if c.op == "put" and c.item is not None]
    for start in range(0, len(puts), REPLAY_BATCH):
        chunk = puts[start : start + REPLAY_BATCH]
        for item, vector in zip(chunk, model.embed_items(chunk), strict=True):
            model.upsert(item, vector)
            applied += 1
    return applied


class Runtime:
    """Holds the served model and the batcher; owns loading, reloading and item changes."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self.bundle_path = Path(settings.bundle_path)
        self.model: ServingModel | None = None
        self.state = "loading"  # loading -> ready | failed
        self.error: str | None = None
        assert settings.item_log_path is not None
        self.item_log = ItemLog(settings.item_log_path)
        self.batcher = MicroBatcher(
            metrics, settings.max_batch_size, settings.max_wait_ms, settings.queue_size, settings.encode_workers
        )
        self.recommender = Recommender(self.batcher, metrics, settings.retry_after_seconds)
        self.on_fatal: Callable[[], None] = _terminate_self
        self._reload_lock: asyncio.Lock | None = None
        self._items_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher and load the bundle in the background (``/healthz`` answers meanwhile)."""
        self._reload_lock, self._items_lock = asyncio.Lock(), asyncio.Lock()
        await self.batcher.start()
        self._spawn(self._initial_load(), "r2end-initial-load")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.stop()
        self.item_log.close()

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.model is not None

    def require_model(self) -> ServingModel:
        """The model to use for this request (captured once), or 503 while none is loaded."""
        model = self.model
        if model is None:
            raise Unavailable(
                f"no model is being served yet (state: {self.state})", "not_ready", self.settings.retry_after_seconds
            )
        return model

    # ---- recommendations -------------------------------------------------------------------------
    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """``POST /recommend``: one user's top-k with the model served now."""
        model = self.require_model()
        [result] = await self.recommender.recommend(model, [build_query(request, model, self.settings, ("body",))])
        return result

    async def recommend_batch(self, batch: BatchRecommendRequest) -> list[RecommendResponse]:
        """``POST /recommend/batch``: every user of the batch with the same model, encoded together."""
        limit = self.settings.max_batch_users
        if len(batch.requests) > limit:
            raise ServiceError(
                422,
                f"{len(batch.requests)} requests; at most {limit} (R2END_MAX_BATCH_USERS)",
                ("body", "requests"),
                "batch_too_large",
            )
        model = self.require_model()
        queries = [
            build_query(request, model, self.settings, ("body", "requests", n)) for n, request in enumerate(batch.requests)
        ]
        return await self.recommender.recommend(model, queries)

    async def _initial_load(self) -> None:
        try:
            await asyncio.to_thread(self.item_log.repair)
            await self.reload()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the first load ends the process with its reason
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("cannot serve %s: %s", self.bundle_path, self.error)
            self.on_fatal()

    # ---- reload ----------------------------------------------------------------------------------
    async def reload(self, bundle_path: Path | str | None = None) -> ReloadResult:
        """Load ``bundle_path`` (default: the current one) beside the served model and swap to it.

        Raises :class:`BundleError` (or another exception) and leaves the served model alone
        if the new bundle cannot be loaded.
        """
        assert self._reload_lock is not None and self._items_lock is not None
        async with self._reload_lock:
            path = Path(bundle_path) if bundle_path is not None else self.bundle_path
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(ServingModel.load, path, self.settings)
                changes, offset = await asyncio.to_thread(self.item_log.read, 0)
                replayed = await asyncio.to_thread(apply_changes, model, changes)
                if self.settings.warmup:
                    seconds = await asyncio.to_thread(model.warmup)
                    log.info("warmed up %s in %.2fs", path, seconds)
                async with self._items_lock:
                    tail, _ = await asyncio.to_thread(self.item_log.read, offset)
                    replayed += await asyncio.to_thread(apply_changes, model, tail)
                    previous, self.model = self.model, model
                    self.bundle_path, self.state, self.error = path, "ready", None
            except Exception:
                self.metrics.reloads.labels(outcome="failed").inc()
                raise
            self.metrics.reloads.labels(outcome="ok").inc()
            self.metrics.set_bundle(model.manifest.bundle_version, model.manifest.variant, model.n_items)
            seconds = time.perf_counter() - started
            log.info(
                "serving %s (%s) from %s; %d item changes replayed; %.2fs",
                model.manifest.bundle_version,
                model.manifest.variant,
                path,
                replayed,
                seconds,
            )
            return ReloadResult(model, previous.manifest.bundle_version if previous else None, seconds, replayed)

    def request_reload(self) -> None:
        """Reload in the background (SIGHUP); the outcome goes to the log and ``r2end_reloads_total``."""
        self._spawn(self._reload_logged(), "r2end-sighup-reload")

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except BundleError as exc:
            log.error("reload refused, still serving the old bundle: %s", exc)
        except Exception:
            log.exception("reload failed, still serving the old bundle")

    # ---- live items ------------------------------------------------------------------------------
    async def put_item(self, item: ItemMeta) -> tuple[ServingModel, bool]:
        """Embed, log durably, then index ``item``; returns (model, created)."""
        assert self._items_lock is not None
        async with self._items_lock:
            model = self._live_model()
            started = time.perf_counter()
            vector = (await asyncio.to_thread(model.embed_items, [item]))[0]
            self.metrics.encode_seconds.labels(encoder="item").observe(time.perf_counter() - started)
            await self._log(ItemChangeRecord("put", item.item_id, item))
            created = await asyncio.to_thread(model.upsert, item, vector)
            self.metrics.item_changes.labels(op="put").inc()
            self.metrics.catalog_items.set(model.n_items)
            return model, created

    async def delete_item(self, item_id: str) -> tuple[ServingModel, bool]:
        """Log durably, then remove ``item_id``; returns (model, existed)."""
        assert self._items_lock is not None
        async with self._items_lock:
            model = self._live_model()
            if model.get(item_id) is None:
                return model, False
            await self._log(ItemChangeRecord("delete", item_id))
            await asyncio.to_thread(model.remove, item_id)
            self.metrics.item_changes.labels(op="delete").inc()
            self.metrics.catalog_items.set(model.n_items)
            return model, True

    def _live_model(self) -> ServingModel:
        model = self.require_model()
        if not model.supports_live_items:
            raise ServiceError(
                409,
                f"this bundle's {model.index.kind!r} index cannot change at run time (needs 'flat')",
                ("path", "item_id"),
                "live_items_unsupported",
            )
        return model

    async def _log(self, change: ItemChangeRecord) -> None:
        try:
            await asyncio.to_thread(self.item_log.append, change)
        except OSError as exc:
            raise ServiceError(
                503,
                f"item log {self.item_log.path} is not writable ({exc.strerror or exc}); nothing changed",
                (),
                "item_log_unwritable",
                {"Retry-After": str(self.settings.retry_after_seconds)},
            ) from exc

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _terminate_self() -> None:
    """Stop the server when the first bundle cannot be loaded (``run`` then exits non-zero)."""
    os.kill(os.getpid(), signal.SIGTERM)
