"""OpenAIHTTPBackend against a REAL llama.cpp server on loopback.

The llama.cpp servers are ``python -m training.teacher.server`` subprocesses with
SmolLM2-135M (started once per module, stopped by the fixture: SIGTERM, then SIGKILL).
Error paths llama.cpp cannot produce (it ignores the model name in single-model mode, so it
never answers 404 for an unknown model) use a stub: tests/unit/test_teacher_http_errors.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from teacher_util import REPO, TEST_MODEL, generate, llama_server, request, subprocess_env, write_tiny_recbole

from training.data.registry import load_dataset
from training.teacher.backends.base import TeacherAuthError, TeacherModelNotFound
from training.teacher.backends.openai_http import OpenAIHTTPBackend
from training.teacher.cache import TeacherCache
from training.teacher.runner import run_tasks, task_key
from training.teacher.tasks import build_tasks

API_KEY = "test-key-5f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llama_server(parallel=2, log=tmp_path_factory.mktemp("srv") / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    with llama_server(parallel=1, api_key=API_KEY, log=tmp_path_factory.mktemp("srv") / "keyed.log") as base_url:
        yield base_url


def test_temperature_zero_is_deterministic_and_usage_is_reported(server):
    backend = OpenAIHTTPBackend(server + "/v1", TEST_MODEL, concurrency=2)  # a trailing /v1 is accepted
    first, second = asyncio.run(generate(backend, request(), request()))
    assert first.text and first.text == second.text
    for result in (first, second):
        assert result.prompt_tokens > 5
        assert 0 < result.completion_tokens <= 16
        assert result.finish_reason in ("stop", "length")
        assert result.prompt_ms is not None and result.predicted_ms is not None  # llama.cpp's own timings
        assert result.elapsed_s > 0
    assert second.cached_tokens > 0  # the same prompt again: llama.cpp reused its prompt cache


def test_server_lists_the_model_under_its_registered_name(server):
    models = httpx.get(server + "/v1/models", timeout=10).json()["data"]
    # Regression: a plain string given as the alias set made llama.cpp serve every *character* of
    # the name as an alias ("s", "m", ...) and list the model as "-".
    assert [m["id"] for m in models] == [TEST_MODEL]


def test_unknown_model_name_on_llama_cpp(server):
    backend = OpenAIHTTPBackend(server, "no-such-model", max_retries=0)
    try:
        (result,) = asyncio.run(generate(backend, request(max_tokens=4)))
    except TeacherModelNotFound as exc:  # a llama.cpp that checks names (router mode) must say so clearly
        assert "no-such-model" in str(exc) and TEST_MODEL in str(exc)
    else:  # single-model llama.cpp ignores the name and answers with its one model
        assert result.completion_tokens > 0


def test_cli_teach_run_against_the_endpoint(server, tmp_path):
    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    out = tmp_path / "teacher"
    base = [sys.executable, "-m", "training.cli", "teach"]
    data = ["ml-tiny", "--format", "recbole", "--path", str(raw), "--data-dir", str(out)]
    done = subprocess.run(
        base
        + ["run", *data, "--kinds", "oracle", "--endpoint", server, "--model", TEST_MODEL, "--limit", "2", "--concurrency", "2"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "ml-tiny" / "oracle.jsonl").read_text().splitlines()]
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "oracle")
    first_two = [task_key(t, TEST_MODEL) for t in tasks[:2]]  # --limit takes the pending tasks in order
    assert sorted(r["key"] for r in records) == sorted(first_two)
    for r in records:
        assert r["model"] == TEST_MODEL and r["kind"] == "oracle" and r["dataset"] == "ml-tiny"
        assert r["status"] in ("ok", "flagged") and (r["status"] == "ok") == (r["problem"] is None)
        assert r["prompt_tokens"] > 100 and r["completion_tokens"] > 0 and r["text"]
        assert r["prompt_ms"] > 0 and r["generation_ms"] > 0
    status = subprocess.run(
        base + ["status", *data, "--model", TEST_MODEL],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr[-2000:]
    assert "2/10" in status.stdout


def test_wrong_or_missing_api_key_is_an_auth_error(keyed_server, tmp_path):
    assert httpx.get(keyed_server + "/health", timeout=10).status_code == 200  # health stays open
    for key in ("wrong-key", None):
        backend = OpenAIHTTPBackend(keyed_server, TEST_MODEL, api_key=key, max_retries=3, backoff_s=0.01)
        with pytest.raises(TeacherAuthError) as caught:
            asyncio.run(generate(backend, request(max_tokens=4)))
        message = str(caught.value)
        assert "HTTP 401" in message and "API key" in message and keyed_server in message
    (ok,) = asyncio.run(generate(OpenAIHTTPBackend(keyed_server, TEST_MODEL, api_key=API_KEY), request(max_tokens=4)))
    assert ok.completion_tokens > 0


def test_runner_stops_on_an_auth_error_and_stores_nothing(keyed_server, tmp_path):
    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "oracle")
    cache = TeacherCache(tmp_path / "oracle.jsonl")
    backend = OpenAIHTTPBackend(keyed_server, TEST_MODEL, api_key="wrong-key", concurrency=2)

    async def go():
        try:
            return await run_tasks(tasks, backend, cache, "ml-tiny", show_progress=False)
        finally:
            await backend.aclose()

    with pytest.raises(TeacherAuthError):
        asyncio.run(go())
    assert len(TeacherCache(tmp_path / "oracle.jsonl")) == 0
