"""File reading helpers shared by the loaders: gzip-aware lines, JSON and Python-literal records."""

from __future__ import annotations

import ast
import gzip
import html
import json
import math
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from training.data.schema import DataFormatError


def require_file(path: Path) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataFormatError` naming it."""
    if not path.is_file():
        raise DataFormatError(path, 0, None, "file not found")
    return path


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a text or ``.gz`` file, newline stripped, blanks skipped."""
    require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding=encoding, newline="") as handle:  # type: ignore[operator]
            for line_no, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line_no, line
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, 0, None, f"not valid {encoding} text ({exc.reason})") from exc
    except (OSError, EOFError) as exc:
        raise DataFormatError(path, 0, None, f"cannot read file ({exc})") from exc


def iter_json_records(path: Path, python_literal: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for JSON Lines, or Python-literal dict lines if asked."""
    for line_no, line in iter_lines(path):
        try:
            record = ast.literal_eval(line) if python_literal else json.loads(line)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
            # TypeError: a literal that is no valid dict ({[1]: 2}); the others: absurdly nested lines
            kind = "Python-literal dict" if python_literal else "JSON"
            raise DataFormatError(path, line_no, None, f"malformed {kind} line ({exc})") from exc
        if not isinstance(record, dict):
            raise DataFormatError(path, line_no, None, f"expected an object, got {type(record).__name__}")
        yield line_no, record


def required(record: dict[str, Any], key: str, path: Path, line_no: int) -> Any:
    """``record[key]``, or a :class:`DataFormatError` naming the missing field."""
    value = record.get(key)
    if value is None or value == "":
        raise DataFormatError(path, line_no, key, "missing required field")
    return value


def as_int(value: Any, field_name: str, path: Path, line_no: int) -> int:
    """Parse an integer (accepts ``"881250949"`` and ``881250949.0``) or raise naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, line_no, field_name, f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise DataFormatError(path, line_no, field_name, f"not a finite number: {value!r}")
    return int(number)


def as_float(value: Any, field_name: str, path: Path, line_no: int) -> float:
    """Parse a finite float (``nan`` and ``inf`` are refused: a rating must compare) or raise naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, line_no, field_name, f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise DataFormatError(path, line_no, field_name, f"not a finite number: {value!r}")
    return number


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


_SPACES = re.compile(r"\s+")


def clean_text(value: Any, max_chars: int | None = None) -> str:
    """Plain text from a string or list of strings that may hold HTML markup and entities."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    parser = _TextExtractor()
    parser.feed(html.unescape(str(value)) if "<" not in str(value) else str(value))
    parser.close()
    text = _SPACES.sub(" ", " ".join(parser.parts)).strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0] + " …"
    return text
