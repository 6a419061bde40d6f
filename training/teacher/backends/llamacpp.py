"""Local GGUF models through llama.cpp (``xllamacpp`` prebuilt wheel), served on loopback.

``LlamaCppServer`` runs llama.cpp's OpenAI-compatible server in this process with
``n_parallel`` slots and continuous batching; :func:`local_backend` points the
HTTP client at it, so local and remote teachers share one code path. On the
2-core machine this was developed on, 4 slots gave 1.65x the aggregate
generation throughput of one (``scripts/bench_teacher.py`` measures it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from index.osutil import free_port
from training.teacher.backends.openai_http import OpenAIHTTPBackend
from training.teacher.models import resolve_model


@dataclass(frozen=True)
class LlamaCppSettings:
    """Server knobs: slots, threads (both phases), context per slot."""

    n_parallel: int = 4
    n_threads: int = int(os.environ.get("R2END_LLAMA_THREADS") or max(1, os.cpu_count() or 1))
    """Threads for prompt and generation. On a machine shared with other work, 1 thread per
    spare core is better: llama.cpp's worker threads spin-wait, so an oversubscribed CPU
    makes every thread wait for the slowest (seen here: 10x slower with 2 threads while
    other jobs ran)."""
    ctx_per_slot: int = 2048
    poll: int = int(os.environ.get("R2END_LLAMA_POLL") or 0)
    n_batch: int = 512


class LlamaCppServer:
    """An in-process llama.cpp server on 127.0.0.1 (stopped by :meth:`close`)."""

    def __init__(
        self,
        model: str,
        settings: LlamaCppSettings | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = None,
    ):
        import xllamacpp  # optional dependency: the "teacher" extra

        self.settings = settings or LlamaCppSettings()
        self.model_id, self.path = resolve_model(model)
        self.port = port or free_port()
        self.host = host
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_parallel = self.settings.n_parallel
        params.n_ctx = self.settings.ctx_per_slot * self.settings.n_parallel
        params.n_batch = self.settings.n_batch
        params.cpuparams.n_threads = self.settings.n_threads
        params.cpuparams_batch.n_threads = self.settings.n_threads
        # poll = 0: worker threads sleep instead of spin-waiting between ops, so a CPU shared
        # with other jobs does not stall every thread behind a descheduled one.
        params.cpuparams.poll = self.settings.poll
        params.cpuparams_batch.poll = self.settings.poll
        params.cont_batching = True
        params.cache_prompt = True
        params.hostnames = [host]
        params.port = self.port
        # A set of names: assigning a plain string made llama.cpp serve the model under
        # each *character* of the name ("s", "m", ...) and report its id as "-".
        params.model_alias = {self.model_id}
        if api_key:
            params.api_keys = [api_key]  # requests without "Authorization: Bearer <key>" get 401
        params.verbosity = -1  # keep llama.cpp quiet; errors still surface as HTTP errors
        self._server = xllamacpp.Server(params)
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until ``/health`` answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"llama.cpp server for {self.model_id} not ready after {timeout_s} s")

    def close(self) -> None:
        """Stop the server and free the model."""
        server, self._server = self._server, None
        del server


class LocalLlamaCppBackend(OpenAIHTTPBackend):
    """The HTTP backend pointed at a llama.cpp server it owns."""

    def __init__(self, model: str, settings: LlamaCppSettings | None = None, **http_options):
        self.server = LlamaCppServer(model, settings)
        super().__init__(
            base_url=self.server.base_url,
            model=self.server.model_id,
            concurrency=self.server.settings.n_parallel,
            extra_body={"cache_prompt": True},
            model_id=self.server.model_id,
            **http_options,
        )

    async def aclose(self) -> None:
        await super().aclose()
        self.server.close()
