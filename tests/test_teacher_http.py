"""OpenAIHTTPBackend against a REAL llama.cpp server on loopback, plus its error classes.

The llama.cpp servers are ``python -m training.teacher.server`` subprocesses with
SmolLM2-135M (started once per module, stopped by the fixture: SIGTERM, then SIGKILL).
Error paths llama.cpp cannot produce (it ignores the model name in single-model
mode, so it never answers 404 for an unknown model) use a tiny ``http.server`` stub.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from teacher_util import REPO, TEST_MODEL, llama_server, subprocess_env, write_tiny_recbole

from index.osutil import free_port
from training.data.registry import load_dataset
from training.teacher.backends.base import GenerationRequest, TeacherAuthError, TeacherError, TeacherModelNotFound
from training.teacher.backends.openai_http import OpenAIHTTPBackend
from training.teacher.cache import TeacherCache
from training.teacher.runner import run_tasks, task_key
from training.teacher.tasks import build_tasks

API_KEY = "test-key-5f3a"
PROMPT = "List three movie genres, separated by commas."


def request(max_tokens: int = 16, prompt: str = PROMPT) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": prompt}], max_tokens=max_tokens)


async def generate(backend: OpenAIHTTPBackend, *requests: GenerationRequest):
    try:
        return [await backend.generate(r) for r in requests]
    finally:
        await backend.aclose()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llama_server(parallel=2, log=tmp_path_factory.mktemp("srv") / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    with llama_server(parallel=1, api_key=API_KEY, log=tmp_path_factory.mktemp("srv") / "keyed.log") as base_url:
        yield base_url


# --- the real server -------------------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
def test_server_lists_the_model_under_its_registered_name(server):
    models = httpx.get(server + "/v1/models", timeout=10).json()["data"]
    # Regression: a plain string given as the alias set made llama.cpp serve every *character* of
    # the name as an alias ("s", "m", ...) and list the model as "-".
    assert [m["id"] for m in models] == [TEST_MODEL]


@pytest.mark.slow
def test_unknown_model_name_on_llama_cpp(server):
    backend = OpenAIHTTPBackend(server, "no-such-model", max_retries=0)
    try:
        (result,) = asyncio.run(generate(backend, request(max_tokens=4)))
    except TeacherModelNotFound as exc:  # a llama.cpp that checks names (router mode) must say so clearly
        assert "no-such-model" in str(exc) and TEST_MODEL in str(exc)
    else:  # single-model llama.cpp ignores the name and answers with its one model
        assert result.completion_tokens > 0


@pytest.mark.slow
def test_cli_teach_run_against_the_endpoint(server, tmp_path):
    raw = write_tiny_recbole(tmp_path / "raw", n_users=10)
    out = tmp_path / "teacher"
    base = [sys.executable, "-m", "training.cli", "teach"]
    data = ["ml-tiny", "--format", "recbole", "--path", str(raw), "--data-dir", str(out)]
    done = subprocess.run(
        base + ["run", *data, "--kinds", "oracle", "--endpoint", server, "--model", TEST_MODEL, "--limit", "2", "--concurrency", "2"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300,
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
    status = subprocess.run(base + ["status", *data, "--model", TEST_MODEL], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, check=False, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "2/10" in status.stdout


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- no server / a stub ----------------------------------------------------------------------


def test_connection_refused_is_a_teacher_error_after_retries():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    backend = OpenAIHTTPBackend(url, TEST_MODEL, max_retries=2, backoff_s=0.01)
    with pytest.raises(TeacherError) as caught:
        asyncio.run(generate(backend, request()))
    assert type(caught.value) is TeacherError  # not an auth / model error: those stop a run
    assert "no answer after 3 tries" in str(caught.value) and url in str(caught.value)


class Stub:
    """A scripted OpenAI-compatible endpoint: ``script`` is a list of (status, body, headers) per request."""

    def __init__(self, script, models=("served-model",)):
        self.script = list(script)
        self.models = list(models)
        self.requests: list[tuple[str, str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stub.requests.append(("GET", self.path, {}))
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, body))
                status, payload, headers = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                self._send(status, payload, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def stub_factory():
    stubs = []

    def make(script, **kwargs):
        stubs.append(Stub(script, **kwargs))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.close()


def completion(text="The answer.", finish="stop"):
    return {
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}},
    }


def test_unknown_model_message_lists_the_served_models(stub_factory):
    stub = stub_factory([(404, {"error": {"message": "model 'qwen-7b' not found"}}, {})], models=("served-a", "served-b"))
    backend = OpenAIHTTPBackend(stub.url, "qwen-7b", max_retries=3, backoff_s=0.01)
    with pytest.raises(TeacherModelNotFound) as caught:
        asyncio.run(generate(backend, request()))
    message = str(caught.value)
    assert "'qwen-7b'" in message and "HTTP 404" in message and "not found" in message
    assert "['served-a', 'served-b']" in message
    assert [r[:2] for r in stub.requests] == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]  # no retries


def test_transient_errors_are_retried_then_succeed(stub_factory):
    stub = stub_factory([(503, {"error": "busy"}, {"Retry-After": "0"}), (429, {"error": "slow down"}, {}), (200, completion(), {})])
    backend = OpenAIHTTPBackend(stub.url, "served-model", max_retries=3, backoff_s=0.01, extra_body={"cache_prompt": True})
    (result,) = asyncio.run(generate(backend, request(max_tokens=7)))
    assert result.text == "The answer." and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (12, 3, 4)
    assert len(stub.requests) == 3
    body = stub.requests[-1][2]
    assert body["model"] == "served-model" and body["max_tokens"] == 7 and body["temperature"] == 0.0
    assert body["seed"] == 22 and body["cache_prompt"] is True


def test_persistent_server_errors_and_bad_payloads_raise_teacher_error(stub_factory):
    failing = stub_factory([(500, {"error": "boom"}, {})])
    with pytest.raises(TeacherError, match="HTTP 500"):
        asyncio.run(generate(OpenAIHTTPBackend(failing.url, "m", max_retries=2, backoff_s=0.01), request()))
    assert len(failing.requests) == 3
    not_json = stub_factory([(200, "<html>proxy error</html>", {})])
    with pytest.raises(TeacherError, match="not JSON"):
        asyncio.run(generate(OpenAIHTTPBackend(not_json.url, "m", max_retries=0), request()))
    wrong_shape = stub_factory([(200, {"choices": []}, {})])
    with pytest.raises(TeacherError, match="unexpected response shape"):
        asyncio.run(generate(OpenAIHTTPBackend(wrong_shape.url, "m", max_retries=0), request()))
    forbidden = stub_factory([(403, {"error": "forbidden"}, {})])
    with pytest.raises(TeacherAuthError, match="HTTP 403"):
        asyncio.run(generate(OpenAIHTTPBackend(forbidden.url, "m", max_retries=3, backoff_s=0.01), request()))
    assert len(forbidden.requests) == 1  # never retried
