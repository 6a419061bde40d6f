"""TeacherCache: append/refresh/compact semantics, torn tails, and concurrent writers (real processes)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from training.teacher import cache as cache_module
from training.teacher.cache import TeacherCache, cache_key

FORK = mp.get_context("fork")


def rec(key: str, **fields) -> dict:
    return {"key": key, "text": f"text of {key}", **fields}


def lines_of(path: Path) -> list[dict]:
    """Every line of the file parsed; fails on any line that is not a whole JSON record."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "file ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def test_cache_key_is_content_addressed():
    base = cache_key("oracle-v1", "m", {"temperature": 0.0, "max_tokens": 200}, "prompt")
    assert base == cache_key("oracle-v1", "m", {"max_tokens": 200, "temperature": 0.0}, "prompt")  # param order irrelevant
    assert (
        len(
            {
                base,
                cache_key("oracle-v2", "m", {"temperature": 0.0, "max_tokens": 200}, "prompt"),
                cache_key("oracle-v1", "m2", {"temperature": 0.0, "max_tokens": 200}, "prompt"),
                cache_key("oracle-v1", "m", {"temperature": 0.0, "max_tokens": 201}, "prompt"),
                cache_key("oracle-v1", "m", {"temperature": 0.0, "max_tokens": 200}, "prompt "),
            }
        )
        == 5
    )


def test_append_refresh_and_newest_record_wins(tmp_path):
    path = tmp_path / "sub" / "oracle.jsonl"
    writer = TeacherCache(path)  # the folder does not exist yet: created on the first append
    assert len(writer) == 0 and not path.exists()
    reader = TeacherCache(path)
    writer.append(rec("a", n=1))
    writer.append(rec("b", n=1))
    assert "a" in writer and writer.get("b")["n"] == 1  # the writer sees its own appends at once
    assert len(reader) == 0  # a reader only sees new lines after refresh()
    reader.refresh()
    assert {r["key"] for r in reader.records()} == {"a", "b"}
    writer.append(rec("a", n=2))  # a newer record for the same key
    reader.refresh()
    assert len(reader) == 2 and reader.get("a")["n"] == 2
    assert TeacherCache(path).get("a")["n"] == 2  # a fresh reader agrees
    assert len(lines_of(path)) == 3  # append-only until compaction
    with pytest.raises(ValueError):
        writer.append({"text": "no key"})
    assert len(lines_of(path)) == 3


