"""Turn items and histories into text: the one verbaliser used by training and serving.

The history rule follows the paper's appendix E: up to the ``max_items`` most
recent interactions within ``window_days`` before the reference time, else the
single most recent interaction. Each line carries the date and the item's
metadata (title, year, categories/genres, brand).

The reference time is the most recent history timestamp unless given. Using
the history's own clock (not the target's timestamp) keeps training,
evaluation and serving identical: a live request never knows when the next
interaction will happen, so neither may the offline pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from index.catalog import ItemMeta

SECONDS_PER_DAY = 86_400
DEFAULT_MAX_ITEMS = 8
DEFAULT_WINDOW_DAYS = 60


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One past interaction: an item id and an optional unix timestamp (seconds)."""

    item_id: str
    timestamp: int | None = None


def item_text(item: ItemMeta) -> str:
    """The item's metadata text M_i, e.g. ``Toy Story (1995); Categories: Animation, Comedy``."""
    title = item.title.strip() or item.item_id
    if item.year and str(item.year) not in title:
        title = f"{title} ({item.year})"
    parts = [title]
    if item.categories:
        parts.append("Categories: " + ", ".join(item.categories))
    if item.brand:
        parts.append(f"Brand: {item.brand}")
    return "; ".join(parts)


def select_history(
    events: Sequence[HistoryEvent],
    max_items: int = DEFAULT_MAX_ITEMS,
    window_days: int | None = DEFAULT_WINDOW_DAYS,
    reference_time: int | None = None,
) -> list[HistoryEvent]:
    """Pick the events that the history text shows (input must be chronological).

    Events without timestamps are never windowed: the last ``max_items`` are kept.
    """
    if not events:
        return []
    timestamps = [e.timestamp for e in events if e.timestamp is not None]
    if window_days is None or len(timestamps) != len(events):
        return list(events[-max_items:])
    reference = reference_time if reference_time is not None else max(timestamps)
    start = reference - window_days * SECONDS_PER_DAY
    recent = [e for e in events if start <= e.timestamp <= reference]  # type: ignore[operator]
    if not recent:
        before = [e for e in events if e.timestamp <= reference]  # type: ignore[operator]
        return [(before or list(events))[-1]]
    return recent[-max_items:]


def format_date(timestamp: int) -> str:
    """ISO date (UTC) of a unix timestamp."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d")


def history_text(
    events: Sequence[HistoryEvent],
    lookup: Callable[[str], ItemMeta],
    max_items: int = DEFAULT_MAX_ITEMS,
    window_days: int | None = DEFAULT_WINDOW_DAYS,
    reference_time: int | None = None,
) -> str:
    """The user's history text H_u: one line per selected event, oldest first."""
    lines = []
    for event in select_history(events, max_items, window_days, reference_time):
        text = item_text(lookup(event.item_id))
        if event.timestamp is not None:
            text = f"{format_date(event.timestamp)}: {text}"
        lines.append(text)
    return "\n".join(lines)


def target_text(rationale: str, item: ItemMeta) -> str:
    """The distillation target text R'_u = R_u ⊕ M_{i_{n+1}}."""
    return f"{rationale.strip()}\n{item_text(item)}"


def item_document(description: str | None, item: ItemMeta) -> str:
    """The item text embedded for retrieval: D_i ⊕ M_i (metadata alone if no description)."""
    if description and description.strip():
        return f"{description.strip()}\n{item_text(item)}"
    return item_text(item)
