"""The one shape every dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

from index.catalog import ItemMeta


class DataFormatError(ValueError):
    """Bad input data, naming the file, the line (1-based, 0 = whole file) and the field."""

    def __init__(self, path: object, line: int, field_name: str | None, reason: str):
        self.path = str(path)
        self.line = line
        self.field = field_name
        self.reason = reason
        where = f"{self.path}:{line}" if line else self.path
        what = f" field {field_name!r}:" if field_name else ""
        super().__init__(f"{where}:{what} {reason}")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One timestamped user-item event. ``review`` is kept where the source has text.

    ``line`` is the event's 1-based line in the loader's interactions file (0 = unknown), so
    that a problem found later (an item without metadata) can still name where it came from.
    """

    user_id: str
    item_id: str
    timestamp: int
    rating: float | None = None
    review: str | None = None
    line: int = field(default=0, compare=False)


@dataclass
class RawDataset:
    """What a loader returns: items with metadata and interactions, before any filtering.

    ``dropped`` counts rows the loader skipped on purpose, by reason (for example
    exact duplicate reviews); a loader never drops a row without counting it.
    ``notes`` counts rows kept but patched (missing title, HTML stripped, ...).
    ``interactions_file`` / ``items_file`` and the id fields name the source for messages
    about the data as a whole (see :mod:`training.data.checks`).
    """

    name: str
    items: dict[str, ItemMeta]
    interactions: list[Interaction]
    dropped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    interactions_file: str = ""
    items_file: str = ""
    user_field: str = "user_id"
    item_field: str = "item_id"

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Record ``n`` rows skipped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def note(self, what: str, n: int = 1) -> None:
        """Record ``n`` rows kept but patched (for example an item with no title)."""
        self.notes[what] = self.notes.get(what, 0) + n
