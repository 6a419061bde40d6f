"""The generative baseline, served like R2END: an autoregressive LLM writes the next item's title.

SLIM-style: the same history text R2END encodes (the bundle's :class:`~index.verbalize.Verbaliser`,
read from its manifest) goes into a prompt; a llama.cpp OpenAI-compatible server answers with a
title (temperature 0, a few tokens); the title is matched to the catalogue (normalised exact
match first, then difflib similarity), and the catalogue ranked by that similarity gives the
top k. Same request and response shapes as the service's ``POST /recommend``
(``bundle_version`` and ``variant`` carry the LLM's name).

    python -m training.teacher.server --model smollm2-135m --port 8088 &
    python -m loadtest.generative_app --bundle BUNDLE --llm-url http://127.0.0.1:8088 --model smollm2-135m --port 8090

Only the catalogue (``catalog.jsonl``) and the manifest's verbaliser are read from the
bundle; no training code, no ONNX.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request

from index import bundle as B
from index.catalog import Catalog, ItemMeta
from index.verbalize import HistoryEvent, Verbaliser
from service.schemas import ItemOut, RecommendRequest, RecommendResponse

PROMPT = "Based on this watching history, name the one movie the user will watch next. Answer with the title only."
ARTICLES = ("the", "a", "an", "la", "le", "les", "l", "il", "el", "der", "die", "das", "de", "het")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_PARENS = re.compile(r"\(([^()]*)\)")
_TRAILING_ARTICLE = re.compile(r"^(.*),\s*(" + "|".join(ARTICLES) + r")$")
_QUOTED = re.compile(r'"([^"]{2,}?)"|“([^”]{2,}?)”|\*\*([^*]{2,}?)\*\*')
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an) ")  # "The Usual Suspects" = "Usual Suspects"
_PREFIX = re.compile(r"^\s*(?:\d+[.)]\s*|[-*•]\s*|(?:answer|title|movie|next movie)\s*:\s*)+", re.IGNORECASE)


# ---- matching a generated title to the catalogue -----------------------------------------------


def clean_answer(text: str) -> str:
    """The title in an LLM answer: the first quoted or bold span of the first non-empty line, else that line
    without list markers, labels and quotes (``I'd pick "Heat" (1995).`` -> ``Heat``)."""
    for line in text.splitlines():
        if quoted := _QUOTED.search(line):
            return next(g for g in quoted.groups() if g).strip()
        line = _PREFIX.sub("", line).strip().strip("\"'“”‘’*_`").strip()
        if line:
            return line
    return ""


def normalise_title(text: str) -> str:
    """Lower case, accents folded, parentheses, punctuation and a leading English article dropped.

    ``Godfather, The (1972)``, ``The Godfather`` and ``godfather`` all become ``godfather``.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _PARENS.sub(" ", text).strip()
    text = re.sub(r"\s+", " ", text).strip(" .,:;")
    if match := _TRAILING_ARTICLE.match(text):
        text = f"{match.group(2)} {match.group(1)}"
    text = re.sub(r"[^\w\s]", " ", text).replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return _LEADING_ARTICLE.sub("", text) or text


def title_variants(title: str) -> tuple[str, ...]:
    """Normalised forms a title may be written in: the main title and each parenthesised alias (not years)."""
    variants = [normalise_title(title)]
    for alias in _PARENS.findall(title):
        if not _YEAR.fullmatch(alias.strip()):
            variants.append(normalise_title(alias))
    return tuple(dict.fromkeys(v for v in variants if v))


def answer_year(text: str) -> int | None:
    """A year written in the answer (e.g. ``Heat (1995)``), if any."""
    match = _YEAR.search(text)
    return int(match.group(1)) if match else None


def containment(a: str, b: str, min_chars: int = 4) -> float:
    """0.6..1.0 when one title holds the other as whole words (``star wars`` in ``star wars episode iv``), else 0."""
    short, long = sorted((a, b), key=len)
    if len(short) < min_chars or f" {short} " not in f" {long} ":
        return 0.0
    return 0.6 + 0.4 * len(short) / len(long)


class TitleMatcher:
    """Rank catalogue items by how well their title matches a generated title."""

    def __init__(self, items: Iterable[ItemMeta]):
        self.items = list(items)
        self.variants = [title_variants(item.title) or (item.item_id.casefold(),) for item in self.items]
        self.exact: dict[str, list[int]] = {}
        for row, variants in enumerate(self.variants):
            for variant in variants:
                self.exact.setdefault(variant, []).append(row)

    def rank(self, answer: str, k: int, exclude: frozenset[str] = frozenset()) -> list[tuple[ItemMeta, float]]:
        """Top ``k`` items (not in ``exclude``) with scores in [0, 1]: exact matches 1.0, then difflib ratio or whole-word containment."""
        title = clean_answer(answer)
        query, year = normalise_title(title), answer_year(title)
        exact = [r for r in self.exact.get(query, []) if self.items[r].item_id not in exclude] if query else []
        exact.sort(key=lambda r: abs((self.items[r].year or 0) - year) if year else 0)
        ranked = [(self.items[r], 1.0) for r in exact[:k]]
        if len(ranked) < k:
            taken = set(exact)
            ranked += [(self.items[r], score) for score, r in self._fuzzy(query, k - len(ranked), exclude, taken)]
        return ranked

    def _fuzzy(self, query: str, k: int, exclude: frozenset[str], taken: set[int]) -> list[tuple[float, int]]:
        """Best ``k`` rows by max(containment, SequenceMatcher ratio); the ratio is skipped when its cheap upper bounds cannot win."""
        heap: list[tuple[float, int]] = []  # min-heap of (score, -row): ties go to the earlier row
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(query)
        for row, variants in enumerate(self.variants):
            if row in taken or self.items[row].item_id in exclude:
                continue
            best = 0.0
            floor = heap[0][0] if len(heap) == k else -1.0
            for variant in variants:
                best = max(best, containment(query, variant))
                matcher.set_seq1(variant)
                if matcher.real_quick_ratio() > max(best, floor) and matcher.quick_ratio() > max(best, floor):
                    best = max(best, matcher.ratio())
            entry = (best, -row)
            if len(heap) < k:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
        return [(score, -neg_row) for score, neg_row in sorted(heap, reverse=True)]


# ---- the app ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerativeSettings:
    """Where the bundle and the LLM are, and the generation and request limits."""

    bundle_path: Path
    llm_url: str
    model: str
    max_tokens: int = 32
    timeout_s: float = 600.0
    max_history: int = 200
    max_k: int = 100
    default_k: int = 10
    api_key: str | None = None


class Baseline:
    """The catalogue, the title matcher and the verbaliser of one bundle."""

    def __init__(self, catalog: Catalog, verbaliser: Verbaliser):
        self.catalog = catalog
        self.matcher = TitleMatcher(catalog)
        self.verbaliser = verbaliser

    @classmethod
    def load(cls, bundle_path: Path) -> Baseline:
        manifest = B.load_manifest(bundle_path, verify_checksums=False)
        catalog = Catalog.load_jsonl(Path(bundle_path) / B.CATALOG)
        return cls(catalog, manifest.verbaliser)

    def prompt(self, history: str) -> str:
        return f"Watching history (date: movie; categories):\n{history}\n\n{PROMPT}"


def error(status: int, msg: str, loc: list[str | int], reason: str) -> HTTPException:
    """An HTTPException in the service's error shape ``{"detail": [{"loc", "msg", "type"}]}``."""
    return HTTPException(status, detail=[{"loc": loc, "msg": msg, "type": reason}])


def history_of(
    request: RecommendRequest, baseline: Baseline, settings: GenerativeSettings
) -> tuple[str, frozenset[str], list[str]]:
    """``(history text, seen ids to exclude, unknown ids)``, checked like the service checks it."""
    if request.history_text is not None:
        return request.history_text, frozenset(), []
    history = request.history or []
    if len(history) > settings.max_history:
        raise error(
            422, f"history has {len(history)} events; at most {settings.max_history}", ["body", "history"], "history_too_long"
        )
    known = [e for e in history if e.item_id in baseline.catalog]
    unknown = [e.item_id for e in history if e.item_id not in baseline.catalog]
    if not known:
        raise error(422, f"none of the {len(history)} history item ids is in the catalogue", ["body", "history"], "unknown_items")
    events = [HistoryEvent(e.item_id, e.timestamp) for e in known]
    if all(e.timestamp is not None for e in events):
        events.sort(key=lambda e: e.timestamp)  # type: ignore[arg-type, return-value]
    text = baseline.verbaliser.history_text(events, baseline.catalog.__getitem__)
    seen = frozenset(e.item_id for e in known) if request.exclude_seen else frozenset()
    return text, seen, unknown


async def generate(client: httpx.AsyncClient, settings: GenerativeSettings, prompt: str) -> str:
    """One chat completion at temperature 0; 502 when the LLM server fails."""
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": settings.max_tokens,
        "cache_prompt": True,  # llama.cpp: reuse the KV cache of a shared prompt prefix
    }
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise error(502, f"LLM server unreachable: {type(exc).__name__}: {exc}", ["llm"], "llm_unavailable") from exc
    if response.status_code != 200:
        raise error(502, f"LLM server answered {response.status_code}: {response.text[:300]}", ["llm"], "llm_error")
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise error(502, f"unexpected LLM answer: {response.text[:300]}", ["llm"], "llm_error") from exc


