"""Content-addressed, append-only teacher cache in JSON Lines.

* One record per line, keyed by ``sha256(template version, model id, params, prompt)``.
* Appends are written whole, flushed and fsync'ed before a record counts as done,
  under an exclusive ``flock`` so two writers never interleave.
* A kill -9 can leave at most one partial last line; readers skip it and the next
  writer cuts it off before appending, so no torn record is ever read back.
* :meth:`TeacherCache.compact` rewrites the file sorted by key (one line per key,
  the newest record wins) through a temp file and an atomic rename: the committed
  form diffs and merges well in git.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from index.osutil import fsync_dir


def cache_key(template_version: str, model_id: str, params: dict[str, Any], prompt: str) -> str:
    """The content address of one generation request."""
    blob = json.dumps(
        {"template": template_version, "model": model_id, "params": params, "prompt": prompt},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class TeacherCache:
    """The records of one JSONL file, readable while another process appends."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self._inode: int | None = None
        self.refresh()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        """The newest record for ``key``, or None."""
        return self._records.get(key)

    def records(self) -> list[dict[str, Any]]:
        """All current records (newest per key)."""
        return list(self._records.values())

    def refresh(self) -> None:
        """Read whatever complete lines were appended since the last read."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_ino != self._inode or stat.st_size < self._offset:  # replaced by compact()
                self._records.clear()
                self._offset = 0
                self._inode = stat.st_ino
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # ignore a trailing partial line (a torn write)
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line followed by later appends; repaired on the next write
            if isinstance(record, dict) and "key" in record:
                self._records[record["key"]] = record
        self._offset += end

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The file, opened for append and exclusively locked (re-opened if compact() replaced it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+b")  # noqa: SIM115 - returned locked; the caller's context closes it
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                break
            handle.close()  # we locked a file that was just replaced: lock the new one
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    @staticmethod
    def _cut_partial_tail(handle: Any) -> None:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        """Durably add one record (must carry ``key``); returns once it is on disk."""
        if "key" not in record:
            raise ValueError("a cache record needs a 'key'")
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._locked() as handle:
            self._cut_partial_tail(handle)
            handle.seek(0, os.SEEK_END)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.refresh()

    def compact(self) -> int:
        """Rewrite the file sorted by key, newest record per key; returns the number of records."""
        with self._locked():
            self._offset = 0
            self._records.clear()
            self.refresh()
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            written = 0
            with open(tmp, "wb") as out:
                for key in sorted(self._records):
                    written += out.write(
                        (json.dumps(self._records[key], ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
                    )
                out.flush()
                os.fsync(out.fileno())
                inode = os.fstat(out.fileno()).st_ino
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
            # What this reader has seen is exactly what it wrote: another process may append to the
            # new file as soon as it is renamed (it does not wait for our lock on the old inode), so
            # stat() here could already count a line that was never read into _records.
            self._offset = written
            self._inode = inode
        return len(self._records)
