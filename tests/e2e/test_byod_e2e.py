"""Bring your own data (issue #17), end to end in every raw format, teacher-free: raw files ->
``r2end data add`` -> ``r2end train --dataset NAME`` (the text path: ``rationale=item``,
``item_text=metadata``) -> bundle -> ``r2end evaluate`` -> the service loads the bundle and answers.

Every step is the documented command, run in-process (one interpreter: torch is imported once).
To stay within CI's budget the encoder is a tiny randomly initialised BERT (1 layer, 32 wide, with
all-MiniLM-L6-v2's tokenizer) built once per session: every stage runs for real (distillation,
projection, ONNX export and int8 quantisation, FAISS, ONNX Runtime in the service), only on a model
too small to mean anything. The real encoder on this path is covered by tests/e2e/test_r2end_e2e.py and
the service tests' tiny bundle; docs/TUTORIAL.md runs it on the bookshop data set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from byod_util import FORMATS, expected
from cli_util import r2end_in_process
from encoder_util import build_tiny_encoder
from locations import FIXTURES

TEXT_PATH = ["--set", "rationale=item", "--set", "item_text=metadata"]  # ablation 3's settings: no teacher data


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A sentence-transformers folder: 1-layer BERT (hidden 32) with MiniLM's tokenizer, mean pooling, normalisation."""
    return build_tiny_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One R2END_HOME for the module: records, runs, bundles and results of the added datasets."""
    path = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("R2END_HOME", "R2END_TEACHER_DATA")}
    os.environ["R2END_HOME"] = str(path)
    os.environ.pop("R2END_TEACHER_DATA", None)
    try:
        yield path
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


TRAINED: dict[str, tuple[str, Path, dict]] = {}


def add_and_train(fmt: str, tiny_encoder: Path) -> tuple[str, Path, dict]:
    """``r2end data add my-<fmt>`` and ``r2end train --dataset my-<fmt>`` on the text path (once per format)."""
    if fmt not in TRAINED:
        name = f"my-{fmt}"
        r2end_in_process("data", "add", name, "--format", fmt, "--path", str(FIXTURES / FORMATS[fmt]))
        summary = json.loads(
            r2end_in_process(
                "train",
                "--dataset",
                name,
                "--variant",
                "text",
                *TEXT_PATH,
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "projection_epochs=1",
                "--set",
                "max_seq_length=64",
                "--set",
                "threads=1",
            )
        )
        TRAINED[fmt] = (name, Path(summary["bundle"]), summary)
    return TRAINED[fmt]


def wait_ready(is_ready) -> None:
    """Poll ``is_ready()`` until True; the machine may be busy, so the limit is R2END_TEST_STARTUP_TIMEOUT (default 120 s)."""
    import time

    deadline = time.monotonic() + float(os.environ.get("R2END_TEST_STARTUP_TIMEOUT", "120"))
    while not is_ready():
        assert time.monotonic() < deadline, "the service did not become ready"
        time.sleep(0.2)  # poll interval, not synchronisation


def a_test_history(ds) -> list[dict]:
    history, _target = ds.example(0, "test")
    return [{"item_id": ds.catalog.at(row).item_id, "timestamp": ts} for row, ts in history]


def check_answer(body: dict, ds, events: list[dict], k: int) -> None:
    items = [item["item_id"] for item in body["items"]]
    assert len(items) == k and set(items) <= set(ds.catalog.ids)
    assert not set(items) & {e["item_id"] for e in events}  # seen items are left out
    assert body["unknown_item_ids"] == []
    first = body["items"][0]
    assert first["title"] == ds.catalog[first["item_id"]].title  # the format's metadata reached the served catalogue


@pytest.mark.parametrize("fmt", FORMATS)
def test_raw_files_to_a_served_bundle(fmt, home, tiny_encoder):
    from fastapi.testclient import TestClient

    from index import bundle as B
    from service.app import create_app
    from service.settings import ServiceSettings
    from training.data.registry import load_dataset

    name, bundle, summary = add_and_train(fmt, tiny_encoder)
    want = expected(FORMATS[fmt])
    assert bundle == home / "bundles" / name / "text"
    assert summary["complete"] and summary["teacher"] == "no teacher data used"
    assert Path(summary["result"]) == home / "results" / name / "text.json"  # never among the committed results
    manifest = B.load_manifest(bundle)  # checksums verified
    ds = load_dataset(name)
    assert (manifest.dataset, manifest.split_hash, manifest.n_items) == (name, ds.split_hash, want["items"])

    evaluated = r2end_in_process("evaluate", str(bundle))
    onnx_result = home / "results" / name / "text-onnx-fp32.json"
    assert str(onnx_result) in evaluated.replace("\n", "")
    record = json.loads(onnx_result.read_text())
    assert record["n_test_users"] == want["users"] and record["split_hash"] == ds.split_hash

    events = a_test_history(ds)
    settings = ServiceSettings(bundle_path=bundle, item_log_path=home / f"{name}.items.jsonl", onnx_threads=1, warmup=False)
    with TestClient(create_app(settings)) as client:
        wait_ready(lambda: client.get("/readyz").status_code == 200)  # the bundle loads in the background
        answer = client.post("/recommend", json={"history": events, "k": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["bundle_version"] == manifest.bundle_version
    check_answer(answer.json(), ds, events, 5)


def test_serve_and_report_take_the_dataset_name(home, tiny_encoder, tmp_path):
    """`r2end serve --dataset NAME --variant V` (a real server process) and `r2end report --dataset NAME`;
    the tutorial's step 5: recommend, then a credentialed PUT /items of a new item, recommendable at once."""
    import subprocess
    import sys

    import httpx

    from index.osutil import free_port
    from loadtest.procs import child_env, terminate
    from training.data.registry import load_dataset

    name, _, _ = add_and_train("recbole", tiny_encoder)
    table = r2end_in_process("report", "--dataset", name)
    assert "| text |" in table and f"wrote {home / 'results' / (name + '.md')}" in table.replace("\n", "")
    port = free_port()
    env = child_env(
        R2END_HOME=home,
        R2END_ONNX_THREADS=1,
        R2END_WARMUP="false",
        R2END_ITEM_LOG_PATH=tmp_path / "items.jsonl",
        R2END_WRITE_TOKEN="tutorial-secret",
    )
    command = [sys.executable, "-m", "training.cli", "serve", "--dataset", name, "--variant", "text", "--port", str(port)]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def ready() -> bool:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_ready(ready)
            ds = load_dataset(name)
            events = a_test_history(ds)
            answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"history": events, "k": 3}, timeout=30)
            assert answer.status_code == 200, answer.text
            check_answer(answer.json(), ds, events, 3)
            book = {
                "title": "The Keeper of the Last Lighthouse",
                "year": 2026,
                "categories": ["Mystery"],
                "description": "A new book.",
            }
            put = httpx.put(
                f"http://127.0.0.1:{port}/items/new-book",
                json=book,
                headers={"Authorization": "Bearer tutorial-secret"},
                timeout=30,
            )
            assert put.status_code == 201 and put.json()["created"] is True, put.text
            everything = httpx.post(
                f"http://127.0.0.1:{port}/recommend", json={"history": events, "k": len(ds.catalog.ids) + 1}, timeout=30
            )
            assert everything.status_code == 200, everything.text
            ranked = [item["item_id"] for item in everything.json()["items"]]
            assert "new-book" in ranked and len(ranked) == len(ds.catalog.ids) + 1 - len({e["item_id"] for e in events})
        finally:
            terminate(server)


def test_serve_dataset_without_a_bundle_is_one_clean_line(home, tmp_path):
    import subprocess
    import sys

    from loadtest.procs import child_env

    env = child_env(R2END_HOME=home)
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--dataset", "nothing-here", "--variant", "text"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        f"error: {home / 'bundles' / 'nothing-here' / 'text'}: no bundle; run `r2end train --dataset nothing-here --variant text` first"
        in result.stdout
    )
