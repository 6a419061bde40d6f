"""Progress of the teacher data: done/total, token rates and an ETA, from the cache alone."""

from __future__ import annotations

from dataclasses import dataclass

from training.teacher.cache import TeacherCache
from training.teacher.runner import task_key
from training.teacher.tasks import TeacherTask


@dataclass
class KindStatus:
    """Status of one kind of teacher output for one model."""

    kind: str
    total: int
    ok: int
    flagged: int
    other_prompts: int
    """Records in the same cache that these tasks do not ask for (the other protocol's, older templates')."""
    prompt_tok_s: float | None
    gen_tok_s: float | None
    wall_s_per_record: float | None

    @property
    def done(self) -> int:
        return self.ok + self.flagged

    @property
    def pending(self) -> int:
        return self.total - self.done

    @property
    def eta_s(self) -> float | None:
        if self.wall_s_per_record is None:
            return None
        return self.pending * self.wall_s_per_record


def kind_status(kind: str, tasks: list[TeacherTask], cache: TeacherCache, model_id: str) -> KindStatus:
    """Compare the tasks the data asks for with what the cache holds."""
    keys = {task_key(t, model_id) for t in tasks}
    current = [r for r in cache.records() if r["key"] in keys]
    ok = sum(r["status"] == "ok" for r in current)
    prompt_ms = sum(r.get("prompt_ms") or 0 for r in current)
    gen_ms = sum(r.get("generation_ms") or 0 for r in current)
    new_prompt = sum((r.get("prompt_tokens") or 0) - (r.get("cached_prompt_tokens") or 0) for r in current)
    gen = sum(r.get("completion_tokens") or 0 for r in current)
    return KindStatus(
        kind=kind,
        total=len(keys),
        ok=ok,
        flagged=len(current) - ok,
        other_prompts=len(cache) - len(current),
        prompt_tok_s=new_prompt / (prompt_ms / 1000) if prompt_ms else None,
        gen_tok_s=gen / (gen_ms / 1000) if gen_ms else None,
        wall_s_per_record=_recent_wall_per_record(current),
    )


def _recent_wall_per_record(records: list[dict]) -> float | None:
    """Wall seconds per finished record in the most recent run (parallel slots included)."""
    if not records:
        return None
    last_run = max(records, key=lambda r: r.get("finished_at", 0)).get("run")
    times = sorted(r["finished_at"] for r in records if r.get("run") == last_run and "finished_at" in r)
    if len(times) < 3:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)
