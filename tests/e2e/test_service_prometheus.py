"""A real Prometheus server scrapes the real service; its HTTP API then answers the dashboard's queries.

Needs the ``prometheus`` binary (Debian: ``apt-get install -y prometheus``); skipped without it.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from service_util import REPO

from index.osutil import free_port
from service.metrics import METRICS_PATH

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "r2end-latency.json"
TIMEOUT = 60.0


@pytest.fixture
def prometheus(service, tmp_path):
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary: apt-get install -y prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "r2end", "metrics_path": METRICS_PATH, "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + TIMEOUT
            with httpx.Client(timeout=5) as http:
                while True:
                    assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                    try:
                        if http.get(url + "/-/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "prometheus did not become ready"
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def query(http: httpx.Client, url: str, expr: str) -> list[dict]:
    response = http.get(url + "/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_prometheus_sees_the_latency_histogram(service, prometheus):
    deadline = time.monotonic() + TIMEOUT
    p99 = None
    with httpx.Client(base_url=service.url, timeout=30) as app, httpx.Client(timeout=10) as prom:
        while time.monotonic() < deadline:
            for _ in range(5):  # traffic between scrapes, so rate() has increases to see
                assert app.post("/recommend", json={"history": [{"item_id": "1"}, {"item_id": "2"}], "k": 3}).status_code == 200
            counts = query(
                prom, prometheus, 'http_request_duration_seconds_count{job="r2end",handler="/recommend",method="POST"}'
            )
            result = query(
                prom,
                prometheus,
                'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="r2end",handler="/recommend"}[30s])))',
            )
            if counts and float(counts[0]["value"][1]) > 0 and result and not math.isnan(float(result[0]["value"][1])):
                p99 = float(result[0]["value"][1])
                break
            time.sleep(0.5)  # the scrape interval is 1 s
        assert p99 is not None, "prometheus never had the /recommend latency histogram"
        assert 0 < p99 < 60
        up = query(prom, prometheus, 'up{job="r2end"}')
        assert up and up[0]["value"][1] == "1"
        # every dashboard query is valid PromQL for this Prometheus; the latency ones return data
        dashboard = json.loads(Path(DASHBOARD).read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "30s")
                result = query(prom, prometheus, expr)
                if "http_request_duration_seconds" in expr:
                    assert result, expr
