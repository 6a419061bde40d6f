"""OpenAIHTTPBackend's error classes on paths llama.cpp cannot produce: nothing listening, and a scripted stub
(a tiny ``http.server``) for unknown models, transient and persistent errors and bad payloads.
The backend against a real llama.cpp server: tests/e2e/test_teacher_http.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from teacher_util import TEST_MODEL, generate, request

from index.osutil import free_port
from training.teacher.backends.base import TeacherAuthError, TeacherError, TeacherModelNotFound
from training.teacher.backends.openai_http import OpenAIHTTPBackend


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
    stub = stub_factory(
        [(503, {"error": "busy"}, {"Retry-After": "0"}), (429, {"error": "slow down"}, {}), (200, completion(), {})]
    )
    backend = OpenAIHTTPBackend(stub.url, "served-model", max_retries=3, backoff_s=0.01, extra_body={"cache_prompt": True})
    (result,) = asyncio.run(generate(backend, request(max_tokens=7)))
    assert result.text == "The answer." and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (12, 3, 4)
    assert len(stub.requests) == 3
    body = stub.requests[-1][2]
    assert body["model"] == "served-model" and body["max_tokens"] == 7 and body["temperature"] == 0.0
    assert body["seed"] == 22 and body["cache_prompt"] is True
    assert "frequency_penalty" not in body  # off: the body every request had before the penalty existed


def test_a_frequency_penalty_is_sent_when_set(stub_factory):
    stub = stub_factory([(200, completion(), {})])
    penalised = dataclasses.replace(request(), frequency_penalty=0.3)
    asyncio.run(generate(OpenAIHTTPBackend(stub.url, "served-model", max_retries=0), penalised))
    assert stub.requests[-1][2]["frequency_penalty"] == 0.3


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