def get_baseline(request: Request) -> Baseline:
    return request.app.state.baseline


def get_llm(request: Request) -> httpx.AsyncClient:
    return request.app.state.llm


BaselineDep = Annotated[Baseline, Depends(get_baseline)]
LlmDep = Annotated[httpx.AsyncClient, Depends(get_llm)]


def create_app(settings: GenerativeSettings, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The baseline's FastAPI app; ``transport`` replaces the network (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.baseline = Baseline.load(settings.bundle_path)
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        base_url = settings.llm_url.rstrip("/").removesuffix("/v1")
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=settings.timeout_s, limits=limits, transport=transport
        ) as client:
            app.state.llm = client
            yield

    app = FastAPI(
        title="R2END generative baseline",
        version="1",
        lifespan=lifespan,
        description="An LLM names the next item; the title is matched to the catalogue (SLIM-style baseline).",
    )

    @app.post("/recommend", response_model=RecommendResponse, summary="Top-k items named by the LLM")
    async def recommend(body: RecommendRequest, base: BaselineDep, client: LlmDep) -> RecommendResponse:
        k = body.k if body.k is not None else settings.default_k
        if k > settings.max_k:
            raise error(422, f"k is {k}; at most {settings.max_k}", ["body", "k"], "k_too_large")
        text, seen, unknown = history_of(body, base, settings)
        answer = await generate(client, settings, base.prompt(text))
        ranked = await asyncio.to_thread(base.matcher.rank, answer, k, seen)
        return RecommendResponse(
            items=[ItemOut.from_meta(meta, round(score, 4)) for meta, score in ranked],
            unknown_item_ids=unknown,
            bundle_version=settings.model,
            variant=settings.model,
        )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(client: LlmDep) -> dict[str, str]:
        try:
            ok = (await client.get("/health", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            raise error(503, "LLM server not ready", ["llm"], "llm_unavailable")
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="R2END bundle directory (its catalog.jsonl and manifest)")
    parser.add_argument("--llm-url", required=True, help="llama.cpp / OpenAI-compatible server, e.g. http://127.0.0.1:8088")
    parser.add_argument("--model", required=True, help="model name sent to the LLM server (and reported as bundle_version)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--max-tokens", type=int, default=GenerativeSettings.max_tokens)
    parser.add_argument("--timeout", type=float, default=GenerativeSettings.timeout_s, help="seconds per LLM call")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    import uvicorn

    settings = GenerativeSettings(args.bundle, args.llm_url, args.model, args.max_tokens, args.timeout, api_key=args.api_key)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
