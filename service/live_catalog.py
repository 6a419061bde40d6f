"""Item metadata by id and by index row, changeable at run time (live items).

Rows are the FAISS ids: the bundle's items keep rows ``0..n-1``; a new live item gets the
next unused row; a replaced item keeps its row; a deleted item's row is retired. Not
thread-safe on its own: :class:`service.model.ServingModel` guards it with its lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from index.catalog import Catalog, ItemMeta


class LiveCatalog:
    """A mutable id <-> row <-> :class:`ItemMeta` map seeded from a bundle's catalogue."""

    def __init__(self, catalog: Catalog):
        self._by_row: dict[int, ItemMeta] = {row: item for row, item in enumerate(catalog)}
        self._row: dict[str, int] = {item.item_id: row for row, item in self._by_row.items()}
        self._next_row = len(self._by_row)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def __iter__(self) -> Iterator[ItemMeta]:
        return iter(list(self._by_row.values()))

    def get(self, item_id: str) -> ItemMeta | None:
        """Lock-free read (each dict lookup is atomic; an item removed meanwhile reads as None)."""
        row = self._row.get(item_id)
        return None if row is None else self._by_row.get(row)

    def row(self, item_id: str) -> int | None:
        return self._row.get(item_id)

    def at(self, row: int) -> ItemMeta | None:
        return self._by_row.get(row)

    def row_for(self, item_id: str) -> int:
        """The row ``item_id`` has, or would get from :meth:`put`."""
        row = self._row.get(item_id)
        return self._next_row if row is None else row

    def put(self, item: ItemMeta) -> tuple[int, bool]:
        """Add or replace ``item``; returns ``(row, created)``."""
        row = self._row.get(item.item_id)
        created = row is None
        if row is None:
            row = self._next_row
            self._next_row += 1
            self._row[item.item_id] = row
        self._by_row[row] = item
        return row, created

    def remove(self, item_id: str) -> int | None:
        """Forget ``item_id``; returns its (now retired) row, or None if it was unknown."""
        row = self._row.pop(item_id, None)
        if row is not None:
            del self._by_row[row]
        return row
