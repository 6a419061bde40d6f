"""Run teacher tasks through a backend into the cache: resumable to the request.

Each finished request is appended (fsync'ed) before it is counted as done, so a
crash or kill -9 loses at most the requests that were in flight. Bad answers get
one targeted retry (more room and a plain-sentences instruction if truncated, a firmer instruction if the opening
is missing, a second turn asking to continue if the answer stopped after its
opening sentence), and an answer truncated twice one last try with a frequency penalty (it was looping); if
still bad the record is stored with ``status: "flagged"`` and a reason, counted in ``teach status``, and never
used for training.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from training.teacher.backends.base import (
    GenerationRequest,
    GenerationResult,
    TeacherAuthError,
    TeacherBackend,
    TeacherError,
    TeacherModelNotFound,
)
from training.teacher.cache import TeacherCache, cache_key
from training.teacher.quality import normalise, problem_with
from training.teacher.tasks import TeacherTask

SEED = 22


def generation_params(task: TeacherTask) -> dict[str, Any]:
    """The generation parameters that are part of the cache key."""
    return {"temperature": 0.0, "max_tokens": task.template.max_tokens, "seed": SEED}


def task_key(task: TeacherTask, model_id: str) -> str:
    """Cache key of a task for a model."""
    return cache_key(task.template.version, model_id, generation_params(task), task.prompt)


def cache_path(data_dir: Path, dataset: str, kind: str) -> Path:
    """``<data_dir>/<dataset>/<kind>.jsonl``."""
    return data_dir / dataset / f"{kind}.jsonl"


@dataclass
class RunSummary:
    """What one run did."""

    submitted: int = 0
    ok: int = 0
    flagged: int = 0
    errors: int = 0
    skipped_cached: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    problems: dict[str, int] = field(default_factory=dict)


BRIEF_INSTRUCTION = "Answer in plain sentences, not a list, in at most {max_words} words."
"""Added to the prompt after a truncated answer: more room alone repeats the same loop."""

CONTINUE_INSTRUCTION = (
    "Continue this paragraph with two or three more sentences (at most {max_words} words in all) "
    "grounded in the information above. Do not repeat the first sentence."
)
"""Second turn after a "too short" answer. The small teacher often writes only the required
opening sentence and repeats it when asked again firmly; asking it to go on from its own
sentence does change the outcome. Not part of the cache key: the first request is."""


LOOP_PENALTY = 0.3
"""``frequency_penalty`` of the last try after two truncated answers. Seen on ML-100K's unguided rationales (16 of
943 flagged): lists that repeat one genre until the token limit ("- Comedy - Comedy - ..."), with or without the
plain-sentences instruction; at temperature 0 only a change to the sampling breaks such a loop. Small, so that
the ordinary repeats of prose ("the", "films") are barely touched."""


def _retry_request(task: TeacherTask, problem: str, first_text: str = "", penalty: float = 0.0) -> GenerationRequest:
    if problem == "truncated":  # seen: numbered lists that repeat one line until the token limit
        brief = f"{task.prompt}\n" + BRIEF_INSTRUCTION.format(max_words=task.template.max_words)
        return GenerationRequest(
            [{"role": "user", "content": brief}],
            max_tokens=int(task.template.max_tokens * 1.5),
            seed=SEED,
            frequency_penalty=penalty,
        )
    if problem == "too short" and first_text:
        messages = [
            {"role": "user", "content": task.prompt},
            {"role": "assistant", "content": first_text},
            {"role": "user", "content": CONTINUE_INSTRUCTION.format(max_words=task.template.max_words)},
        ]
        return GenerationRequest(messages, max_tokens=task.template.max_tokens, seed=SEED)
    firmer = f'{task.prompt}\nBegin your answer with exactly: "{task.template.opening}"'
    return GenerationRequest([{"role": "user", "content": firmer}], max_tokens=task.template.max_tokens, seed=SEED)


_SENTENCE_END = re.compile(r"[.!?][\"')]?(?=\s|$)")


def _complete_sentences(text: str) -> str:
    """``text`` up to its last sentence end ('' if it has none)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else ""


@dataclass
class Outcome:
    """Final text of a task, why it is unusable (None if usable) and every attempt made."""

    text: str
    problem: str | None
    results: list[GenerationResult]
    first_problem: str | None = None
    opening_rewritten: bool = False
    loop_penalty: float = 0.0
    """The frequency penalty of the last try, when one was needed (0: none)."""


