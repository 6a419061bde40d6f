"""Yelp Open Dataset: ``yelp_academic_dataset_review.json`` + ``yelp_academic_dataset_business.json``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from index.catalog import ItemMeta
from training.data.amazon import MAX_CATEGORIES, MAX_REVIEW_CHARS
from training.data.io import as_float, clean_text, iter_json_records, required
from training.data.schema import DataFormatError, Interaction, RawDataset

REVIEW_FILE = "yelp_academic_dataset_review.json"
BUSINESS_FILE = "yelp_academic_dataset_business.json"


def _timestamp(value: str, path: Path, line_no: int) -> int:
    try:
        moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        try:
            moment = datetime.strptime(value, "%Y-%m-%d")
        except (TypeError, ValueError):
            raise DataFormatError(path, line_no, "date", f"expected 'YYYY-MM-DD HH:MM:SS', got {value!r}") from None
    return int(moment.replace(tzinfo=UTC).timestamp())


def load_yelp(directory: Path) -> RawDataset:
    """Reviews become interactions (review text kept); businesses become items."""
    review_path, business_path = directory / REVIEW_FILE, directory / BUSINESS_FILE
    dataset = RawDataset(
        name="yelp",
        items={},
        interactions=[],
        interactions_file=str(review_path),
        items_file=str(business_path),
        item_field="business_id",
    )
    seen_reviews: set[str] = set()
    for line_no, record in iter_json_records(review_path):
        review_id = str(required(record, "review_id", review_path, line_no))
        if review_id in seen_reviews:
            dataset.count_drop("duplicate review_id lines")
            continue
        seen_reviews.add(review_id)
        stars = record.get("stars")
        dataset.interactions.append(
            Interaction(
                user_id=str(required(record, "user_id", review_path, line_no)),
                item_id=str(required(record, "business_id", review_path, line_no)),
                timestamp=_timestamp(required(record, "date", review_path, line_no), review_path, line_no),
                rating=as_float(stars, "stars", review_path, line_no) if stars is not None else None,
                review=clean_text(record.get("text"), MAX_REVIEW_CHARS) or None,
                line=line_no,
            )
        )
    for line_no, record in iter_json_records(business_path):
        business_id = str(required(record, "business_id", business_path, line_no))
        name = clean_text(record.get("name"))
        if not name:
            dataset.note("businesses with no name")
        raw_categories = record.get("categories") or ""
        if not isinstance(raw_categories, str):
            raise DataFormatError(business_path, line_no, "categories", "expected a comma-separated string or null")
        categories = tuple(c.strip() for c in raw_categories.split(",") if c.strip())[:MAX_CATEGORIES]
        place = ", ".join(p for p in (record.get("city"), record.get("state")) if p)
        if business_id in dataset.items:
            dataset.count_drop("duplicate business lines (first kept)")
            continue
        dataset.items[business_id] = ItemMeta(
            item_id=business_id,
            title=name,
            categories=categories,
            extra=(("location", place),) if place else (),
        )
    return dataset
