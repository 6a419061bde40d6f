"""A throw-away Prometheus that scrapes one target every second, and the queries the benchmark checks.

The server runs under coreutils ``timeout`` so it dies after ``lifetime_s`` even if the benchmark
itself is killed; :meth:`Prometheus.stop` ends it earlier. Everything stays on loopback.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Self

import httpx

from index.osutil import free_port
from loadtest.procs import Managed, child_env

JOB = "r2end"
INSTALL_HINT = "apt-get install -y prometheus"


def p99_query(handler: str, window_s: int, quantile: float = 0.99) -> str:
    """PromQL for a latency quantile of one handler over ``window_s`` (the service's instrumentator histogram)."""
    return (
        f"histogram_quantile({quantile}, sum(rate(http_request_duration_seconds_bucket"
        f'{{job="{JOB}",handler="{handler}"}}[{window_s}s])) by (le))'
    )


def rps_query(handler: str, window_s: int) -> str:
    """PromQL for the request rate of one handler over ``window_s``, 2xx answers only."""
    return f'sum(rate(http_requests_total{{job="{JOB}",handler="{handler}",status=~"2.."}}[{window_s}s]))'


class Prometheus(Managed):
    """``prometheus`` with a temporary config scraping ``target`` (host:port) every second."""

    def __init__(self, target: str, workdir: Path, lifetime_s: float, binary: str = "prometheus"):
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            shutil.which("timeout") or "timeout",
            "--kill-after=10",
            f"{int(lifetime_s)}s",
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        super().__init__("prometheus", command, workdir, child_env(), self.url + "/-/ready", timeout_s=60.0)

    def start(self) -> Self:
        """Start, wait for readiness and for the first scrape of the target (it can lag startup by seconds)."""
        super().start()
        self.wait_scraped(time.time(), timeout_s=60.0)
        return self

    def query(self, expr: str, at: float | None = None) -> float | None:
        """An instant query's single value (None when empty or NaN)."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = httpx.get(self.url + "/api/v1/query", params=params, timeout=10.0).json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query failed: {expr}: {body}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def wait_scraped(self, until: float, timeout_s: float = 15.0) -> None:
        """Wait until a scrape newer than unix time ``until`` is stored."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = httpx.get(self.url + "/api/v1/query", params={"query": f'timestamp(up{{job="{JOB}"}})'}, timeout=10.0).json()
            result = body.get("data", {}).get("result", [])
            if result and float(result[0]["value"][1]) > until:
                return
            time.sleep(0.25)

    def level(self, handler: str, window: tuple[int, int]) -> tuple[float | None, float | None]:
        """``(p99 ms, successful requests/s)`` of ``handler`` over the window (unix seconds)."""
        start, end = window
        self.wait_scraped(end + 1)
        seconds = max(2, end - start)
        p99 = self.query(p99_query(handler, seconds), at=end)
        rps = self.query(rps_query(handler, seconds), at=end)
        return (p99 * 1000 if p99 is not None else None), rps
