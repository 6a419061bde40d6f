"""The Ray Data teacher pipeline against a real loopback llama.cpp server (SmolLM2-135M)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from teacher_util import REPO, TEST_MODEL, llama_server, subprocess_env, write_tiny_recbole

from training.data.registry import load_dataset
from training.teacher.backends.base import TeacherAuthError
from training.teacher.cache import TeacherCache
from training.teacher.runner import task_key
from training.teacher.tasks import build_tasks

try:
    import ray
except ImportError:  # the optional "scale" extra
    ray = None

pytestmark = pytest.mark.skipif(ray is None, reason="ray is not installed (optional extra: pip install 'ray[data]>=2.40,<3')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llama_server(parallel=2, api_key="ray-key", log=tmp_path_factory.mktemp("srv") / "server.log") as base_url:
        yield base_url


def test_ray_pipeline_writes_records_into_the_cache(local_ray, server, tmp_path):
    from training.teacher.ray_pipeline import RaySettings, run_tasks_ray

    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "oracle")
    path = tmp_path / "teacher" / "oracle.jsonl"
    cache = TeacherCache(path)
    first = tasks[0]
    cache.append({"key": task_key(first, TEST_MODEL), "status": "ok", "text": "already there", "kind": "oracle"})
    settings = RaySettings(endpoint=server, model=TEST_MODEL, api_key="ray-key", actors=2, requests_per_actor=1, backoff_s=0.05)

    summary = run_tasks_ray(tasks[:3], settings, cache, "ml-tiny")  # 2 users to generate (one per actor), 1 cached

    assert summary.skipped_cached == 1 and summary.submitted == 2 and summary.errors == 0
    assert summary.ok + summary.flagged == 2
    lines = path.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and path.read_bytes().endswith(b"\n")
    assert records[0]["text"] == "already there"  # the cached record was not regenerated
    by_key = {r["key"]: r for r in records}
    for task in tasks[1:3]:
        r = by_key[task_key(task, TEST_MODEL)]  # the same keys as `r2end teach run --endpoint`
        assert r["subject"] == task.subject and r["model"] == TEST_MODEL and r["dataset"] == "ml-tiny"
        assert r["status"] in ("ok", "flagged") and r["text"] and r["completion_tokens"] > 0
        assert r["attempts"] in (1, 2, 3) and r["prompt_tokens"] > 100  # 3: truncated twice, then the loop penalty
        assert (r["attempts"] == 3) == ("loop_penalty" in r)
    assert len({r["run"] for r in records[1:]}) == 1
    assert summary.completion_tokens == sum(r["completion_tokens"] for r in records[1:])

    again = run_tasks_ray(tasks[:3], settings, cache, "ml-tiny")  # resumable: nothing left to do
    assert again.submitted == 0 and again.skipped_cached == 3
    assert path.read_bytes().splitlines() == lines


def test_ray_pipeline_stops_on_a_refused_key(local_ray, server, tmp_path):
    from training.teacher.ray_pipeline import RaySettings, run_tasks_ray

    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "oracle")
    cache = TeacherCache(tmp_path / "oracle.jsonl")
    settings = RaySettings(endpoint=server, model=TEST_MODEL, api_key="wrong", actors=1, requests_per_actor=2)
    with pytest.raises(TeacherAuthError, match="HTTP 401"):
        run_tasks_ray(tasks[:2], settings, cache, "ml-tiny")
    assert len(TeacherCache(tmp_path / "oracle.jsonl")) == 0


def test_cli_run_ray(server, tmp_path):
    """`r2end teach run-ray` end to end in its own process (its own local Ray instance)."""
    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    out = tmp_path / "teacher"
    env = subprocess_env()
    env["R2END_TEACHER_API_KEY"] = "ray-key"  # the key from the environment, not the command line
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.cli",
            "teach",
            "run-ray",
            "ml-tiny",
            "--format",
            "recbole",
            "--path",
            str(raw),
            "--kinds",
            "unguided",
            "--endpoint",
            server,
            "--model",
            TEST_MODEL,
            "--limit",
            "1",
            "--actors",
            "1",
            "--requests-per-actor",
            "1",
            "--data-dir",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "ml-tiny" / "unguided.jsonl").read_text().splitlines()]
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "unguided")
    assert [r["key"] for r in records] == [task_key(tasks[0], TEST_MODEL)]
    assert records[0]["kind"] == "unguided" and records[0]["text"]
