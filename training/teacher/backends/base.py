"""The interface every teacher backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class TeacherError(RuntimeError):
    """A teacher request failed for good (after retries where retrying makes sense)."""


class TeacherAuthError(TeacherError):
    """The endpoint refused our credentials (HTTP 401/403): retrying will not help."""


class TeacherModelNotFound(TeacherError):
    """The endpoint does not serve the requested model."""


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion at temperature 0."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0
    seed: int = 22
    frequency_penalty: float = 0.0
    """OpenAI's ``frequency_penalty``: logits of tokens already generated lowered by this times their count (0: off,
    and then not sent, so every other request's body stays what it was)."""


@dataclass
class GenerationResult:
    """The text and what it cost (token counts and server timings where the server reports them)."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    prompt_ms: float | None = None
    predicted_ms: float | None = None
    elapsed_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class TeacherBackend(Protocol):
    """Anything that turns chat messages into text, with bounded concurrency."""

    model_id: str
    concurrency: int

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one request (may raise :class:`TeacherError`)."""
        ...

    async def aclose(self) -> None:
        """Release connections and servers."""
        ...
