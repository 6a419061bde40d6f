"""Benchmark the online service against raw ONNX Runtime on one bundle (a benchmark, not a test).

In one run:

1. raw ONNX Runtime throughput of the user encoder at batch sizes 1/8/32, on pre-tokenised
   histories of real length (catalogue items verbalised with the bundle's own settings);
2. end-to-end ``POST /recommend`` throughput against a real server (``python -m service.main``
   in a subprocess, same threads) with as many concurrent clients as the batch size;
3. single-client latency percentiles (p50/p95/p99).

Goals reported (not asserted): end-to-end >= 0.8 x raw at matching batch/concurrency, and
single-client p99 <= 30 ms. The client is a minimal keep-alive HTTP/1.1 client on asyncio, so
that on a small machine the load generator takes as little CPU from the server as possible.

    python scripts/bench_service.py /path/to/bundle [--seconds 5] [--append docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index import bundle as B
from index.catalog import Catalog
from index.onnx_encoder import OnnxTextEncoder, pad
from index.verbalize import HistoryEvent
from loadtest import procs
from service.settings import available_cores

BATCH_SIZES = (1, 8, 32)
DAY = 86_400


def make_histories(catalog: Catalog, manifest: B.Manifest, n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` histories of catalogue items, each as long as the verbaliser shows (max_items..2x), dated a day apart."""
    rng = random.Random(seed)
    ids = catalog.ids
    max_items = manifest.verbaliser.max_items
    histories = []
    for _ in range(n):
        size = min(len(ids), rng.randint(max_items, 2 * max_items))
        start = 1_000_000_000 + rng.randint(0, 3650) * DAY
        histories.append([{"item_id": item, "timestamp": start + day * DAY} for day, item in enumerate(rng.sample(ids, size))])
    return histories


def texts_of(histories: list[list[dict]], catalog: Catalog, manifest: B.Manifest) -> list[str]:
    v = manifest.verbaliser
    return [v.history_text([HistoryEvent(e["item_id"], e["timestamp"]) for e in h], catalog.__getitem__)
            for h in histories]


def bench_raw(encoder: OnnxTextEncoder, texts: list[str], batch: int, seconds: float) -> dict:
    """Histories per second through ``session.run`` alone (tokenised and padded beforehand)."""
    tokens = encoder.tokenize(texts)
    batches = [pad(tokens[i : i + batch]) for i in range(0, len(tokens) - batch + 1, batch)]
    encoder.run_padded(*batches[0])  # warm-up
    done, n, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds or n < 3:
        encoder.run_padded(*batches[n % len(batches)])
        done += batch
        n += 1
    elapsed = time.perf_counter() - started
    return {"batch": batch, "per_second": done / elapsed, "mean_tokens": float(np.mean([len(t) for t in tokens]))}


# ---- a minimal keep-alive HTTP client ------------------------------------------------------------------


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def closed_loop(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients, each sending its next request as soon as the last one is answered."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        conn, n = Connection("127.0.0.1", port), offset
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                status, _ = await conn.post("/recommend", bodies[n % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
                n += concurrency
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "per_second": len(latencies) / elapsed, "requests": len(latencies), "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}


def markdown(raw: list[dict], e2e: list[dict], single: dict, manifest: B.Manifest, threads: int, max_wait_ms: float) -> str:
    lines = [
        (f"Bundle `{manifest.bundle_version}` ({manifest.variant}, {manifest.encoder}, {manifest.n_items} items), "
         f"ONNX threads {threads}, batcher wait {max_wait_ms:g} ms, mean history length {raw[0]['mean_tokens']:.0f} tokens."),
        "",
        "| batch = concurrency | raw ONNX (hist/s) | end-to-end /recommend (req/s) | e2e / raw | e2e p50 (ms) | e2e p99 (ms) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, e in zip(raw, e2e):
        ratio = e["per_second"] / r["per_second"]
        lines.append(f"| {r['batch']} | {r['per_second']:.1f} | {e['per_second']:.1f} | {ratio:.2f}{'' if ratio >= 0.8 else ' (goal 0.8)'} "
                     f"| {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e['errors']} |")
    goal = "meets" if single["p99_ms"] <= 30 else "misses"
    lines += ["", (f"Single client, {single['requests']} sequential requests: p50 {single['p50_ms']:.1f} ms, "
                   f"p95 {single['p95_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms ({goal} the p99 <= 30 ms goal).")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--threads", type=int, default=available_cores(), help="ONNX Runtime threads (raw and server)")
    parser.add_argument("--max-wait-ms", type=float, default=4.0, help="the server's R2END_MAX_WAIT_MS")
    parser.add_argument("--histories", type=int, default=256)
    parser.add_argument("--single-requests", type=int, default=300)
    parser.add_argument("--append", type=Path, help="append the table to this Markdown file (e.g. docs/BENCHMARKS.md)")
    parser.add_argument("--int8", action="store_true", help="the int8 user graph (raw and server: R2END_USE_INT8=true)")
    args = parser.parse_args()

    manifest = B.load_manifest(args.bundle)
    catalog = Catalog.load_jsonl(args.bundle / B.CATALOG)
    histories = make_histories(catalog, manifest, args.histories)
    texts = texts_of(histories, catalog, manifest)
    encoder = OnnxTextEncoder(args.bundle / (B.USER_ONNX_INT8 if args.int8 else B.USER_ONNX), args.bundle / B.TOKENIZER, manifest.max_seq_length, threads=args.threads)
    raw = [bench_raw(encoder, texts, batch, args.seconds) for batch in BATCH_SIZES]
    del encoder
    for r in raw:
        print(f"raw batch {r['batch']}: {r['per_second']:.1f} histories/s", file=sys.stderr)

    bodies = [json.dumps({"history": h, "k": 10}).encode() for h in histories]
    with tempfile.TemporaryDirectory() as tmp:
        server, url = procs.service(args.bundle, Path(tmp), args.int8, args.threads, max_batch_size=32, max_wait_ms=args.max_wait_ms)
        with server:
            port = urlsplit(url).port
            asyncio.run(closed_loop(port, bodies, 4, 1.0))  # warm-up
            e2e = [asyncio.run(closed_loop(port, bodies, batch, args.seconds)) for batch in BATCH_SIZES]
            for e in e2e:
                print(f"e2e concurrency {e['concurrency']}: {e['per_second']:.1f} req/s", file=sys.stderr)
            single = asyncio.run(sequential(port, bodies, args.single_requests))
    table = markdown(raw, e2e, single, manifest, args.threads, args.max_wait_ms)
    table = f"User graph: **{'int8' if args.int8 else 'fp32'}**. " + table
    print(table)
    if args.append:
        from training.provenance import machine_line, stamp

        info = stamp()
        section = (f"\n## Service benchmark, {info['created']}\n\n`{info['command']}`  \ngit {info['git_commit']}; {machine_line()}\n\n"
                   f"{table}\n")
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"appended to {args.append}", file=sys.stderr)


async def sequential(port: int, bodies: list[bytes], n: int) -> dict:
    conn = Connection("127.0.0.1", port)
    latencies = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            status, _ = await conn.post("/recommend", bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - t0)
            assert status == 200, status
    finally:
        conn.close()
    ms = np.array(latencies) * 1000
    return {"requests": n, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}


if __name__ == "__main__":
    main()
