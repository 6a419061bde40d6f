"""Benchmark: the teacher pipeline's throughput against raw llama.cpp on the same work.

    PYTHONPATH=. python scripts/bench_teacher.py --model qwen2.5-coder-1.5b --n 32 --parallel 4 \
        --out docs/results/teacher-bench.md

Two phases, each on a fresh llama.cpp server with the same slots and threads:

(b) pipeline: ``run_tasks`` through :class:`LocalLlamaCppBackend` on the first ``--n``
    real tasks of a dataset (default: ml-100k oracle) into a temporary cache,
    exactly as ``r2end teach run`` does (quality checks, retries, fsync'ed appends).
    Every request it sends is recorded.
(a) raw: the same requests replayed straight to llama.cpp's ``/v1/chat/completions``
    (same prompts, so the same prompt lengths and shared prefixes; the generation
    length fixed to what the pipeline got with ``ignore_eos``), the same number in
    flight, nothing else: no quality checks, no cache, no Python per record.

Prompt and generation speeds come from llama.cpp's own timings (``prompt_n`` /
``prompt_ms`` and ``predicted_n`` / ``predicted_ms`` of every response), summed
over requests: the per-slot engine rate. The wall rates divide the tokens by the
wall time of the phase: the aggregate over all slots. The ratio pipeline / raw of
the wall generation rate is the headline (goal: >= 0.7).

The pipeline phase runs first so the replay knows each request's length. It is a
benchmark, not a test; it uses the whole machine: run it when nothing else is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from training.data.registry import load_dataset
from training.provenance import cpu_model
from training.teacher.backends.base import GenerationRequest, GenerationResult
from training.teacher.backends.llamacpp import LlamaCppServer, LlamaCppSettings, LocalLlamaCppBackend
from training.teacher.cache import TeacherCache
from training.teacher.runner import SEED, run_tasks
from training.teacher.tasks import build_tasks


@dataclass
class Phase:
    """Token counts and llama.cpp timings of one phase."""

    name: str
    requests: int = 0
    prompt_n: int = 0  # prompt tokens llama.cpp actually processed (not from its prompt cache)
    cached_n: int = 0
    predicted_n: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def add(self, raw: dict) -> None:
        timings = raw.get("timings") or {}
        self.requests += 1
        self.prompt_n += int(timings.get("prompt_n") or 0)
        self.cached_n += int(timings.get("cache_n") or 0)
        self.predicted_n += int(timings.get("predicted_n") or 0)
        self.prompt_ms += float(timings.get("prompt_ms") or 0.0)
        self.predicted_ms += float(timings.get("predicted_ms") or 0.0)

    @property
    def engine_prompt_tok_s(self) -> float:
        return self.prompt_n / (self.prompt_ms / 1000) if self.prompt_ms else 0.0

    @property
    def engine_gen_tok_s(self) -> float:
        return self.predicted_n / (self.predicted_ms / 1000) if self.predicted_ms else 0.0

    @property
    def wall_prompt_tok_s(self) -> float:
        return self.prompt_n / self.wall_s if self.wall_s else 0.0

    @property
    def wall_gen_tok_s(self) -> float:
        return self.predicted_n / self.wall_s if self.wall_s else 0.0


class RecordingBackend:
    """Passes requests to a backend and keeps (request, result) in submission order."""

    def __init__(self, inner: LocalLlamaCppBackend):
        self.inner = inner
        self.model_id = inner.model_id
        self.concurrency = inner.concurrency
        self.calls: list[list] = []

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        slot = [request, None]
        self.calls.append(slot)
        slot[1] = await self.inner.generate(request)
        return slot[1]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def pipeline_phase(model: str, settings: LlamaCppSettings, tasks, dataset: str) -> tuple[Phase, list, dict]:
    backend = RecordingBackend(LocalLlamaCppBackend(model, settings))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cache = TeacherCache(Path(tmp) / "bench.jsonl")
            summary = await run_tasks(tasks, backend, cache, dataset, show_progress=False)
    finally:
        await backend.aclose()
    phase = Phase("pipeline", wall_s=summary.wall_s)
    for _, result in backend.calls:
        if result is not None:
            phase.add(result.raw)
    info = {
        "model_id": backend.model_id,
        "ok": summary.ok,
        "flagged": summary.flagged,
        "retries": summary.retries,
        "errors": summary.errors,
    }
    return phase, [(req, res) for req, res in backend.calls if res is not None], info


async def raw_phase(model: str, settings: LlamaCppSettings, calls: list) -> Phase:
    server = LlamaCppServer(model, settings)
    phase = Phase("raw llama.cpp")
    slots = asyncio.Semaphore(settings.n_parallel)
    limits = httpx.Limits(max_connections=settings.n_parallel, max_keepalive_connections=settings.n_parallel)
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=httpx.Timeout(1800.0, connect=10.0), limits=limits
        ) as client:

            async def one(request: GenerationRequest, result: GenerationResult) -> dict:
                body = {
                    "model": server.model_id,
                    "messages": request.messages,
                    "temperature": 0.0,
                    "seed": SEED,
                    "max_tokens": max(1, result.completion_tokens),
                    "ignore_eos": True,
                    "cache_prompt": True,
                }
                async with slots:
                    response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                return response.json()

            started = time.perf_counter()
            answers = await asyncio.gather(*(one(req, res) for req, res in calls))
            phase.wall_s = time.perf_counter() - started
    finally:
        server.close()
    for answer in answers:
        phase.add(answer)
    return phase


def report(raw: Phase, pipe: Phase, info: dict, args, command: str) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    rows = [
        ("requests", f"{raw.requests}", f"{pipe.requests}", ""),
        ("prompt tokens processed (not cached)", f"{raw.prompt_n}", f"{pipe.prompt_n}", ""),
        ("prompt tokens from llama.cpp's cache", f"{raw.cached_n}", f"{pipe.cached_n}", ""),
        ("generated tokens", f"{raw.predicted_n}", f"{pipe.predicted_n}", ""),
        (
            "engine prompt tok/s (llama.cpp timings, per slot)",
            f"{raw.engine_prompt_tok_s:.1f}",
            f"{pipe.engine_prompt_tok_s:.1f}",
            ratio(pipe.engine_prompt_tok_s, raw.engine_prompt_tok_s),
        ),
        (
            "engine generation tok/s (llama.cpp timings, per slot)",
            f"{raw.engine_gen_tok_s:.1f}",
            f"{pipe.engine_gen_tok_s:.1f}",
            ratio(pipe.engine_gen_tok_s, raw.engine_gen_tok_s),
        ),
        ("wall s", f"{raw.wall_s:.1f}", f"{pipe.wall_s:.1f}", ratio(raw.wall_s, pipe.wall_s)),
        (
            "wall prompt tok/s (all slots)",
            f"{raw.wall_prompt_tok_s:.1f}",
            f"{pipe.wall_prompt_tok_s:.1f}",
            ratio(pipe.wall_prompt_tok_s, raw.wall_prompt_tok_s),
        ),
        (
            "**wall generation tok/s (all slots)**",
            f"{raw.wall_gen_tok_s:.1f}",
            f"{pipe.wall_gen_tok_s:.1f}",
            f"**{ratio(pipe.wall_gen_tok_s, raw.wall_gen_tok_s)}**",
        ),
    ]
    headline = pipe.wall_gen_tok_s / raw.wall_gen_tok_s if raw.wall_gen_tok_s else 0.0
    lines = [
        f"### Teacher throughput: pipeline vs raw llama.cpp ({info['model_id']}, {args.kind}, n={args.n})",
        "",
        f"Command: `{command}`  ",
        (
            f"Machine: {os.cpu_count()} cores ({cpu_model()}), {args.parallel} llama.cpp slots, {args.threads} threads; "
            f"{time.strftime('%Y-%m-%d %H:%M')}.  "
        ),
        f"Pipeline outcome: {info['ok']} ok, {info['flagged']} flagged, {info['retries']} retries, {info['errors']} errors.",
        "",
        "| | raw llama.cpp | pipeline | pipeline / raw |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Goal pipeline / raw >= 0.70 on wall generation tok/s: **{'met' if headline >= 0.7 else 'NOT met'}** ({headline:.2f}).",
        (
            "Raw = the pipeline's own requests replayed to llama.cpp (same prompts, generation length fixed with "
            "`ignore_eos`, same number in flight) on a fresh server; both phases use llama.cpp's own `timings`."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="registered model name or .gguf path")
    parser.add_argument("--n", type=int, default=16, help="real teacher tasks to run")
    parser.add_argument(
        "--parallel", type=int, default=LlamaCppSettings.n_parallel, help="llama.cpp slots (= requests in flight)"
    )
    parser.add_argument("--threads", type=int, default=LlamaCppSettings.n_threads, help="llama.cpp threads")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--kind", default="oracle", choices=["oracle", "description", "unguided"])
    parser.add_argument("--out", type=Path, help="also write the Markdown snippet here")
    args = parser.parse_args(argv)
    command = "PYTHONPATH=. python scripts/bench_teacher.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )

    ds = load_dataset(args.dataset)
    tasks = build_tasks(ds, args.kind)[: args.n]
    settings = LlamaCppSettings(n_parallel=args.parallel, n_threads=args.threads)
    print(f"pipeline: {len(tasks)} {args.kind} tasks of {ds.name} with {args.model} ...", flush=True)
    pipe, calls, info = asyncio.run(pipeline_phase(args.model, settings, tasks, ds.name))
    print(f"raw: replaying {len(calls)} requests ...", flush=True)
    raw = asyncio.run(raw_phase(args.model, settings, calls))
    text = report(raw, pipe, info, args, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
