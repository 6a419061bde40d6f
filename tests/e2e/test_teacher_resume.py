"""The kill test: SIGKILL `r2end teach run` mid-run, check the cache file, resume, check again.

A real local llama.cpp server (SmolLM2-135M, in the CLI's own process) answers real
prompts of a tiny MovieLens-like dataset written by the test; the kill is a SIGKILL
of the whole process group, as an OOM killer or a lost machine would do it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from teacher_util import REPO, TEST_MODEL, TEST_THREADS, read_lines, stop_process, subprocess_env, write_tiny_recbole

from training.data.registry import load_dataset
from training.teacher.runner import task_key
from training.teacher.tasks import build_tasks

N_USERS = 5  # SmolLM2 rambles to the token limit and is retried: ~9 s per task on one thread, so few users
PER_USER = 10  # everyone watches all 10 movies: 5 users keep every movie through the 5-core filter


def parse_all(lines: list[bytes]) -> list[dict]:
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:  # a torn line that is not the last one
            raise AssertionError(f"complete line {n} does not parse: {line[:120]!r}") from exc
    return records


def test_kill_mid_run_then_resume(tmp_path):
    raw = write_tiny_recbole(tmp_path / "raw", n_users=N_USERS, per_user=PER_USER)
    out = tmp_path / "teacher"
    path = out / "ml-tiny" / "oracle.jsonl"
    tasks = build_tasks(load_dataset("ml-tiny", "recbole", raw), "oracle")
    expected = {task_key(t, TEST_MODEL) for t in tasks}
    assert len(expected) == N_USERS
    cmd = [
        sys.executable,
        "-m",
        "training.cli",
        "teach",
        "run",
        "ml-tiny",
        "--format",
        "recbole",
        "--path",
        str(raw),
        "--kinds",
        "oracle",
        "--model",
        TEST_MODEL,
        "--parallel",
        "2",
        "--threads",
        TEST_THREADS,
        "--data-dir",
        str(out),
    ]
    log = tmp_path / "killed-run.log"

    # 1. Run, wait for the first record on disk, SIGKILL the process group mid-run.
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=subprocess_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300  # a guard: a loaded 2-core machine needed > 150 s
            seen: list[bytes] = []
            while time.monotonic() < deadline and proc.poll() is None:
                seen, _ = read_lines(path)
                if seen:
                    break
                time.sleep(0.1)
            assert seen, f"no record on disk before the deadline (exit {proc.poll()}): {log.read_text()[-2000:]}"
            assert proc.poll() is None, "the run finished before it could be killed"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            stop_process(proc)
    assert proc.returncode == -signal.SIGKILL
    reported = {r["key"]: r for r in parse_all(seen)}  # what the run had reported done before the kill

    # 2. The file as the kill left it: whole lines parse, at most one partial tail, no duplicates.
    lines, tail = read_lines(path)
    assert b"\n" not in tail  # by construction: the tail is at most one partial line
    if tail:
        with pytest.raises(json.JSONDecodeError):
            json.loads(tail)
    before_list = parse_all(lines)
    before = {r["key"]: r for r in before_list}
    assert len(before) == len(before_list), "duplicate keys after the kill"
    assert set(before) <= expected
    assert 1 <= len(before) < N_USERS, f"not killed mid-run: {len(before)} of {N_USERS} done"
    for key, record in reported.items():
        assert before[key] == record
    assert len({r["run"] for r in before_list}) == 1

    # Whatever the kill left, also leave the worst case: half a record without its newline.
    fake = json.dumps({**before_list[0], "key": "f" * 64, "text": "torn " * 40}, sort_keys=True).encode()
    with open(path, "ab") as handle:
        handle.write(fake[: len(fake) // 2])

    # 3. Resume to completion.
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, check=False, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = re.sub(r"\s+", "", done.stdout)
    assert f"skipped_cached={len(before)}," in summary, done.stdout[-1500:]
    assert f"submitted={N_USERS - len(before)}," in summary, done.stdout[-1500:]  # nothing done twice

    # 4. One record per task, nothing lost or changed, nothing torn.
    lines, tail = read_lines(path)
    assert tail == b""
    after_list = parse_all(lines)
    keys = [r["key"] for r in after_list]
    assert len(keys) == len(set(keys)), "duplicate keys after the resume"
    assert set(keys) == expected  # every task exactly once; the torn fake is gone
    after = {r["key"]: r for r in after_list}
    for key, record in before.items():
        assert after[key] == record, f"record {key[:12]} changed by the resume"
    new_runs = {after[k]["run"] for k in expected - set(before)}
    assert len(new_runs) == 1 and new_runs.isdisjoint({r["run"] for r in before_list})
    assert keys == sorted(keys)  # compacted at the end of the run
    assert all(r["status"] in ("ok", "flagged") and r["model"] == TEST_MODEL for r in after_list)
