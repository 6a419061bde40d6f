"""Amazon review datasets, 5-core files, in the 2014 (McAuley) and 2018 (Ni et al.) layouts.

2014: ``reviews_<Cat>_5.json.gz`` (JSON lines) + ``meta_<Cat>.json.gz`` whose lines are
Python-literal dicts (single quotes), read with :func:`ast.literal_eval`, never ``eval``.
2018: ``<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``, both strict JSON lines; descriptions
and categories often hold HTML and entities.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from index.catalog import ItemMeta
from training.data.io import as_float, as_int, clean_text, iter_json_records, required
from training.data.schema import DataFormatError, Interaction, RawDataset

MAX_CATEGORIES = 3
MAX_DESCRIPTION_CHARS = 600
MAX_REVIEW_CHARS = 400
# A price field that is a price: optional currency sign, then the number (a range keeps its low end).
# The 2018 metadata also holds scraped HTML/CSS in "price"; that is not a price and reads as missing.
_PRICE = re.compile(
    r"^\s*(?:US\s*)?[$\u00a3\u20ac]?\s*(\d+(?:\.\d+)?)(?:\s*(?:-|\u2013|to)\s*[$\u00a3\u20ac]?\s*\d+(?:\.\d+)?)?\s*$"
)


def _find(directory: Path, pattern: str, what: str) -> Path:
    matches = sorted(directory.glob(pattern + ".json.gz")) + sorted(directory.glob(pattern + ".json"))
    if len(matches) != 1:
        found = [m.name for m in matches] or "none"
        raise DataFormatError(directory / (pattern + ".json.gz"), 0, None, f"expected exactly one {what} file, found {found}")
    return matches[0]


def _parse_price(value: Any, path: Path, line_no: int) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _PRICE.match(str(value).replace(",", ""))
    return as_float(match.group(1), "price", path, line_no) if match else None


def _specific_categories(paths: list[list[str]], root_names: int = 1) -> tuple[str, ...]:
    """The most specific categories of the longest category path, root level dropped."""
    if not paths:
        return ()
    longest = max(paths, key=len)
    cleaned = [clean_text(c) for c in longest[root_names:] if clean_text(c)] or [clean_text(c) for c in longest]
    return tuple(cleaned[-MAX_CATEGORIES:])


def _read_reviews(path: Path, dataset: RawDataset) -> list[Interaction]:
    interactions = []
    seen: set[tuple] = set()
    for line_no, record in iter_json_records(path):
        user = str(required(record, "reviewerID", path, line_no))
        asin = str(required(record, "asin", path, line_no))
        timestamp = as_int(required(record, "unixReviewTime", path, line_no), "unixReviewTime", path, line_no)
        text = " ".join(p for p in (clean_text(record.get("summary")), clean_text(record.get("reviewText"))) if p)
        fingerprint = (user, asin, timestamp, text)
        if fingerprint in seen:
            dataset.count_drop("duplicate review lines (identical user, item, time, text)")
            continue
        seen.add(fingerprint)
        rating = record.get("overall")
        interactions.append(
            Interaction(
                user_id=user,
                item_id=asin,
                timestamp=timestamp,
                rating=as_float(rating, "overall", path, line_no) if rating is not None else None,
                review=clean_text(text, MAX_REVIEW_CHARS) or None,
                line=line_no,
            )
        )
    return interactions


def _item_from_meta(record: dict[str, Any], path: Path, line_no: int, dataset: RawDataset, layout: str) -> ItemMeta:
    asin = str(required(record, "asin", path, line_no))
    title = clean_text(record.get("title"), 200)
    if not title:
        dataset.note("items with no title in metadata")
    if layout == "2014":
        raw_categories = record.get("categories") or []
        if not isinstance(raw_categories, list) or not all(isinstance(c, list) for c in raw_categories):
            raise DataFormatError(path, line_no, "categories", "expected a list of category paths (lists of strings)")
        categories = _specific_categories(raw_categories)
    else:
        raw_category = record.get("category") or []
        if not isinstance(raw_category, list):
            raise DataFormatError(path, line_no, "category", "expected a list of strings")
        categories = _specific_categories([raw_category])
    description = clean_text(record.get("description"), MAX_DESCRIPTION_CHARS)
    price = _parse_price(record.get("price"), path, line_no)
    if price is None and record.get("price") not in (None, ""):
        dataset.note("prices not parseable, read as missing")
    return ItemMeta(
        item_id=asin,
        title=title,
        categories=categories,
        brand=clean_text(record.get("brand")) or None,
        description=description or None,
        price=price,
    )


def _load(reviews_path: Path, meta_path: Path, layout: str, name: str) -> RawDataset:
    dataset = RawDataset(
        name=name,
        items={},
        interactions=[],
        interactions_file=str(reviews_path),
        items_file=str(meta_path),
        user_field="reviewerID",
        item_field="asin",
    )
    dataset.interactions = _read_reviews(reviews_path, dataset)
    for line_no, record in iter_json_records(meta_path, python_literal=(layout == "2014")):
        item = _item_from_meta(record, meta_path, line_no, dataset, layout)
        if item.item_id in dataset.items:
            dataset.count_drop("duplicate metadata lines (same asin, first kept)")
            continue
        dataset.items[item.item_id] = item
    return dataset


def load_amazon_2014(directory: Path) -> RawDataset:
    """Load ``reviews_<Cat>_5.json(.gz)`` and ``meta_<Cat>.json(.gz)`` from ``directory``.

    ``directory`` may also be the reviews file itself; the metadata is then looked up next to it.
    """
    if directory.is_file():
        reviews, directory = directory, directory.parent
    else:
        reviews = _find(directory, "reviews_*_5", "2014 reviews (reviews_<Cat>_5)")
    category = reviews.name.removeprefix("reviews_").split("_5.json")[0]
    meta = _find(directory, f"meta_{category}", f"2014 metadata (meta_{category})")
    return _load(reviews, meta, "2014", f"amazon14-{category.lower()}")


def load_amazon_2018(directory: Path) -> RawDataset:
    """Load ``<Cat>_5.json(.gz)`` and ``meta_<Cat>.json(.gz)`` from ``directory`` (or given the reviews file)."""
    if directory.is_file():
        candidates, directory = [directory], directory.parent
    else:
        candidates = [p for p in sorted(directory.glob("*_5.json*")) if not p.name.startswith(("meta_", "reviews_"))]
    if len(candidates) != 1:
        raise DataFormatError(
            directory / "<Cat>_5.json.gz",
            0,
            None,
            f"expected exactly one 2018 review file, found {[c.name for c in candidates] or 'none'}",
        )
    reviews = candidates[0]
    category = reviews.name.split("_5.json")[0]
    meta = _find(directory, f"meta_{category}", f"2018 metadata (meta_{category})")
    return _load(reviews, meta, "2018", f"amazon18-{category.lower()}")
