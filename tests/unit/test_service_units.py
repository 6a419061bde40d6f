"""Service parts in isolation: length grouping, the batcher, the item log, settings, import boundaries."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from service_util import REPO, service_env

from index.catalog import Catalog, ItemMeta
from service.batcher import MicroBatcher, QueueFull, length_groups
from service.item_log import ItemChangeRecord, ItemLog, fold
from service.live_catalog import LiveCatalog
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

# ---- length-aware grouping --------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[5], [10] * 32, [3, 200, 4, 190, 5, 180], list(range(1, 257, 8)), [256, 1, 256, 1]])
def test_length_groups_cover_every_position_once(lengths):
    groups = length_groups(lengths)
    assert sorted(p for g in groups for p in g) == list(range(len(lengths)))
    for group in groups:
        size, longest = len(group), max(lengths[p] for p in group)
        waste = size * longest - sum(lengths[p] for p in group)
        assert waste <= max(256, 0.25 * size * longest)


def test_length_groups_split_short_from_long_and_keep_similar_together():
    assert len(length_groups([10] * 32)) == 1
    groups = length_groups([8] * 16 + [256] * 16)
    assert sorted(len(g) for g in groups) == [16, 16]
    assert length_groups([]) == []


# ---- the batcher with a fake model --------------------------------------------------------------------


class FakeModel:
    """A TextEncoder: token ids = one per word; the 'vector' is (model tag, number of words)."""

    def __init__(self, tag: float, delay: float = 0.0):
        self.tag, self.delay, self.runs = tag, delay, []

    def tokenize(self, texts):
        return [list(range(len(t.split()))) for t in texts]

    def run(self, token_ids, alone=False):
        time.sleep(self.delay)
        self.runs.append(len(token_ids))
        return np.array([[self.tag, len(ids)] for ids in token_ids], dtype=np.float32)


def test_batcher_batches_keeps_models_apart_and_refuses_when_full():
    async def scenario():
        batcher = MicroBatcher(ServiceMetrics(), max_batch_size=8, max_wait_ms=50, queue_size=6)
        await batcher.start()
        try:
            old, new = FakeModel(1.0), FakeModel(2.0)
            texts = ["a", "a b", "a b c"]
            results = await asyncio.gather(batcher.encode(old, texts), batcher.encode(new, texts[:2]))
            assert results[0].tolist() == [[1.0, 1], [1.0, 2], [1.0, 3]]
            assert results[1].tolist() == [[2.0, 1], [2.0, 2]]
            assert sum(old.runs) == 3 and sum(new.runs) == 2 and len(old.runs) == 1  # one run for the three
            slow = FakeModel(3.0, delay=0.2)
            first = asyncio.ensure_future(batcher.encode(slow, ["x"] * 6))
            await asyncio.sleep(0)  # admitted: the queue is now full until the worker takes them
            with pytest.raises(QueueFull):
                batcher.submit(slow, ["y"])
            assert (await first).shape == (6, 2)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


class GatedModel(FakeModel):
    """Runs block until released, and record how many ran at once and whether each ran alone."""

    def __init__(self, tag: float):
        super().__init__(tag)
        self.lock, self.running, self.most, self.alone, self.release = threading.Lock(), 0, 0, [], threading.Event()

    def run(self, token_ids, alone=False):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.alone.append(alone)
        self.release.wait(5)
        with self.lock:
            self.running -= 1
        return super().run(token_ids)


@pytest.mark.parametrize("workers", [1, 2])
def test_batcher_runs_as_many_batches_at_once_as_it_has_workers(workers):
    async def scenario():
        batcher = MicroBatcher(ServiceMetrics(), max_batch_size=1, max_wait_ms=0, queue_size=16, workers=workers)
        await batcher.start()
        try:
            model = GatedModel(1.0)
            first = asyncio.ensure_future(batcher.encode(model, ["a"]))
            while not model.alone:  # the first run has started, with nothing else in flight
                await asyncio.sleep(0.01)
            rest = [asyncio.ensure_future(batcher.encode(model, ["b c"])) for _ in range(3)]
            await asyncio.sleep(0.2)  # time for a free worker to start the next run
            assert model.running == workers
            model.release.set()
            results = await asyncio.gather(first, *rest)
            assert [r.tolist() for r in results] == [[[1.0, 1]]] + [[[1.0, 2]]] * 3
            assert model.most == workers
            assert model.alone[0] is True  # a lone run may use every core
            if workers == 2:
                assert model.alone[1] is False  # one started beside a running one may not
            else:  # one after the other; only the last finds nothing else waiting
                assert model.alone == [True, False, False, True]
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_batcher_survives_a_failing_model_and_cancelled_requests():
    class Broken(FakeModel):
        def run(self, token_ids, alone=False):
            raise RuntimeError("onnx exploded")

    async def scenario():
        batcher = MicroBatcher(ServiceMetrics(), max_batch_size=4, max_wait_ms=1, queue_size=16)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.encode(Broken(0.0), ["a"])
            task = asyncio.ensure_future(batcher.encode(FakeModel(1.0, delay=0.05), ["a", "b"]))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await batcher.encode(FakeModel(5.0), ["a b"])).tolist() == [[5.0, 2]]
        finally:
            await batcher.stop()

    asyncio.run(scenario())


# ---- item log and live catalogue ------------------------------------------------------------------------


def test_item_log_round_trip_fold_and_torn_tail(tmp_path):
    log = ItemLog(tmp_path / "sub" / "items.jsonl")
    item = ItemMeta("n1", "New", ("Drama",), None, 2001, "desc", 3.5, (("k", "v"),))
    log.append(ItemChangeRecord("put", "n1", item))
    log.append(ItemChangeRecord("delete", "n1"))
    log.append(ItemChangeRecord("put", "n2", ItemMeta("n2", "Other")))
    changes, offset = log.read()
    assert [(c.op, c.item_id) for c in changes] == [("put", "n1"), ("delete", "n1"), ("put", "n2")]
    assert changes[0].item == item
    assert [(c.op, c.item_id) for c in fold(changes)] == [("delete", "n1"), ("put", "n2")]
    log.close()
    with open(log.path, "ab") as handle:
        handle.write(b'{"op": "put", "item_id": "half')
    assert log.read(offset) == ([], offset)  # an unterminated line is not read
    assert log.repair() > 0 and log.path.read_bytes().endswith(b"\n")
    log.append(ItemChangeRecord("delete", "n2"))
    tail, _ = log.read(offset)
    assert [(c.op, c.item_id) for c in tail] == [("delete", "n2")]
    for line in log.path.read_text().splitlines():
        json.loads(line)


def test_live_catalog_rows():
    catalog = LiveCatalog(Catalog([ItemMeta("a", "A"), ItemMeta("b", "B")]))
    assert catalog.row_for("a") == 0 and catalog.row_for("new") == 2
    assert catalog.put(ItemMeta("new", "N")) == (2, True)
    assert catalog.put(ItemMeta("a", "A2")) == (0, False) and catalog.get("a").title == "A2"
    assert catalog.remove("b") == 1 and "b" not in catalog and catalog.at(1) is None
    assert catalog.put(ItemMeta("b", "B again")) == (3, True)  # a retired row is not reused
    assert len(catalog) == 3


# ---- settings ---------------------------------------------------------------------------------------------


def test_settings_defaults_and_environment(monkeypatch, tmp_path):
    for name in ("R2END_ADMIN_TOKEN", "R2END_WRITE_TOKEN", "R2END_ITEM_LOG_PATH", "R2END_PORT", "R2END_MAX_K"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("R2END_BUNDLE_PATH", str(tmp_path / "bundle"))
    monkeypatch.setenv("R2END_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("R2END_ADMIN_TOKEN", "  ")
    settings = ServiceSettings()
    assert settings.item_log_path == tmp_path / "bundle.items.jsonl"
    assert settings.max_batch_size == 7 and settings.admin_token is None and settings.write_token is None
    monkeypatch.setenv("R2END_WRITE_TOKEN", " ")
    assert ServiceSettings().write_token is None  # blank = unset: writes stay off
    monkeypatch.setenv("R2END_WRITE_TOKEN", "s3cret")
    assert ServiceSettings().write_token == "s3cret"
    assert (settings.host, settings.port, settings.max_k, settings.default_k) == ("127.0.0.1", 8000, 100, 10)
    assert settings.max_history is None and settings.history_limit == (1 << 20) // 16  # as many events as the body can carry
    assert (settings.max_body_bytes, settings.queue_size, settings.max_wait_ms, settings.use_int8, settings.warmup) == (
        1 << 20,
        256,
        0.0,
        False,
        True,
    )
    assert settings.run_threads >= 1 and settings.alone_threads >= settings.run_threads
    monkeypatch.setenv("R2END_DEFAULT_K", "500")
    with pytest.raises(ValueError, match="default_k"):
        ServiceSettings()


# ---- import boundaries --------------------------------------------------------------------------------------


def test_service_never_imports_training_or_torch():
    """At run time, through any dependency too (the source's imports are the contract: test_import_contract.py)."""
    code = "import sys, service.main, service.app; bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'training')]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, env=service_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- before a bundle is loaded ----------------------------------------------------------------------------


def test_not_ready_until_loaded(tmp_path):
    """Without the lifespan (no bundle loaded): /healthz 200, /readyz 503, /recommend 503 + Retry-After."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(ServiceSettings(bundle_path=tmp_path / "bundle", retry_after_seconds=3))
    client = TestClient(app)  # not entered as a context manager: startup does not run
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "loading"
    response = client.post("/recommend", json={"history": [{"item_id": "1"}]})
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert response.json()["detail"][0]["type"] == "not_ready"
    create_app(ServiceSettings(bundle_path=tmp_path / "bundle"))  # a second app in one process: separate metric registries


def test_one_poisonous_input_does_not_fail_its_batch():
    class Picky(FakeModel):
        def tokenize(self, texts):
            if any("poison" in t for t in texts):
                raise TypeError("cannot tokenise poison")
            return super().tokenize(texts)

    async def scenario():
        batcher = MicroBatcher(ServiceMetrics(), max_batch_size=8, max_wait_ms=50, queue_size=16)
        await batcher.start()
        try:
            model, other = Picky(1.0), FakeModel(2.0)
            results = await asyncio.gather(
                batcher.encode(model, ["a b"]),
                batcher.encode(model, ["poison"]),
                batcher.encode(model, ["a b c"]),
                batcher.encode(other, ["x"]),
                return_exceptions=True,
            )
            assert results[0].tolist() == [[1.0, 2]] and results[2].tolist() == [[1.0, 3]] and results[3].tolist() == [[2.0, 1]]
            assert isinstance(results[1], TypeError)
            alone = await asyncio.gather(
                batcher.encode(model, ["poison"]), batcher.encode(other, ["y z"]), return_exceptions=True
            )
            assert isinstance(alone[0], TypeError) and alone[1].tolist() == [[2.0, 2]]
        finally:
            await batcher.stop()

    asyncio.run(scenario())
