"""Service configuration from the environment (prefix ``R2END_``), e.g. ``R2END_BUNDLE_PATH=/bundle``."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_EVENT_BYTES = len('{"item_id":"1"},')  # 16: the smallest history event a request body can carry


def available_cores() -> int:
    """CPU cores this process may run on (respects CPU affinity / cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class ServiceSettings(BaseSettings):
    """Every knob of the service; each field ``name`` is read from ``R2END_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="R2END_", extra="ignore")

    bundle_path: Path = Field(description="model bundle directory written by training (manifest.json, ONNX graphs, index)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    encode_workers: int = Field(
        default_factory=available_cores, ge=1, description="ONNX runs in flight at once, each in its own thread"
    )
    onnx_threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime intra-op threads of a run; default: the cores shared out among the encode workers "
        "(see run_threads)",
    )
    onnx_threads_alone: int | None = Field(
        None,
        ge=1,
        description="intra-op threads of a run that starts while no other is in flight (a second session of the "
        "graph); default: every core",
    )
    use_int8: bool = Field(
        False,
        description="serve the int8-quantised user encoder (user_encoder.int8.onnx); its activations are quantised per batch, "
        "so a user vector moves slightly (cosine ~0.995) with what it is batched with",
    )
    verify_checksums: bool = Field(True, description="check every bundle file's sha256 against the manifest on load")

    max_batch_size: int = Field(
        8,
        ge=1,
        description="most histories encoded in one ONNX run (on CPU a history costs more in a bigger batch: see docs/SERVICE.md)",
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="how long a free encode worker waits for company after the first request (0: it starts at once; "
        "worth it only where a batch costs about what one history does, e.g. on a GPU)",
    )
    queue_size: int = Field(256, ge=1, description="encode requests waiting at most; beyond that: 503 + Retry-After")
    max_inflight: int | None = Field(
        None,
        ge=1,
        description="most /recommend, /recommend/batch and PUT /items requests in flight; beyond: an immediate 503 + "
        "Retry-After before the body is read. Default: queue_size + encode_workers * max_batch_size (see inflight_limit)",
    )
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After sent with 503 answers")

    max_history: int | None = Field(
        None,
        ge=1,
        description="most history events accepted per request; default: as many as R2END_MAX_BODY_BYTES can carry "
        "(max_body_bytes // 16), so the body limit decides (see history_limit)",
    )
    max_history_text_chars: int = Field(20_000, ge=1, description="longest free-text history accepted")
    max_k: int = Field(100, ge=1)
    default_k: int = Field(10, ge=1)
    max_batch_users: int = Field(64, ge=1, description="most requests in one POST /recommend/batch")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body (413 beyond)")

    admin_token: str | None = Field(None, description="Bearer token for /admin/*; admin routes answer 403 while unset")
    write_token: str | None = Field(
        None, description="Bearer token for PUT/DELETE /items/{id}; catalogue writes answer 403 while unset"
    )
    item_log_path: Path | None = Field(None, description="durable log of live item changes; default <bundle_path>.items.jsonl")
    warmup: bool = Field(True, description="run a few encodes of several lengths before /readyz turns 200")
    user_cache_size: int = Field(
        0, ge=0, description="user vectors cached per loaded bundle, keyed by the history text (LRU); 0 = off"
    )

    @property
    def run_threads(self) -> int:
        """Intra-op threads of each ONNX run: R2END_ONNX_THREADS, or the cores divided among the workers."""
        return self.onnx_threads if self.onnx_threads is not None else max(1, available_cores() // self.encode_workers)

    @property
    def alone_threads(self) -> int:
        """Intra-op threads of a run with the machine to itself: R2END_ONNX_THREADS_ALONE, or every core."""
        return self.onnx_threads_alone if self.onnx_threads_alone is not None else max(self.run_threads, available_cores())

    @property
    def inflight_limit(self) -> int:
        """The admission limit in force: R2END_MAX_INFLIGHT, or what the batcher holds at once (queue + one batch).

        A /recommend is one encode, so with this many in flight the batcher's queue is never the one
        to refuse it (no request is parsed only to be turned away), and every admitted request finds
        a place in a batch (each encode worker holds one). More would admit requests that are parsed only to find the queue full.
        The queue size is thus the one knob for the longest wait: about (queue_size +
        encode_workers * max_batch_size) / throughput.
        """
        return self.max_inflight if self.max_inflight is not None else self.queue_size + self.encode_workers * self.max_batch_size

    @property
    def history_limit(self) -> int:
        """The history length limit in force: R2END_MAX_HISTORY, or what the body limit can carry (65,536 for 1 MiB).

        Real histories are far shorter (the longest ML-1M user has 2,314 events), and the model reads
        only the most recent ones, so by default a history is limited by its bytes alone.
        """
        return self.max_history if self.max_history is not None else self.max_body_bytes // MIN_EVENT_BYTES

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if self.item_log_path is None:
            bundle = Path(self.bundle_path)
            self.item_log_path = bundle.with_name(bundle.name + ".items.jsonl")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        for token in ("admin_token", "write_token"):  # a blank token would let a blank credential in: unset instead
            if getattr(self, token) is not None and not getattr(self, token).strip():
                setattr(self, token, None)
        return self
