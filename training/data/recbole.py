"""RecBole atomic files: ``<name>.inter`` and ``<name>.item`` (tab-separated, typed headers).

Headers look like ``user_id:token  item_id:token  rating:float  timestamp:float``.
Only the data format is read; no RecBole code is used.
"""

from __future__ import annotations

from pathlib import Path

from index.catalog import ItemMeta
from training.data.io import as_float, as_int, iter_lines
from training.data.schema import DataFormatError, Interaction, RawDataset

TITLE_FIELDS = ("movie_title", "title", "name", "item_name")
YEAR_FIELDS = ("release_year", "year")
CATEGORY_FIELDS = ("class", "genre", "categories", "category", "genres")


def _read_table(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    lines = iter_lines(path)
    try:
        header_no, header_line = next(lines)
    except StopIteration:
        raise DataFormatError(path, 1, None, "empty file: no header") from None
    names = [column.split(":", 1)[0] for column in header_line.split("\t")]
    for name in required:
        if name not in names:
            raise DataFormatError(path, header_no, name, f"missing column (header has {names})")
    rows = []
    for line_no, line in lines:
        values = line.split("\t")
        if len(values) != len(names):
            raise DataFormatError(path, line_no, None, f"expected {len(names)} tab-separated values, got {len(values)}")
        rows.append((line_no, values))
    return names, rows


def _first(row: dict[str, str], fields: tuple[str, ...]) -> str | None:
    for name in fields:
        if row.get(name, "").strip():
            return row[name].strip()
    return None


def load_recbole(directory: Path, name: str | None = None) -> RawDataset:
    """Load ``<dir>/<name>.inter`` and, if present, ``<dir>/<name>.item``."""
    name = name or directory.name
    inter_path = directory / f"{name}.inter"
    names, rows = _read_table(inter_path, ("user_id", "item_id", "timestamp"))
    interactions = []
    for line_no, values in rows:
        row = dict(zip(names, values, strict=True))
        for key in ("user_id", "item_id"):
            if not row[key].strip():
                raise DataFormatError(inter_path, line_no, key, "empty value")
        interactions.append(
            Interaction(
                user_id=row["user_id"],
                item_id=row["item_id"],
                timestamp=as_int(row["timestamp"], "timestamp", inter_path, line_no),
                rating=as_float(row["rating"], "rating", inter_path, line_no) if row.get("rating") else None,
                line=line_no,
            )
        )
    item_path = directory / f"{name}.item"
    dataset = RawDataset(
        name=name, items={}, interactions=interactions, interactions_file=str(inter_path), items_file=str(item_path)
    )
    items = dataset.items
    if item_path.exists():
        names, rows = _read_table(item_path, ("item_id",))
        for line_no, values in rows:
            row = dict(zip(names, values, strict=True))
            item_id = row["item_id"]
            if item_id in items:
                raise DataFormatError(item_path, line_no, "item_id", f"duplicate item id {item_id!r}")
            year = _first(row, YEAR_FIELDS)
            if year and not year.replace(".", "", 1).isdigit():
                dataset.note("non-numeric release years read as missing")
                year = None
            categories = _first(row, CATEGORY_FIELDS)
            price = row.get("price", "").strip()
            items[item_id] = ItemMeta(
                item_id=item_id,
                title=_first(row, TITLE_FIELDS) or "",
                year=as_int(year, "release_year", item_path, line_no) if year else None,
                categories=tuple(categories.split()) if categories else (),
                brand=row.get("brand") or None,
                description=row.get("description") or None,
                price=as_float(price, "price", item_path, line_no) if price else None,
            )
    return dataset
