"""Helpers for the teacher tests: a tiny dataset written on the fly and a bounded llama.cpp server."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from locations import REPO

from index.osutil import free_port
from training.teacher.backends.base import GenerationRequest
from training.teacher.backends.openai_http import OpenAIHTTPBackend

TEST_MODEL = "smollm2-135m"
# One llama.cpp thread: with two threads on a 2-core machine that is busy with anything
# else, llama.cpp's spinning thread barrier collapses (measured: 0.9 instead of 33 gen tok/s).
TEST_THREADS = "1"

TITLES = [
    ("Heat (1995)", "Action Crime Thriller"),
    ("Toy Story (1995)", "Animation Children's Comedy"),
    ("Fargo (1996)", "Crime Drama Thriller"),
    ("Clueless (1995)", "Comedy Romance"),
    ("Alien (1979)", "Action Horror Sci-Fi"),
    ("Babe (1995)", "Children's Comedy Drama"),
    ("Casablanca (1942)", "Drama Romance War"),
    ("Vertigo (1958)", "Mystery Thriller"),
    ("Jaws (1975)", "Action Horror"),
    ("Amadeus (1984)", "Drama Mystery"),
]


def subprocess_env() -> dict[str, str]:
    """The environment for project subprocesses: repo on the path, same R2END_HOME."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("R2END_HOME", str(REPO / ".r2end"))
    env.pop("R2END_TEACHER_API_KEY", None)
    env.pop("R2END_TEACHER_DATA", None)
    return env


def write_tiny_recbole(folder: Path, name: str = "ml-tiny", n_users: int = 15, per_user: int = 6, seed: int = 7) -> Path:
    """``<folder>/<name>/<name>.inter`` and ``.item``: ``n_users`` users, distinct histories, 5-core safe.

    User ``u`` watches ``per_user`` of the 10 movies (the least watched so far, in a seeded
    order), so every movie is watched by about ``n_users * per_user / 10`` users and the
    5-core filter keeps everyone as long as that is at least 5.
    """
    directory = folder / name
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    orders: set[tuple[int, ...]] = set()
    counts = [0] * len(TITLES)
    for user in range(1, n_users + 1):
        least = sorted(range(len(TITLES)), key=lambda i: (counts[i], rng.random()))[:per_user]
        while True:
            order = tuple(rng.sample(least, per_user))
            if order not in orders:
                orders.add(order)
                break
        for step, item in enumerate(order):
            counts[item] += 1
            lines.append(f"{user}\t{item + 1}\t4\t{880_000_000 + user * 1000 + step * 86_400}")
    if min(counts) < 5:
        raise AssertionError(f"tiny dataset would lose items to the 5-core filter: {counts}")
    (directory / f"{name}.inter").write_text("\n".join(lines) + "\n")
    item_lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for item, (title, genres) in enumerate(TITLES, start=1):
        item_lines.append(f"{item}\t{title.rsplit(' (', 1)[0]}\t{title[-5:-1]}\t{genres}")
    (directory / f"{name}.item").write_text("\n".join(item_lines) + "\n")
    return directory


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout_s)


def wait_healthy(base_url: str, proc: subprocess.Popen | None = None, timeout_s: float = 90.0) -> None:
    """Block until ``/health`` answers 200 (fail early if the server process died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(base_url + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{base_url} not healthy after {timeout_s} s")


@contextmanager
def llama_server(parallel: int = 2, api_key: str | None = None, log: Path | None = None) -> Iterator[str]:
    """A real llama.cpp server (``python -m training.teacher.server``) on loopback; yields its base URL.

    Always stopped on exit: SIGTERM, then SIGKILL after 10 s.
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "training.teacher.server",
        "--model",
        TEST_MODEL,
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "--threads",
        TEST_THREADS,
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    base_url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        out = stack.enter_context(open(log, "wb")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(base_url, proc)
            yield base_url
        finally:
            stop_process(proc)


def read_lines(path: Path) -> tuple[list[bytes], bytes]:
    """``(complete lines, partial tail)`` of a JSONL file as bytes."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), data[end:]


PROMPT = "List three movie genres, separated by commas."


def request(max_tokens: int = 16, prompt: str = PROMPT) -> GenerationRequest:
    """One short chat request (the tests need an answer, not a good one)."""
    return GenerationRequest([{"role": "user", "content": prompt}], max_tokens=max_tokens)


async def generate(backend: OpenAIHTTPBackend, *requests: GenerationRequest):
    """Send ``requests`` in turn, then close the backend's client (each test makes its own backend)."""
    try:
        return [await backend.generate(r) for r in requests]
    finally:
        await backend.aclose()
