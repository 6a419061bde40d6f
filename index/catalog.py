"""Item metadata and the catalogue: the item side shared by training and serving."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """Text metadata of one item, as every loader produces it.

    Only ``item_id`` and ``title`` are required; the rest is filled where a
    dataset has it (MovieLens: year and genres; Amazon: brand, categories,
    description, price; Yelp: categories and city).
    """

    item_id: str
    title: str
    categories: tuple[str, ...] = ()
    brand: str | None = None
    year: int | None = None
    description: str | None = None
    price: float | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict:
        """A JSON-ready dict (tuples become lists, empty fields dropped)."""
        raw = asdict(self)
        raw["categories"] = list(self.categories)
        raw["extra"] = [list(pair) for pair in self.extra]
        return {k: v for k, v in raw.items() if v not in (None, [], "")}

    @classmethod
    def from_json(cls, raw: dict) -> ItemMeta:
        """Inverse of :meth:`to_json`."""
        return cls(
            item_id=str(raw["item_id"]),
            title=str(raw.get("title") or ""),
            categories=tuple(raw.get("categories") or ()),
            brand=raw.get("brand"),
            year=raw.get("year"),
            description=raw.get("description"),
            price=raw.get("price"),
            extra=tuple(tuple(pair) for pair in raw.get("extra") or ()),
        )


class Catalog:
    """An ordered collection of items: row ``i`` of every item matrix is ``ids[i]``."""

    def __init__(self, items: Iterable[ItemMeta]):
        self._items: list[ItemMeta] = list(items)
        self._row: dict[str, int] = {}
        for row, item in enumerate(self._items):
            if item.item_id in self._row:
                raise ValueError(f"duplicate item id in catalogue: {item.item_id!r}")
            self._row[item.item_id] = row

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ItemMeta]:
        return iter(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def __getitem__(self, item_id: str) -> ItemMeta:
        return self._items[self._row[item_id]]

    @property
    def ids(self) -> list[str]:
        """Item ids in row order."""
        return [item.item_id for item in self._items]

    def row(self, item_id: str) -> int:
        """Row of an item id (KeyError if unknown)."""
        return self._row[item_id]

    def at(self, row: int) -> ItemMeta:
        """Item at a row."""
        return self._items[row]

    def save_jsonl(self, path: Path) -> None:
        """Write one JSON object per line, in row order."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(item.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for item in self._items)

    @classmethod
    def load_jsonl(cls, path: Path) -> Catalog:
        """Read a catalogue written by :meth:`save_jsonl`."""
        items = []
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    items.append(ItemMeta.from_json(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{line_no}: bad catalogue record ({exc})") from exc
        return cls(items)
