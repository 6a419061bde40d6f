"""The deployment files against a real server: the dashboard's metric names exist, the image's health check works."""

from __future__ import annotations

import re
import subprocess
import sys

from deployment_util import dashboard_expressions, healthcheck_code, metrics_in
from service_util import metric_names

from service.metrics import METRICS_PATH


def test_dashboard_metric_names_exist_in_the_app(service):
    import httpx

    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.post("/recommend", json={"history": [{"item_id": "1"}], "k": 2}).status_code == 200
        assert http.post("/recommend", json={"history": [{"item_id": "nope"}]}).status_code == 422  # an errors_total sample
        exported = metric_names(http.get(METRICS_PATH).text)
        spec = http.get("/openapi.json").json()
    routes = set(spec["paths"])
    referenced = set().union(*(metrics_in(expr) for expr in dashboard_expressions()))
    assert {"http_request_duration_seconds_bucket", "r2end_encode_seconds_bucket", "r2end_in_flight_requests"} <= referenced
    assert referenced <= exported, f"not exported: {sorted(referenced - exported)}"
    for handler in set().union(*(re.findall(r'handler="([^"]+)"', e) for e in dashboard_expressions())):
        assert handler in routes, handler


def test_healthcheck_command_works_against_a_real_server(service):
    code = healthcheck_code()
    ok = subprocess.run(
        [sys.executable, "-c", code], check=False, env={"R2END_PORT": str(service.port)}, capture_output=True, timeout=30
    )
    assert ok.returncode == 0, ok.stderr
    from index.osutil import free_port

    down = subprocess.run(
        [sys.executable, "-c", code], check=False, env={"R2END_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert down.returncode != 0
