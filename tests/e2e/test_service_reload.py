"""Hot reload on a real server: atomic swap under load, bad bundles refused, SIGHUP."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_util import ADMIN_TOKEN, assert_error_shape, copy_bundle, metric_sum, parse_metrics, set_bundle_version

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY = {"history": [{"item_id": "1", "timestamp": 881250949}, {"item_id": "7", "timestamp": 881350949}], "k": 5}


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def served_version(http: httpx.Client) -> str:
    return http.get("/readyz").json()["bundle"]["bundle_version"]


def test_reload_under_load_drops_no_request(make_service, tiny_bundle, tmp_path):
    second = copy_bundle(tiny_bundle, tmp_path / "second", bundle_version="second-bundle")
    server = make_service(admin_token=ADMIN_TOKEN)
    with server.client() as http:
        first_version = served_version(http)
    stop = threading.Event()
    seen: dict[str, int] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def hammer(_):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/recommend", json=BODY)
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        version = response.json()["bundle_version"]
                        seen[version] = seen.get(version, 0) + 1

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(hammer, n) for n in range(4)]
        try:
            wait_for(lambda: seen.get(first_version, 0) >= 10, what="requests on the first bundle")
            with server.client(timeout=120) as http:
                swapped = http.post("/admin/reload", json={"bundle_path": str(second)}, headers=AUTH)
            assert swapped.status_code == 200, swapped.text
            assert swapped.json()["bundle"]["bundle_version"] == "second-bundle"
            assert swapped.json()["previous_bundle_version"] == first_version
            wait_for(lambda: seen.get("second-bundle", 0) >= 10, what="requests on the second bundle")
            with server.client(timeout=120) as http:
                back = http.post("/admin/reload", json={"bundle_path": str(tiny_bundle)}, headers=AUTH)
            assert back.status_code == 200, back.text
            count = seen.get(first_version, 0)
            wait_for(lambda: seen.get(first_version, 0) >= count + 10, what="requests after swapping back")
        finally:
            stop.set()
            for worker in workers:
                worker.result(timeout=60)
    assert failures == []
    assert set(seen) == {first_version, "second-bundle"}
    with server.client() as http:
        metrics = parse_metrics(http.get("/metrics").text)
        assert metric_sum(metrics, "r2end_reloads_total", outcome="ok") == 3
        assert metric_sum(metrics, "r2end_bundle_info", bundle_version=first_version) == 1
        assert metric_sum(metrics, "r2end_bundle_info", bundle_version="second-bundle") == 0


def corrupt_checksum(bundle):
    with open(bundle / "catalog.jsonl", "a") as handle:
        handle.write("\n")


def wrong_schema(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def missing_file(bundle):
    (bundle / "user_encoder.onnx").unlink()


def broken_graph(bundle):
    """A garbage ONNX file whose checksum matches a rewritten manifest: only loading can tell."""
    from index.bundle import sha256_file

    (bundle / "item_encoder.onnx").write_bytes(b"not an onnx graph")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["item_encoder.onnx"] = sha256_file(bundle / "item_encoder.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def reload_server(tiny_bundle, tmp_path_factory):
    from service_util import ServiceProcess

    server = ServiceProcess(tiny_bundle, tmp_path_factory.mktemp("reload-server"), admin_token=ADMIN_TOKEN)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "damage, words",
    [
        (corrupt_checksum, "sha256"),
        (wrong_schema, "schema_version"),
        (missing_file, "missing"),
        (broken_graph, "cannot be loaded"),
    ],
)
def test_bad_bundle_is_refused_and_the_old_keeps_serving(reload_server, tiny_bundle, tmp_path, damage, words):
    bad = copy_bundle(tiny_bundle, tmp_path / "bad", bundle_version="bad-bundle")
    damage(bad)
    with reload_server.client(timeout=120) as http:
        before = served_version(http)
        refused = http.post("/admin/reload", json={"bundle_path": str(bad)}, headers=AUTH)
        assert refused.status_code == 422, refused.text
        [detail] = assert_error_shape(refused)
        assert detail["type"] == "bundle_error" and detail["loc"] == ["body", "bundle_path"]
        assert words in detail["msg"] and "still serving the old one" in detail["msg"]
        assert served_version(http) == before
        answer = http.post("/recommend", json=BODY)
        assert answer.status_code == 200 and answer.json()["bundle_version"] == before
        assert metric_sum(parse_metrics(http.get("/metrics").text), "r2end_errors_total", reason="internal") == 0


def test_reload_same_bundle_without_body(reload_server):
    with reload_server.client(timeout=120) as http:
        response = http.post("/admin/reload", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["bundle"]["bundle_version"] == response.json()["previous_bundle_version"]


def test_sighup_reloads_the_current_bundle(make_service, tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "hup", bundle_version="hup-1")
    server = make_service(bundle=bundle)
    with server.client() as http:
        assert served_version(http) == "hup-1"
        set_bundle_version(bundle, "hup-2")  # a retrained bundle written in place
        server.signal(signal.SIGHUP)
        wait_for(lambda: served_version(http) == "hup-2", what="SIGHUP reload")
        assert http.post("/recommend", json=BODY).json()["bundle_version"] == "hup-2"
        # a broken bundle on SIGHUP: refused, counted, old one keeps serving
        corrupt_checksum(bundle)
        server.signal(signal.SIGHUP)
        wait_for(
            lambda: metric_sum(parse_metrics(http.get("/metrics").text), "r2end_reloads_total", outcome="failed") == 1,
            what="failed SIGHUP reload",
        )
        assert served_version(http) == "hup-2"
        assert http.post("/recommend", json=BODY).status_code == 200
    assert "reload refused" in server.log()
