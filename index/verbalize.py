"""Turn items and histories into text: the one verbaliser used by training and serving.

The history rule (:class:`Verbaliser`) follows the paper's appendix E: up to the
``max_items`` most recent interactions within ``window_days`` before the reference
time, else the single most recent interaction. Each line carries the date and the
item's metadata (title, year, categories/genres, brand).

The reference time is the most recent history timestamp unless given. Using
the history's own clock (not the target's timestamp) keeps training,
evaluation and serving identical: a live request never knows when the next
interaction will happen, so neither may the offline pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from index.catalog import ItemMeta

SECONDS_PER_DAY = 86_400


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


def format_date(timestamp: int) -> str:
    """ISO date (UTC) of a unix timestamp."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


class Verbaliser(BaseModel):
    """How a history becomes the text H_u: the one object training, export and every reader share.

    The training config holds it, export writes it into the bundle's manifest, and the service,
    the bundle scorer and the generative baseline call :meth:`history_text` on the manifest's
    copy, so offline and online text cannot drift apart. The defaults are the paper's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_items: int = Field(8, ge=1, description="most recent interactions shown")
    window_days: int | None = Field(
        60, ge=0, description="only interactions this many days before the reference time; None = no window"
    )
    format: Literal["dated-lines", "lines"] = Field(
        "dated-lines", description="one line per interaction, oldest first: 'YYYY-MM-DD: M_i' (dated-lines) or 'M_i' (lines)"
    )

    def select(self, events: Sequence[HistoryEvent], reference_time: int | None = None) -> list[HistoryEvent]:
        """The events the history text shows (input must be chronological).

        Events without timestamps are never windowed: the last ``max_items`` are kept.
        """
        if not events:
            return []
        timestamps = [e.timestamp for e in events if e.timestamp is not None]
        if self.window_days is None or len(timestamps) != len(events):
            return list(events[-self.max_items :])
        reference = reference_time if reference_time is not None else max(timestamps)
        start = reference - self.window_days * SECONDS_PER_DAY
        recent = [e for e in events if start <= e.timestamp <= reference]  # type: ignore[operator]
        if not recent:
            before = [e for e in events if e.timestamp <= reference]  # type: ignore[operator]
            return [(before or list(events))[-1]]
        return recent[-self.max_items :]

    def history_text(
        self, events: Sequence[HistoryEvent], lookup: Callable[[str], ItemMeta], reference_time: int | None = None
    ) -> str:
        """The user's history text H_u: one line per selected event, oldest first."""
        lines = []
        for event in self.select(events, reference_time):
            text = item_text(lookup(event.item_id))
            if self.format == "dated-lines" and event.timestamp is not None:
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
