"""Scale-out of the teacher with Ray Data: many HTTP clients, one cache writer.

The tasks still come from :mod:`training.teacher.tasks` and the answers still go
through :func:`training.teacher.runner._run_one` (same quality checks, same one
targeted retry, same record layout and cache keys as ``r2end teach run``); only
*who sends the requests* changes:

* ``ray.data.from_items`` holds the pending tasks, one block per batch;
* ``map_batches`` runs :class:`TeacherCall`, a callable class whose actors each
  keep one ``httpx`` client (in :class:`OpenAIHTTPBackend`) and send a batch's
  requests concurrently to an OpenAI-compatible endpoint (vLLM, llama.cpp server,
  a hosted API); ``actors`` x ``requests_per_actor`` requests are in flight;
* the driver streams the finished records back (``iter_rows``) and appends each
  to the same :class:`TeacherCache`, so the cache keeps exactly one writer and
  stays resumable: a crash loses at most the batches in flight.

Errors: a transient failure (after the client's own retries) is counted and not
stored, so the next run retries it; a refused key or an unknown model stops the
run with :class:`TeacherAuthError` / :class:`TeacherModelNotFound`.

For a real cluster the tasks of 100M users should not be built in the driver's
memory; the same ``TeacherCall`` works on ``ray.data.read_parquet`` of
pre-built tasks with ``key, kind, subject, prompt`` columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.paths import REPO_ROOT
from training.teacher.backends.base import TeacherAuthError, TeacherError, TeacherModelNotFound
from training.teacher.backends.openai_http import OpenAIHTTPBackend
from training.teacher.cache import TeacherCache
from training.teacher.prompts import TEMPLATES
from training.teacher.runner import RunSummary, _record, _run_one, pending_tasks
from training.teacher.tasks import TeacherTask

FATAL_ERRORS: dict[str, type[TeacherError]] = {
    "TeacherAuthError": TeacherAuthError,
    "TeacherModelNotFound": TeacherModelNotFound,
}


@dataclass(frozen=True)
class RaySettings:
    """Where to send requests and how many at once."""

    endpoint: str
    model: str
    api_key: str | None = None
    actors: int = 2
    """Ray actors, each with its own HTTP client (``map_batches(concurrency=...)``)."""
    requests_per_actor: int = 4
    """Requests one actor keeps in flight; also the batch (and block) size."""
    num_cpus_per_actor: float = 0.25
    """The actors only wait on HTTP: a fraction of a CPU each is enough."""
    timeout_s: float = 600.0
    max_retries: int = 5
    backoff_s: float = 1.0
    extra_body: dict[str, Any] = field(default_factory=dict)


class TeacherCall:
    """Ray Data callable class: one HTTP client and event loop per actor, reused for every batch."""

    def __init__(self, settings: RaySettings, dataset: str, run_id: str):
        self.settings = settings
        self.dataset = dataset
        self.run_id = run_id
        self.loop = asyncio.new_event_loop()
        self.backend = OpenAIHTTPBackend(
            settings.endpoint,
            settings.model,
            api_key=settings.api_key,
            concurrency=settings.requests_per_actor,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            backoff_s=settings.backoff_s,
            extra_body=dict(settings.extra_body),
        )

    async def _one(self, key: str, kind: str, subject: str, prompt: str) -> tuple[str, str, str]:
        task = TeacherTask(kind, subject, prompt, TEMPLATES[kind])
        try:
            outcome = await _run_one(task, self.backend, RunSummary())
        except TeacherError as exc:
            return "", type(exc).__name__, str(exc)
        record = _record(task, key, self.backend.model_id, self.dataset, outcome, self.run_id)
        return json.dumps(record, ensure_ascii=False), "", ""

    async def _batch(self, batch: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
        rows = zip(batch["key"], batch["kind"], batch["subject"], batch["prompt"], strict=True)
        return await asyncio.gather(*(self._one(str(k), str(kind), str(s), str(p)) for k, kind, s, p in rows))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Ray calls this from a worker thread: run the batch on this actor's own loop.
        results = self.loop.run_until_complete(self._batch(batch))
        records, error_types, errors = zip(*results, strict=True) if results else ((), (), ())
        return {
            "key": np.asarray(batch["key"], dtype=object),
            "record": np.asarray(records, dtype=object),
            "error_type": np.asarray(error_types, dtype=object),
            "error": np.asarray(errors, dtype=object),
        }

    def __del__(self) -> None:
        # best effort: at interpreter exit the loop or the client may already be gone
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.backend.aclose())
            self.loop.close()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a cluster) or start a local Ray instance, unless already connected.

    A local instance gets the repository on its workers' ``PYTHONPATH`` so the actors can
    import ``training``; on a cluster the code must be installed on the nodes (or shipped
    with a ``working_dir`` runtime env by the caller's own ``ray.init``).
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        return
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # a local instance talks to itself on loopback only
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    )


def run_tasks_ray(
    tasks: list[TeacherTask],
    settings: RaySettings,
    cache: TeacherCache,
    dataset: str,
    limit: int | None = None,
    show_progress: bool = False,
) -> RunSummary:
    """Generate every task not yet in ``cache`` (at most ``limit``) on Ray; the driver appends each record.

    Ray must be initialised (:func:`ensure_ray`) before the call.
    """
    import ray

    summary = RunSummary()
    pending, summary.skipped_cached = pending_tasks(tasks, settings.model, cache, limit)
    if not pending:
        return summary
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    ray.data.DataContext.get_current().enable_progress_bars = show_progress
    rows = [{"key": k, "kind": t.kind, "subject": t.subject, "prompt": t.prompt} for t, k in pending]
    batch = max(1, settings.requests_per_actor)
    # One block per batch: each finished batch streams back to the driver (and onto disk) at once.
    blocks = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch)))
    results = blocks.map_batches(
        TeacherCall,
        fn_constructor_args=(settings, dataset, run_id),
        batch_size=batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, settings.actors)),
        num_cpus=settings.num_cpus_per_actor,
    )
    for row in results.iter_rows():
        summary.submitted += 1
        if row["error_type"]:
            name = str(row["error_type"])
            if name in FATAL_ERRORS:
                raise FATAL_ERRORS[name](str(row["error"]))
            summary.errors += 1  # nothing stored: the next run retries this request
            summary.problems[f"error: {name}"] = summary.problems.get(f"error: {name}", 0) + 1
            continue
        record = json.loads(row["record"])
        if record["key"] in cache:  # a batch re-run by Ray after a worker failure: already stored
            continue
        cache.append(record)
        summary.ok += record["status"] == "ok"
        summary.flagged += record["status"] != "ok"
        summary.retries += record["attempts"] - 1
        if record.get("first_attempt_problem"):
            problem = record["first_attempt_problem"]
            summary.problems[problem] = summary.problems.get(problem, 0) + 1
        summary.prompt_tokens += record["prompt_tokens"]
        summary.completion_tokens += record["completion_tokens"]
    summary.wall_s = time.perf_counter() - started
    return summary
