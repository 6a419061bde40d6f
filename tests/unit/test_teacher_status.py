"""``r2end teach status`` counts: what the data asks for, what is usable or flagged, and what else the cache holds."""

from __future__ import annotations

from locations import MOVIES

from training.data.registry import load_dataset
from training.teacher.cache import TeacherCache
from training.teacher.runner import task_key
from training.teacher.status import kind_status
from training.teacher.tasks import build_tasks

MODEL = "some-model"


def test_records_of_other_prompts_are_counted_apart_and_never_as_done(tmp_path):
    tasks = build_tasks(load_dataset("movies", "recbole", MOVIES), "oracle")
    cache = TeacherCache(tmp_path / "oracle.jsonl")
    cache.append({"key": task_key(tasks[0], MODEL), "status": "ok"})
    cache.append({"key": task_key(tasks[1], MODEL), "status": "flagged"})
    cache.append({"key": "another-protocols-prompt", "status": "ok"})
    cache.append({"key": task_key(tasks[2], "another-model"), "status": "ok"})

    status = kind_status("oracle", tasks, cache, MODEL)
    assert (status.total, status.ok, status.flagged, status.other_prompts) == (len(tasks), 1, 1, 2)
    assert status.done == 2 and status.pending == len(tasks) - 2
