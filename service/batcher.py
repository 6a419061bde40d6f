"""Dynamic micro-batching: concurrent user encodes share ONNX runs, on several encode workers.

Requests enter a bounded queue (``queue_size``; full -> :class:`QueueFull`, answered 503 +
Retry-After at once). Whenever one of ``workers`` encode threads is free, it takes what is
waiting, up to ``max_batch_size`` jobs (with ``max_wait_ms`` > 0 it first waits that long
after the oldest job for company), and runs them: tokenise all texts, group them by encoder
(a job keeps the encoder of the model it was admitted with, so a reload never mixes models in
one request) and by token length (see :func:`length_groups`), and run one ONNX batch per group.
Batches thus grow only while every worker is busy. Several one-thread runs in parallel beat one
run over all cores for the short inputs of a recommender on a few cores (measured in
docs/BENCHMARKS.md); a run that starts while no other is in flight is marked ``alone`` so the
encoder may give it every core (:class:`~index.onnx_encoder.OnnxTextEncoder`'s second session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from index.onnx_encoder import TextEncoder
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """No room in the queue for the request's encodes."""


class BatcherStopped(Exception):
    """The service is shutting down."""


@dataclass(eq=False)
class _Job:
    encoder: TextEncoder
    text: str
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


def length_groups(lengths: Sequence[int], max_waste: float = 0.25, slack_tokens: int = 256) -> list[list[int]]:
    """Split positions into groups of similar length so padding stays small.

    Sorted by length, a group grows while its padding (``size * longest - sum``) stays within
    ``max(slack_tokens, max_waste * size * longest)``; short inputs are allowed some padding
    because one more ONNX run costs more than a few padded tokens.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for position in sorted(range(len(lengths)), key=lambda p: lengths[p]):
        length = lengths[position]
        if current:
            padded = (len(current) + 1) * length
            if padded - (real + length) > max(slack_tokens, max_waste * padded):
                groups.append(current)
                current, real = [], 0
        current.append(position)
        real += length
    if current:
        groups.append(current)
    return groups


class MicroBatcher:
    """Collects encode jobs from many requests into few ONNX runs."""

    def __init__(
        self, metrics: ServiceMetrics, max_batch_size: int = 32, max_wait_ms: float = 4.0, queue_size: int = 256, workers: int = 1
    ):
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.workers = workers
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None
        self._running = 0
        self._worker: asyncio.Task | None = None
        self._dispatches: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._free = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="r2end-encode")
        self._worker = asyncio.create_task(self._run(), name="r2end-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for task in list(self._dispatches):
            task.cancel()
        await asyncio.gather(*self._dispatches, return_exceptions=True)
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(BatcherStopped("the service is shutting down"))
        self.metrics.queue_pending.set(0)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def submit(self, encoder: TextEncoder, texts: Sequence[str]) -> list[asyncio.Future]:
        """Admit all of ``texts`` or none (:class:`QueueFull`)."""
        if self._wakeup is None:
            raise BatcherStopped("the batcher is not running")
        if len(self._pending) + len(texts) > self.queue_size:
            raise QueueFull(f"{len(self._pending)} encodes waiting; the queue holds {self.queue_size}")
        loop = asyncio.get_running_loop()
        jobs = [_Job(encoder, text, loop.create_future()) for text in texts]
        self._pending.extend(jobs)
        self.metrics.queue_pending.set(len(self._pending))
        self._wakeup.set()
        return [job.future for job in jobs]

    async def encode(self, encoder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` (one row each), computed with ``encoder``."""
        futures = self.submit(encoder, texts)
        try:
            return np.stack(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise

    async def _run(self) -> None:
        assert self._wakeup is not None and self._free is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._free.acquire()  # a worker is free: what waited meanwhile joins this batch
            if self.max_wait > 0:
                deadline = self._pending[0].enqueued + self.max_wait
                while len(self._pending) < self.max_batch_size and (remaining := deadline - time.perf_counter()) > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            depth = len(self._pending)
            jobs = [self._pending.popleft() for _ in range(min(self.max_batch_size, depth))]
            self.metrics.queue_pending.set(len(self._pending))
            jobs = [job for job in jobs if not job.future.done()]  # cancelled by a gone client
            if not jobs:
                self._free.release()
                continue
            now = time.perf_counter()
            for job in jobs:
                self.metrics.queue_wait_seconds.observe(now - job.enqueued)
            self.metrics.queue_depth.observe(depth)
            self.metrics.batch_size.observe(len(jobs))
            alone = self._running == 0 and not self._pending
            self._running += 1
            task = asyncio.create_task(self._dispatch(jobs, alone), name="r2end-encode-batch")
            self._dispatches.add(task)
            task.add_done_callback(self._dispatches.discard)

    async def _dispatch(self, jobs: list[_Job], alone: bool) -> None:
        """Run one batch in an encode thread and answer its jobs; frees the worker when done."""
        assert self._free is not None
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, jobs, alone)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not expected (_encode isolates failures); every request of the batch answers 500
            log.exception("batch encode failed")
            outcomes = [exc] * len(jobs)
        finally:
            self._running -= 1
            self._free.release()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    def _encode(self, jobs: list[_Job], alone: bool = False) -> list[np.ndarray | Exception]:
        """In the encode thread: tokenise, group by encoder and length, run ONNX per group.

        A failure is confined to the job that caused it: a failing group is retried one job
        at a time, so one poisonous input never fails the other requests it was batched with.
        """
        results: list[np.ndarray | Exception | None] = [None] * len(jobs)
        by_encoder: dict[int, list[int]] = {}
        for position, job in enumerate(jobs):
            by_encoder.setdefault(id(job.encoder), []).append(position)
        for positions in by_encoder.values():
            try:
                self._encode_group(jobs, positions, results, alone)
            except Exception as exc:
                if len(positions) == 1:
                    log.exception("encode failed")
                    results[positions[0]] = exc
                    continue
                log.warning("a batch of %d failed; encoding its jobs one by one", len(positions))
                for position in positions:
                    try:
                        self._encode_group(jobs, [position], results, alone)
                    except Exception as exc:
                        log.exception("encode failed")
                        results[position] = exc
        return results  # type: ignore[return-value]

    def _encode_group(self, jobs: list[_Job], positions: list[int], results: list, alone: bool = False) -> None:
        encoder = jobs[positions[0]].encoder
        started = time.perf_counter()
        tokens = encoder.tokenize([jobs[p].text for p in positions])
        self.metrics.tokenize_seconds.observe(time.perf_counter() - started)
        for group in length_groups([len(t) for t in tokens]):
            started = time.perf_counter()
            vectors = encoder.run([tokens[g] for g in group], alone)
            self.metrics.encode_seconds.labels(encoder="user").observe(time.perf_counter() - started)
            for g, vector in zip(group, vectors, strict=True):
                results[positions[g]] = vector
