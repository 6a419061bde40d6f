"""MovieLens in its GroupLens layouts: 100K (``u.data``/``u.item``), 1M (``ratings.dat``/``movies.dat``)
and "latest" (``ratings.csv``/``movies.csv``). The embedded copies ship as RecBole atomic files
(see :mod:`training.data.recbole`); these loaders read the official archives."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from index.catalog import ItemMeta
from training.data.io import as_float, as_int, iter_lines, require_file
from training.data.schema import DataFormatError, Interaction, RawDataset

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def split_title_year(raw_title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; titles without a year are kept whole."""
    match = _TITLE_YEAR.match(raw_title.strip())
    if match:
        return match.group("title"), int(match.group("year"))
    return raw_title.strip(), None


def _split(path: Path, line_no: int, line: str, sep: str, fields: tuple[str, ...]) -> dict[str, str]:
    values = line.split(sep)
    if len(values) != len(fields):
        missing = fields[len(values)] if len(values) < len(fields) else None
        raise DataFormatError(path, line_no, missing, f"expected {len(fields)} {sep!r}-separated fields, got {len(values)}")
    return dict(zip(fields, values, strict=True))


def _interaction(path: Path, line_no: int, row: dict[str, str], user: str, item: str, rating: str, ts: str) -> Interaction:
    for key in (user, item):
        if not row[key].strip():
            raise DataFormatError(path, line_no, key, "empty value")
    return Interaction(
        user_id=row[user].strip(),
        item_id=row[item].strip(),
        timestamp=as_int(row[ts], ts, path, line_no),
        rating=as_float(row[rating], rating, path, line_no),
        line=line_no,
    )


def load_ml100k(directory: Path) -> RawDataset:
    """GroupLens ml-100k: ``u.data`` (tab-separated) and ``u.item`` (pipe-separated, latin-1)."""
    data_path, item_path = directory / "u.data", directory / "u.item"
    fields = ("user_id", "item_id", "rating", "timestamp")
    interactions = [
        _interaction(data_path, n, _split(data_path, n, line, "\t", fields), *fields) for n, line in iter_lines(data_path)
    ]
    items: dict[str, ItemMeta] = {}
    item_fields = ("movie_id", "title", "release_date", "video_release_date", "url") + ML100K_GENRES
    for n, line in iter_lines(item_path, encoding="latin-1"):
        row = _split(item_path, n, line, "|", item_fields)
        title, year = split_title_year(row["title"])
        genres = tuple(g for g in ML100K_GENRES if row[g].strip() == "1")
        items[row["movie_id"]] = ItemMeta(item_id=row["movie_id"], title=title, year=year, categories=genres)
    return RawDataset("ml-100k", items, interactions, interactions_file=str(data_path), items_file=str(item_path))


def load_ml1m(directory: Path) -> RawDataset:
    """GroupLens ml-1m: ``ratings.dat`` and ``movies.dat`` (``::``-separated, latin-1)."""
    ratings_path, movies_path = directory / "ratings.dat", directory / "movies.dat"
    fields = ("user_id", "movie_id", "rating", "timestamp")
    interactions = [
        _interaction(ratings_path, n, _split(ratings_path, n, line, "::", fields), *fields)
        for n, line in iter_lines(ratings_path, encoding="latin-1")
    ]
    items = {}
    for n, line in iter_lines(movies_path, encoding="latin-1"):
        row = _split(movies_path, n, line, "::", ("movie_id", "title", "genres"))
        title, year = split_title_year(row["title"])
        items[row["movie_id"]] = ItemMeta(row["movie_id"], title, tuple(row["genres"].split("|")), year=year)
    return RawDataset(
        "ml-1m", items, interactions, interactions_file=str(ratings_path), items_file=str(movies_path), item_field="movie_id"
    )


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    require_file(path)
    with open(
        path, encoding="utf-8-sig", newline=""
    ) as handle:  # -sig: a spreadsheet's byte-order mark is not part of the header
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for name in required:
            if name not in header:
                raise DataFormatError(path, 1, name, f"missing column (header has {header})")
        rows = []
        try:
            for row in reader:
                if None in row or any(row[name] is None for name in required):
                    raise DataFormatError(path, reader.line_num, None, "wrong number of CSV columns")
                rows.append((reader.line_num, row))
        except csv.Error as exc:
            raise DataFormatError(path, reader.line_num, None, f"malformed CSV ({exc})") from exc
    return rows


def load_ml_latest(directory: Path, name: str = "ml-latest") -> RawDataset:
    """MovieLens "latest" CSV layout: ``ratings.csv`` and ``movies.csv`` (genres ``|``-separated)."""
    ratings_path, movies_path = directory / "ratings.csv", directory / "movies.csv"
    interactions = [
        _interaction(ratings_path, n, row, "userId", "movieId", "rating", "timestamp")
        for n, row in _read_csv(ratings_path, ("userId", "movieId", "rating", "timestamp"))
    ]
    items = {}
    for n, row in _read_csv(movies_path, ("movieId", "title", "genres")):
        title, year = split_title_year(row["title"])
        genres = tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)")
        items[row["movieId"]] = ItemMeta(row["movieId"], title, genres, year=year)
    return RawDataset(
        name,
        items,
        interactions,
        interactions_file=str(ratings_path),
        items_file=str(movies_path),
        user_field="userId",
        item_field="movieId",
    )