def test_torn_last_line_is_skipped_by_readers_and_cut_by_the_next_append(tmp_path):
    path = tmp_path / "oracle.jsonl"
    writer = TeacherCache(path)
    writer.append(rec("a"))
    writer.append(rec("b"))
    reader = TeacherCache(path)
    whole = (json.dumps(rec("torn", text="x" * 500), sort_keys=True) + "\n").encode()
    with open(path, "ab") as handle:  # what a kill -9 in the middle of a write leaves behind
        handle.write(whole[: len(whole) // 2])
    fresh = TeacherCache(path)
    assert {r["key"] for r in fresh.records()} == {"a", "b"}  # the torn line is not read
    reader.refresh()
    assert len(reader) == 2
    TeacherCache(path).append(rec("c"))  # another writer: cuts the torn tail first
    records = lines_of(path)
    assert [r["key"] for r in records] == ["a", "b", "c"]
    assert b'"torn"' not in path.read_bytes()
    reader.refresh()  # the reader's offset stayed at the end of "b", where "c" now starts
    assert {r["key"] for r in reader.records()} == {"a", "b", "c"}


def test_torn_tail_alone_is_cut(tmp_path):
    path = tmp_path / "oracle.jsonl"
    path.write_bytes(b'{"key": "half')  # a file whose only line is torn
    cache = TeacherCache(path)
    assert len(cache) == 0
    cache.append(rec("a"))
    assert [r["key"] for r in lines_of(path)] == ["a"]


def test_compaction_sorts_by_key_and_keeps_the_newest_record(tmp_path):
    path = tmp_path / "oracle.jsonl"
    cache = TeacherCache(path)
    for key, n in [("d", 1), ("b", 1), ("a", 1), ("b", 2), ("c", 1), ("d", 2), ("b", 3)]:
        cache.append(rec(key, n=n))
    with open(path, "ab") as handle:
        handle.write(b'{"key": "e", "n"')  # and a torn tail
    reader = TeacherCache(path)
    assert cache.compact() == 4
    records = lines_of(path)
    assert [r["key"] for r in records] == ["a", "b", "c", "d"]
    assert [r["n"] for r in records] == [1, 3, 1, 2]
    assert not path.with_suffix(".jsonl.tmp").exists()
    assert cache.compact() == 4 and lines_of(path) == records  # idempotent
    cache.append(rec("aa", n=1))  # appending after compaction goes to the new file
    assert [r["key"] for r in lines_of(path)] == ["a", "b", "c", "d", "aa"]
    reader.refresh()  # a reader that saw the old file notices the replacement and re-reads
    assert {r["key"]: r["n"] for r in reader.records()} == {"a": 1, "b": 3, "c": 1, "d": 2, "aa": 1}
    cache.refresh()
    assert len(cache) == 5


def test_compacting_reader_does_not_skip_a_line_appended_right_after_the_rename(tmp_path, monkeypatch):
    """Another writer may append to the new file before the compactor returns (it does not wait for the
    compactor's lock on the old inode); the compactor's own view must still pick that line up."""
    path = tmp_path / "oracle.jsonl"
    cache = TeacherCache(path)
    cache.append(rec("b"))
    cache.append(rec("a"))
    real_replace = os.replace

    def replace_then_race(src, dst):
        real_replace(src, dst)
        TeacherCache(path).append(rec("racer"))

    monkeypatch.setattr(cache_module.os, "replace", replace_then_race)
    assert cache.compact() == 2
    monkeypatch.setattr(cache_module.os, "replace", real_replace)
    cache.refresh()
    assert {r["key"] for r in cache.records()} == {"a", "b", "racer"}
    assert [r["key"] for r in lines_of(path)] == ["a", "b", "racer"]


def _append_many(path: str, writer: int, count: int, payload: int, start, done) -> None:
    cache = TeacherCache(Path(path))
    start.wait()
    for i in range(count):
        cache.append({"key": f"w{writer}-{i:04d}", "writer": writer, "i": i, "blob": chr(ord("a") + writer) * payload})
    cache.refresh()
    own = sum(k.startswith(f"w{writer}-") for k in (r["key"] for r in cache.records()))
    done.put((writer, own, len(cache)))


def test_two_processes_appending_concurrently_never_interleave(tmp_path):
    path = tmp_path / "oracle.jsonl"
    count, payload = 80, 100_000  # large lines: more than one buffer / page each
    start, done = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=_append_many, args=(str(path), w, count, payload, start, done)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = lines_of(path)  # every line is one whole record
    assert len(records) == 2 * count
    for r in records:
        assert r["blob"] == chr(ord("a") + r["writer"]) * payload  # no bytes of the other writer inside
    for w in (0, 1):
        assert [r["i"] for r in records if r["writer"] == w] == list(range(count))  # each writer's order kept
    views = sorted(done.get(timeout=5) for _ in procs)
    assert [(w, own) for w, own, _ in views] == [(0, count), (1, count)]  # each writer reads back its own lines
    assert max(total for *_, total in views) == 2 * count  # the last to finish sees everything


def test_compaction_while_another_process_appends_loses_nothing(tmp_path):
    path = tmp_path / "oracle.jsonl"
    count = 300
    TeacherCache(path).append({"key": "seed"})
    start, done = FORK.Barrier(2), FORK.Queue()
    child = FORK.Process(target=_append_many, args=(str(path), 0, count, 200, start, done))
    child.start()
    compactor = TeacherCache(path)
    start.wait()
    compactions = 0
    while child.is_alive():
        compactor.compact()
        compactions += 1
    child.join(timeout=60)
    assert child.exitcode == 0
    assert compactions >= 2, "the appender finished before any compaction overlapped it"
    expected = {"seed"} | {f"w0-{i:04d}" for i in range(count)}
    assert {r["key"] for r in lines_of(path)} == expected  # on disk, before a final compaction
    compactor.refresh()
    assert {r["key"] for r in compactor.records()} == expected  # the compactor's own view
    assert done.get(timeout=5) == (0, count, count + 1)  # the appender's view across the replacements
    assert compactor.compact() == count + 1
    assert [r["key"] for r in lines_of(path)] == sorted(expected)