async def _run_one(task: TeacherTask, backend: TeacherBackend, summary: RunSummary) -> Outcome:
    request = GenerationRequest([{"role": "user", "content": task.prompt}], max_tokens=task.template.max_tokens, seed=SEED)
    results = [await backend.generate(request)]
    text, rewritten = normalise(results[-1].text, task.template)
    problem = first_problem = problem_with(text, results[-1].finish_reason, task.template)
    penalty = 0.0
    if problem is not None:
        summary.retries += 1
        summary.problems[problem] = summary.problems.get(problem, 0) + 1
        results.append(await backend.generate(_retry_request(task, problem, text)))
        finish_reason = results[-1].finish_reason
        if problem == "too short":  # the second turn continues the first answer
            continuation, _ = normalise(results[-1].text)
            if finish_reason == "length":  # keep the continuation's complete sentences
                continuation, finish_reason = _complete_sentences(continuation), "stop"
            text = f"{text} {continuation}".strip()
        else:
            text, rewritten = normalise(results[-1].text, task.template)
        problem = problem_with(text, finish_reason, task.template)
        if problem == "truncated" == first_problem:  # looping: the same brief request, with a frequency penalty
            summary.retries += 1
            penalty = LOOP_PENALTY
            results.append(await backend.generate(_retry_request(task, problem, penalty=penalty)))
            text, rewritten = normalise(results[-1].text, task.template)
            problem = problem_with(text, results[-1].finish_reason, task.template)
    return Outcome(text, problem, results, first_problem, rewritten, penalty)


def _record(task: TeacherTask, key: str, model_id: str, dataset: str, outcome: Outcome, run_id: str) -> dict[str, Any]:
    text, problem, results = outcome.text, outcome.problem, outcome.results
    return {
        "key": key,
        "kind": task.kind,
        "dataset": dataset,
        "subject": task.subject,
        "template": task.template.version,
        "model": model_id,
        "params": generation_params(task),
        "status": "ok" if problem is None else "flagged",
        "problem": problem,
        "text": text,
        "attempts": len(results),
        "first_attempt_problem": outcome.first_problem,
        "opening_rewritten": outcome.opening_rewritten,
        **({"loop_penalty": outcome.loop_penalty} if outcome.loop_penalty else {}),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "cached_prompt_tokens": sum(r.cached_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "prompt_ms": round(sum(r.prompt_ms or 0.0 for r in results), 1),
        "generation_ms": round(sum(r.predicted_ms or 0.0 for r in results), 1),
        "elapsed_s": round(sum(r.elapsed_s for r in results), 3),
        "run": run_id,
        "finished_at": round(time.time(), 3),
    }


def pending_tasks(
    tasks: list[TeacherTask], model_id: str, cache: TeacherCache, limit: int | None = None, redo_flagged: bool = False
) -> tuple[list[tuple[TeacherTask, str]], int]:
    """``([(task, key), ...] not yet in the cache, at most limit), number already cached)``.

    Two tasks with the same prompt are one request: it is generated (and stored) once.
    With ``redo_flagged``, a flagged record counts as missing (the new record replaces it;
    the runner's retries may have improved since it was written).
    """

    def done(key: str) -> bool:
        record = cache.get(key)
        return record is not None and not (redo_flagged and record.get("status") != "ok")

    todo = [(t, task_key(t, model_id)) for t in tasks]
    unique: dict[str, TeacherTask] = {}
    for t, k in todo:
        if not done(k):
            unique.setdefault(k, t)
    pending = [(t, k) for k, t in unique.items()]
    skipped = sum(done(k) for _, k in todo)
    return (pending[:limit] if limit is not None else pending), skipped


async def run_tasks(
    tasks: list[TeacherTask],
    backend: TeacherBackend,
    cache: TeacherCache,
    dataset: str,
    limit: int | None = None,
    show_progress: bool = True,
    redo_flagged: bool = False,
) -> RunSummary:
    """Generate every task not yet in ``cache`` (at most ``limit``), appending as each finishes."""
    summary = RunSummary()
    pending, summary.skipped_cached = pending_tasks(tasks, backend.model_id, cache, limit, redo_flagged)
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    queue: asyncio.Queue[tuple[TeacherTask, str]] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    kind = tasks[0].kind if tasks else "?"
    bar = progress.add_task(f"teacher {kind}", total=len(pending), rate="")

    async def worker() -> None:
        while True:
            try:
                task, key = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            summary.submitted += 1
            try:
                outcome = await _run_one(task, backend, summary)
            except (TeacherAuthError, TeacherModelNotFound):
                raise  # retrying other requests cannot help: stop the run
            except TeacherError as exc:
                summary.errors += 1  # nothing stored: the next run retries this request
                summary.problems[f"error: {type(exc).__name__}"] = summary.problems.get(f"error: {type(exc).__name__}", 0) + 1
                progress.update(bar, advance=1)
                continue
            cache.append(_record(task, key, backend.model_id, dataset, outcome, run_id))
            summary.ok += outcome.problem is None
            summary.flagged += outcome.problem is not None
            summary.prompt_tokens += sum(r.prompt_tokens for r in outcome.results)
            summary.completion_tokens += sum(r.completion_tokens for r in outcome.results)
            elapsed = time.perf_counter() - started
            progress.update(bar, advance=1, rate=f"{summary.completion_tokens / max(elapsed, 1e-9):.1f} gen tok/s")

    with progress:
        await asyncio.gather(*(worker() for _ in range(max(1, backend.concurrency))))
    summary.wall_s = time.perf_counter() - started
    return summary
