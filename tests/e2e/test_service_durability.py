"""Live items survive crashes: a 2xx PUT/DELETE is in the item log before the answer, replayed on start."""

from __future__ import annotations

import json

from service_util import WRITE_AUTH, ServiceProcess

from index.catalog import ItemMeta
from index.verbalize import item_document

HEAT = {
    "title": "Heat",
    "year": 1995,
    "categories": ["Action", "Crime"],
    "description": "Career criminals and an obsessive detective.",
}


def heat_query() -> dict:
    meta = ItemMeta("x", HEAT["title"], tuple(HEAT["categories"]), None, HEAT["year"], HEAT["description"])
    return {"history_text": item_document(HEAT["description"], meta), "k": 1}


def test_put_and_delete_survive_sigkill(tiny_bundle, tmp_path):
    workdir = tmp_path / "server"
    server = ServiceProcess(tiny_bundle, workdir)
    try:
        server.start()
        with server.client() as http:
            assert http.put("/items/crash-heat", json=HEAT, headers=WRITE_AUTH).status_code == 201
            assert (
                http.put("/items/2", json={"title": "GoldenEye (special edition)", "year": 1995}, headers=WRITE_AUTH).status_code
                == 200
            )
        server.kill()  # right after the 2xx: no shutdown code runs

        server.start()
        with server.client() as http:
            got = http.get("/items/crash-heat")
            assert got.status_code == 200 and got.json()["description"] == HEAT["description"]
            assert http.post("/recommend", json=heat_query()).json()["items"][0]["item_id"] == "crash-heat"
            assert http.get("/items/2").json()["title"] == "GoldenEye (special edition)"
            assert http.delete("/items/crash-heat", headers=WRITE_AUTH).status_code == 200
            assert http.delete("/items/3", headers=WRITE_AUTH).status_code == 200  # a bundle item
        server.kill()

        server.start()
        with server.client() as http:
            assert http.get("/items/crash-heat").status_code == 404
            assert http.get("/items/3").status_code == 404
            assert http.get("/items/2").json()["title"] == "GoldenEye (special edition)"
            ids = [i["item_id"] for i in http.post("/recommend", json={**heat_query(), "k": 40}).json()["items"]]
            assert "crash-heat" not in ids and "3" not in ids and "2" in ids
            n_items = http.get("/readyz").json()["bundle"]["n_items"]
            assert n_items == 29  # 30 bundle items - item 3
    finally:
        server.stop()
    lines = [json.loads(line) for line in (workdir / "items.jsonl").read_text().splitlines()]
    assert [(line["op"], line["item_id"]) for line in lines] == [
        ("put", "crash-heat"),
        ("put", "2"),
        ("delete", "crash-heat"),
        ("delete", "3"),
    ]


def test_log_from_another_bundle_applies_by_id_and_torn_tail_is_cut(make_service, tmp_path):
    """A log written elsewhere (other dataset, other ids) is replayed by id; unknown deletes are ignored."""
    workdir = tmp_path / "foreign"
    workdir.mkdir()
    log = workdir / "items.jsonl"
    records = [
        {
            "op": "put",
            "item_id": "amz-B000123",
            "item": {
                "item_id": "amz-B000123",
                "title": "Heat",
                "year": 1995,
                "categories": ["Action", "Crime"],
                "description": HEAT["description"],
            },
        },
        {"op": "delete", "item_id": "not-in-this-bundle"},
        {"op": "put", "item_id": "gone-again", "item": {"title": "Temporary"}},
        {"op": "delete", "item_id": "gone-again"},
        {"op": "delete", "item_id": "5"},
        {"op": "frobnicate", "item_id": "x"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json at all\n" + '{"op": "put", "item_id": "torn", "ite')
    server = make_service(workdir=workdir)
    with server.client() as http:
        assert http.get("/items/amz-B000123").json()["title"] == "Heat"
        assert http.post("/recommend", json=heat_query()).json()["items"][0]["item_id"] == "amz-B000123"
        assert http.get("/items/gone-again").status_code == 404
        assert http.get("/items/5").status_code == 404
        assert http.get("/items/torn").status_code == 404
        # new changes are appended on a clean line after the cut
        assert http.put("/items/after-cut", json={"title": "After"}, headers=WRITE_AUTH).status_code == 201
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["item_id"] == "after-cut"
    assert all(line.startswith("{") or line == "not json at all" for line in lines)
    assert "skipping unreadable change" in server.log() and "torn last line" in server.log()


def test_unwritable_item_log_refuses_the_change(make_service, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log's directory should be")
    server = make_service(item_log_path=blocker / "items.jsonl")
    with server.client() as http:
        response = http.put("/items/nope", json={"title": "Nope"}, headers=WRITE_AUTH)
        assert response.status_code == 503 and response.json()["detail"][0]["type"] == "item_log_unwritable"
        assert http.get("/items/nope").status_code == 404  # nothing changed without the log line


def test_bad_bundle_at_start_exits_non_zero(tmp_path, tiny_bundle):
    server = ServiceProcess(tmp_path / "no-bundle-here", tmp_path / "server")
    try:
        server.start(wait_ready=False)
        assert server.wait_exit() == 3
        assert "manifest.json: missing" in server.log()
    finally:
        server.stop()


def test_missing_settings_exit_with_a_message(tmp_path):
    import subprocess
    import sys

    from service_util import REPO, service_env

    env = service_env()
    result = subprocess.run(
        [sys.executable, "-m", "service.main"], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "R2END_BUNDLE_PATH" in result.stderr


def test_hnsw_bundle_serves_but_refuses_live_items(make_service, tiny_bundle, tmp_path):
    """An HNSW index cannot remove vectors: live changes answer 409 and logged ones are skipped, not fatal."""
    import numpy as np
    from service_util import copy_bundle

    from index.bundle import sha256_file
    from index.faiss_index import ItemIndex

    bundle = copy_bundle(tiny_bundle, tmp_path / "hnsw")
    ItemIndex.build(np.load(bundle / "item_vectors.npy"), "hnsw").save(bundle / "item_index.faiss")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["index_kind"] = "hnsw"
    manifest["files"]["item_index.faiss"] = sha256_file(bundle / "item_index.faiss")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    workdir = tmp_path / "server"
    workdir.mkdir()
    (workdir / "items.jsonl").write_text(json.dumps({"op": "delete", "item_id": "1"}) + "\n")
    server = make_service(bundle=bundle, workdir=workdir)
    with server.client() as http:
        assert http.get("/items/1").status_code == 200  # the logged delete was skipped
        assert len(http.post("/recommend", json={"history": [{"item_id": "2"}], "k": 5}).json()["items"]) == 5
        for response in (
            http.put("/items/new", json={"title": "New"}, headers=WRITE_AUTH),
            http.delete("/items/1", headers=WRITE_AUTH),
        ):
            assert response.status_code == 409 and response.json()["detail"][0]["type"] == "live_items_unsupported"
    assert "cannot change" in server.log()
