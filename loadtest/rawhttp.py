"""A minimal keep-alive HTTP/1.1 client on asyncio and closed-loop drivers, for the benchmark scripts.

Why not httpx: on a 2-core machine the load generator competes with the server for CPU, and
a bare asyncio stream client costs several times less per request than httpx, so the server
gets more of the machine and the numbers say more about it. It speaks just enough HTTP/1.1
for JSON APIs on loopback: ``Content-Length`` bodies (no chunked encoding) and keep-alive,
reconnecting when the server closes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

TRANSPORT_ERROR = 0  # Sample.status when no HTTP answer came back (refused, reset, timed out)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of a closed loop: when it started (``time.perf_counter``), how long it took, its status."""

    started: float
    seconds: float
    status: int
    retry_after: str | None = None


class Connection:
    """One keep-alive connection; reopened on the next request after the server closed it or an error."""

    def __init__(self, host: str, port: int, timeout_s: float = 60.0):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._answered = False  # a status line of the current request came back

    async def request(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Response:
        """Send one request and read its answer; on a kept-alive connection the server had already closed
        (its keep-alive timeout ran out while the connection sat idle), retry once on a new one, as HTTP
        clients do: no byte of an answer came back, so the server never saw the request."""
        reused = self.writer is not None
        try:
            return await self._attempt(method, path, body, headers or {})
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
            if not reused or self._answered:
                raise
            log.debug("stale keep-alive connection (%s): reconnecting", exc)
        return await self._attempt(method, path, body, headers or {})

    async def _attempt(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self._answered = False
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), self.timeout_s)
        except BaseException:
            self.close()  # a half-read answer must not be read as the next one's
            raise

    async def _request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("server closed the connection")
        self._answered = True
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            raise ValueError("chunked responses are not supported by this benchmark client")
        payload = await self.reader.readexactly(int(response_headers.get("content-length", "0")))
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, response_headers, payload)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Run:
    """Every request of one run and its wall time (closed loop: ``concurrency`` clients; open loop: ``rate`` per second)."""

    concurrency: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    rate: float | None = None
    skipped: int = 0  # open loop: arrivals not sent because ``max_in_flight`` requests were already waiting

    def count(self, status: int | None = None) -> int:
        return len(self.samples) if status is None else sum(s.status == status for s in self.samples)

    def per_second(self, status: int | None = None) -> float:
        return self.count(status) / self.seconds if self.seconds > 0 else 0.0

    def latencies_ms(self, status: int | None = None) -> np.ndarray:
        return np.array([s.seconds * 1000 for s in self.samples if status is None or s.status == status])

    def percentile_ms(self, q: float, status: int | None = None) -> float | None:
        """``q``-th percentile latency (of answers with ``status``; all if None); None when there were none."""
        ms = self.latencies_ms(status)
        return float(np.percentile(ms, q)) if ms.size else None

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self.samples:
            counts[s.status] = counts.get(s.status, 0) + 1
        return dict(sorted(counts.items()))


async def closed_loop(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    timeout_s: float = 60.0,
) -> Run:
    """``concurrency`` clients, each on its own connection, sending its next request as soon as the last is answered.

    Client ``i`` sends bodies ``i, i + concurrency, ...`` (cycling), so the clients together walk
    through every body. A request that gets no HTTP answer is recorded with status
    :data:`TRANSPORT_ERROR` and its connection reopened.
    """
    run = Run(concurrency, 0.0)
    stop_at = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        conn, n = Connection(host, port, timeout_s), offset
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    response = await conn.request(method, path, bodies[n % len(bodies)], headers)
                    status, retry_after = response.status, response.headers.get("retry-after")
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    status, retry_after = TRANSPORT_ERROR, None
                run.samples.append(Sample(t0, time.perf_counter() - t0, status, retry_after))
                n += concurrency
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


async def open_loop(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    rate: float,
    seconds: float,
    headers: Mapping[str, str] | None = None,
    max_in_flight: int = 4096,
    timeout_s: float = 60.0,
    seed: int = 0,
    on_sample: Callable[[Sample], None] | None = None,
) -> Run:
    """Requests arriving at ``rate`` per second (Poisson, seeded) for ``seconds``, whether or not earlier ones were answered.

    Unlike a closed loop, an overloaded server does not slow the arrivals down: this is how load
    beyond capacity looks. Connections are reused when idle and opened when none is; an arrival
    finding ``max_in_flight`` requests unanswered is not sent and counted in :attr:`Run.skipped`.
    ``on_sample`` sees each finished request (e.g. to keep live counts).
    """
    run = Run(0, 0.0, rate=rate)
    rng = random.Random(seed)
    idle: list[Connection] = []
    pending: set[asyncio.Task] = set()

    async def one(n: int) -> None:
        conn = idle.pop() if idle else Connection(host, port, timeout_s)
        t0 = time.perf_counter()
        try:
            response = await conn.request("POST", path, bodies[n % len(bodies)], headers)
            status, retry_after = response.status, response.headers.get("retry-after")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            status, retry_after = TRANSPORT_ERROR, None
        sample = Sample(t0, time.perf_counter() - t0, status, retry_after)
        run.samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        if conn.writer is not None:
            idle.append(conn)

    started = time.perf_counter()
    due, n = started, 0
    while True:
        due += rng.expovariate(rate)
        if due - started >= seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_in_flight:
            run.skipped += 1
            continue
        task = asyncio.create_task(one(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    if pending:
        await asyncio.gather(*pending)
    for conn in idle:
        conn.close()
    run.seconds = time.perf_counter() - started
    return run


async def sequential(
    host: str, port: int, path: str, bodies: Sequence[bytes], n: int, headers: Mapping[str, str] | None = None
) -> Run:
    """``n`` requests one after the other on one connection (a single client's latency)."""
    run = Run(1, 0.0)
    conn = Connection(host, port)
    started = time.perf_counter()
    try:
        for i in range(n):
            t0 = time.perf_counter()
            response = await conn.request("POST", path, bodies[i % len(bodies)], headers)
            run.samples.append(Sample(t0, time.perf_counter() - t0, response.status, response.headers.get("retry-after")))
    finally:
        conn.close()
    run.seconds = time.perf_counter() - started
    return run
