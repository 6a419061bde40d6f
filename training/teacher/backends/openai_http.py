"""OpenAI-compatible ``/v1/chat/completions`` client: vLLM, Ollama, llama.cpp server, hosted APIs."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from training.teacher.backends.base import (
    GenerationRequest,
    GenerationResult,
    TeacherAuthError,
    TeacherError,
    TeacherModelNotFound,
)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIHTTPBackend:
    """Bounded-concurrency client with timeouts and exponential backoff with jitter.

    ``extra_body`` is merged into every request (e.g. ``{"cache_prompt": true}`` for
    llama.cpp); hosted APIs reject unknown fields, so it is empty by default.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        extra_body: dict[str, Any] | None = None,
        model_id: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.base_url = self.base_url.removesuffix("/v1")
        self.model = model
        self.model_id = model_id or model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.extra_body = extra_body or {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._slots = asyncio.Semaphore(concurrency)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """POST one chat completion, retrying transient failures."""
        body = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            **({"frequency_penalty": request.frequency_penalty} if request.frequency_penalty else {}),
            **self.extra_body,
        }
        async with self._slots:
            for attempt in range(self.max_retries + 1):
                started = time.perf_counter()
                try:
                    response = await self._client.post("/v1/chat/completions", json=body)
                except (httpx.TransportError, httpx.TimeoutException) as exc:
                    if attempt == self.max_retries:
                        raise TeacherError(f"{self.base_url}: no answer after {attempt + 1} tries ({exc!r})") from exc
                    await self._sleep(attempt)
                    continue
                if response.status_code in (401, 403):
                    raise TeacherAuthError(
                        f"{self.base_url} refused the request (HTTP {response.status_code}): check the API key "
                        f"(--api-key or R2END_TEACHER_API_KEY). Server said: {response.text[:300]}"
                    )
                if response.status_code == 404:
                    raise TeacherModelNotFound(await self._model_not_found_message(response))
                if response.status_code in RETRYABLE_STATUS and attempt < self.max_retries:
                    await self._sleep(attempt, response.headers.get("retry-after"))
                    continue
                if response.status_code != 200:
                    raise TeacherError(f"{self.base_url}: HTTP {response.status_code}: {response.text[:300]}")
                try:
                    payload = response.json()
                except ValueError as exc:
                    raise TeacherError(f"{self.base_url}: HTTP 200 but not JSON: {response.text[:300]!r}") from exc
                return self._parse(payload, time.perf_counter() - started)
        raise AssertionError("unreachable")

    async def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff_s * (2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        await asyncio.sleep(min(delay, 60.0))

    async def _model_not_found_message(self, response: httpx.Response) -> str:
        try:
            listed = (await self._client.get("/v1/models")).json().get("data", [])
            names = [m.get("id") for m in listed]
        except Exception:  # noqa: BLE001 - the list is only a hint in the error message; without it the message stands
            names = []
        hint = f" Models served there: {names}." if names else ""
        return f"{self.base_url} has no model {self.model!r} (HTTP 404: {response.text[:200]}).{hint}"

    @staticmethod
    def _parse(payload: dict[str, Any], elapsed: float) -> GenerationResult:
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise TeacherError(f"unexpected response shape: {str(payload)[:300]}") from exc
        usage = payload.get("usage") or {}
        timings = payload.get("timings") or {}
        return GenerationResult(
            text=text,
            finish_reason=choice.get("finish_reason") or "unknown",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            prompt_ms=timings.get("prompt_ms"),
            predicted_ms=timings.get("predicted_ms"),
            elapsed_s=elapsed,
            raw=payload,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()
