"""A validated request turned into what the model needs: the history text, the seen items and k.

Checks here are the ones that depend on settings or on the catalogue (the static ones are
in :mod:`service.schemas`); each failure is a 422 naming the field.

A history is prepared the way training prepared its sequences: unknown ids are dropped (and
reported), events are put in time order (:func:`chronological`), and a repeated item keeps only
its earliest event (:func:`first_occurrences`, the rule of ``training.data.preprocess.deduplicate``).
Any length the body limit allows is accepted; the model reads the most recent events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from index.verbalize import HistoryEvent
from service.errors import Loc, ServiceError
from service.model import ServingModel
from service.schemas import RecommendRequest
from service.settings import ServiceSettings

MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Query:
    """One user's encode + search job."""

    text: str
    k: int
    exclude: frozenset[str]
    unknown_item_ids: tuple[str, ...]
    history_rows: tuple[int, ...] = ()
    """Catalogue rows of the known history items, oldest first (used by an R2END+CF history tower)."""
    history_used: int | None = None
    """How many of the most recent history events the model reads (None for a free-text history)."""
    include_metadata: bool = True
    new_item_bias: float | None = None
    """R2END-Hybrid bundles: this request's new-item bias b (None: the bundle's)."""


def build_query(request: RecommendRequest, model: ServingModel, settings: ServiceSettings, loc: Loc = ("body",)) -> Query:
    """Check ``request`` against the limits and the catalogue and verbalise its history."""
    loc = tuple(loc)
    if request.new_item_bias is not None and model.hybrid is None:
        raise ServiceError(
            422,
            f"new_item_bias applies to R2END-Hybrid bundles only; the served bundle is variant {model.manifest.variant!r}, "
            "which ranks new items like any other (leave new_item_bias out)",
            loc + ("new_item_bias",),
            "not_hybrid",
        )
    k = request.k if request.k is not None else settings.default_k
    if k > settings.max_k:
        raise ServiceError(422, f"k is {k}; at most {settings.max_k} (R2END_MAX_K)", loc + ("k",), "k_too_large")
    if request.history_text is not None:
        if len(request.history_text) > settings.max_history_text_chars:
            raise ServiceError(
                422,
                f"history_text has {len(request.history_text)} characters; at most {settings.max_history_text_chars}",
                loc + ("history_text",),
                "history_too_long",
            )
        return Query(
            request.history_text,
            k,
            frozenset(),
            (),
            include_metadata=request.include_metadata,
            new_item_bias=request.new_item_bias,
        )
    history = request.history or []
    limit = settings.history_limit
    if len(history) > limit:
        raise ServiceError(
            422, f"history has {len(history)} events; at most {limit} (R2END_MAX_HISTORY)", loc + ("history",), "history_too_long"
        )
    items = {event.item_id: meta for event in history if (meta := model.get(event.item_id)) is not None}
    unknown = tuple(dict.fromkeys(event.item_id for event in history if event.item_id not in items))
    if not items:
        raise ServiceError(
            422,
            f"none of the {len(history)} history item ids is in the catalogue: {list(unknown[:MAX_LISTED])}",
            loc + ("history",),
            "unknown_items",
        )
    events = first_occurrences(chronological([HistoryEvent(e.item_id, e.timestamp) for e in history if e.item_id in items]))
    text = model.history_text(events, items)
    exclude = frozenset(items) if request.exclude_seen else frozenset()
    rows = tuple(row for event in events if (row := model.catalog.row(event.item_id)) is not None)
    return Query(
        text, k, exclude, unknown, rows, model.events_read(events, rows), request.include_metadata, request.new_item_bias
    )


def first_occurrences(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """Each item once, at its first event in ``events`` (chronological: its earliest).

    Training counted a (user, item) pair once, at its earliest timestamp
    (``training.data.preprocess.deduplicate``), so a re-watch or repeat purchase is read as the
    model saw it: the item where it first appeared. ``tests/unit/test_service_query.py`` checks
    that both rules agree.
    """
    seen: set[str] = set()
    kept = []
    for event in events:
        if event.item_id not in seen:
            seen.add(event.item_id)
            kept.append(event)
    return kept


def chronological(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """Sorted by timestamp (stable) when every event has one; else in the order given (oldest first)."""
    if all(event.timestamp is not None for event in events):
        return sorted(events, key=lambda event: event.timestamp)  # type: ignore[arg-type, return-value]
    return list(events)
