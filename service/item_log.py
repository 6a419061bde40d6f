"""The durable log of live item changes: one JSON line per PUT/DELETE, fsynced before the answer.

The log belongs to the deployment, not to a bundle: it is replayed by item id into every
bundle that is loaded (at start and on reload), so items added live survive restarts and
bundle swaps. A torn last line (a crash mid-write, never acknowledged) is cut off on open.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from index.catalog import ItemMeta
from index.osutil import fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ItemChangeRecord:
    """One change: ``put`` carries the full metadata (with the description D_i), ``delete`` only the id."""

    op: Literal["put", "delete"]
    item_id: str
    item: ItemMeta | None = None

    def to_line(self) -> str:
        record: dict = {"op": self.op, "item_id": self.item_id, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.item is not None:
            record["item"] = self.item.to_json()
        return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"

    @classmethod
    def from_line(cls, line: str) -> ItemChangeRecord:
        raw = json.loads(line)
        op, item_id = raw["op"], str(raw["item_id"])
        if op == "put":
            item = ItemMeta.from_json({**raw["item"], "item_id": item_id})
            return cls("put", item_id, item)
        if op == "delete":
            return cls("delete", item_id)
        raise ValueError(f"unknown op {op!r}")


def fold(changes: list[ItemChangeRecord]) -> list[ItemChangeRecord]:
    """The last change per item id (what replaying all of them in order amounts to)."""
    last: dict[str, ItemChangeRecord] = {}
    for change in changes:
        last.pop(change.item_id, None)
        last[change.item_id] = change
    return list(last.values())


class ItemLog:
    """Append-only JSON-lines file; :meth:`append` returns only once the line is on disk."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle: io.BufferedWriter | None = None

    def repair(self) -> int:
        """Cut a torn (unterminated) last line; returns the bytes removed."""
        if not self.path.is_file():
            return 0
        with self._lock, open(self.path, "r+b") as handle:
            data = handle.read()
            if not data or data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            log.warning("%s: cut a torn last line (%d bytes, never acknowledged)", self.path, len(data) - keep)
            return len(data) - keep

    def read(self, offset: int = 0) -> tuple[list[ItemChangeRecord], int]:
        """Changes in complete lines from byte ``offset`` on, and the offset after them."""
        if not self.path.is_file():
            return [], offset
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        changes = []
        for number, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                changes.append(ItemChangeRecord.from_line(line))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: skipping unreadable change at line %d after offset %d (%s)", self.path, number, offset, exc)
        return changes, offset + end

    def append(self, change: ItemChangeRecord) -> None:
        """Write one line, flush and fsync (the directory too when the file is new)."""
        line = change.to_line().encode("utf-8")
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                new = not self.path.exists()
                self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open across appends; close() closes it
                if new:
                    fsync_dir(self.path.parent)
            start = self._handle.tell()
            try:
                self._handle.write(line)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError:
                self._undo(start)
                raise

    def _undo(self, size: int) -> None:
        """After a failed write (e.g. disk full): drop the partial line so the next one starts clean."""
        try:
            self._handle.truncate(size)  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self._handle.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self._handle = None

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
