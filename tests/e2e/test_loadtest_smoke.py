"""Load-test tooling against real things: a Locust run against the real service, the generative baseline
app on the tiny bundle (with a fake LLM), the fusion report on a bundle's graph.

The smoke test starts the service on the tiny bundle (``tiny_bundle`` fixture) and runs
``locust --headless`` for a few seconds with the default traffic mix; it must see requests of
every kind and no failure.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import httpx
from service_util import REPO, metric_sum, parse_metrics

from index.catalog import Catalog
from loadtest import procs
from loadtest.generative_app import GenerativeSettings, create_app
from loadtest.results import level_result

SMOKE_SECONDS = 5


def test_locust_headless_against_the_real_service(make_service, fixture_histories, tmp_path):
    server = make_service(max_history=5)  # histories longer than 5 must be capped by the locustfile
    prefix = tmp_path / "smoke"
    command = procs.locust_command(
        server.url, 4, SMOKE_SECONDS, prefix, fixture_histories, "recommend=10,batch=4,put=3,get=3", max_history=5
    )
    done = subprocess.run(command, check=False, cwd=REPO, env=procs.child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    failures = Path(f"{prefix}_failures.csv").read_text()
    assert int(rows["Aggregated"]["Failure Count"]) == 0, failures
    # Counts depend on how fast this machine is; the smoke test only needs traffic to have flowed.
    assert "/recommend" in rows and int(rows["/recommend"]["Request Count"]) > 0, sorted(rows)
    level = level_result("R2END", 4, prefix)
    assert level.rps > 0 and level.failures == 0 and level.p99_ms is not None
    with server.client() as client:  # the service saw what Locust reports
        metrics = parse_metrics(client.get("/metrics").text)
    puts = int(rows["/items/{id} PUT"]["Request Count"]) if "/items/{id} PUT" in rows else 0
    assert metric_sum(metrics, "r2end_live_item_changes_total", op="put") >= puts
    assert metric_sum(metrics, "http_requests_total", handler="/recommend", status="200") >= int(
        rows["/recommend"]["Request Count"]
    )


def test_generative_app_end_to_end_with_a_fake_llm(tiny_bundle):
    from fastapi.testclient import TestClient

    from service.schemas import RecommendResponse

    catalog = Catalog.load_jsonl(tiny_bundle / "catalog.jsonl")
    target = catalog.at(5)
    prompts: list[str] = []

    def llm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        body = __import__("json").loads(request.content)
        assert request.url.path == "/v1/chat/completions" and body["temperature"] == 0 and body["model"] == "fake-llm"
        prompts.append(body["messages"][-1]["content"])
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": f"{target.title} ({target.year})"}}]}
        )

    settings = GenerativeSettings(tiny_bundle, "http://llm.invalid/v1", "fake-llm")
    with TestClient(create_app(settings, transport=httpx.MockTransport(llm))) as client:
        assert client.get("/readyz").status_code == 200
        history = [
            {"item_id": catalog.at(0).item_id, "timestamp": 881250949},
            {"item_id": "no-such-item", "timestamp": 881250950},
        ]
        response = client.post("/recommend", json={"history": history, "k": 4})
        assert response.status_code == 200, response.text
        body = RecommendResponse.model_validate(response.json())
        assert body.items[0].item_id == target.item_id and body.items[0].score == 1.0 and len(body.items) == 4
        assert body.unknown_item_ids == ["no-such-item"] and body.bundle_version == body.variant == "fake-llm"
        assert catalog.at(0).title in prompts[0] and "1997-12-04" in prompts[0] and "Answer with the title only." in prompts[0]
        bad = client.post("/recommend", json={"history": [{"item_id": "no-such-item"}]})
        assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "unknown_items"


def test_generative_app_reports_llm_failures(tiny_bundle):
    from fastapi.testclient import TestClient

    settings = GenerativeSettings(tiny_bundle, "http://llm.invalid", "fake-llm")
    transport = httpx.MockTransport(lambda request: httpx.Response(500, text="model crashed"))
    first = Catalog.load_jsonl(tiny_bundle / "catalog.jsonl").at(0).item_id
    with TestClient(create_app(settings, transport=transport)) as client:
        response = client.post("/recommend", json={"history": [{"item_id": first}]})
        assert response.status_code == 502 and response.json()["detail"][0]["type"] == "llm_error"
        assert client.get("/readyz").status_code == 503


def test_fusion_report_on_a_bundle_graph(tiny_bundle):
    from loadtest.fusion import KEY_OPS, fusion_report, markdown

    report = fusion_report(tiny_bundle / "user_encoder.onnx")
    assert set(KEY_OPS) <= set(report.fused) and report.nodes_after <= report.nodes_before
    # export ships the fused graph (training/onnx_graphs.py): one Attention per layer of the
    # 6-layer MiniLM is already there and the optimiser finds nothing left to fuse
    assert report.fused["Attention"] == 6 and report.nodes_after == report.nodes_before
    assert "| user |" in markdown([("user", report)])
