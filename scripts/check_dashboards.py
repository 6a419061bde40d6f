"""Every PromQL expression of the Grafana dashboards returns data from a live Prometheus.

A panel whose query returns nothing is a broken panel, and Grafana cannot run here, so this does what
Grafana would: it reads ``docker/grafana/dashboards/*.json``, replaces Grafana's variables
(``$__rate_interval`` and friends) with the values Grafana would use for the provisioned datasource's
scrape interval, and asks Prometheus's HTTP API. With ``--service`` it first puts traffic of every kind
a panel counts on the service (recommendations, a 422, live item writes, a reload) and keeps it running
while it asks. Exit status 1 names the expressions without data.

    python scripts/check_dashboards.py --prometheus http://127.0.0.1:9090 \\
        --service http://127.0.0.1:8000 --write-token "$R2END_WRITE_TOKEN" --admin-token "$R2END_ADMIN_TOKEN"

``scripts/container_smoke.sh`` runs it against the podman-compose stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "docker" / "grafana" / "dashboards"
DATASOURCES = REPO / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
JOB = "r2end"  # docker/prometheus/prometheus.yml's job_name
LOAD_ITEM_PREFIX = "dashboard-check-"
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: what Grafana would send to Prometheus."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def label(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref_id}]"


def panels(items: Iterable[dict]) -> Iterable[dict]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries(paths: Iterable[Path]) -> list[PanelQuery]:
    """The PromQL targets of the dashboards (targets without ``expr`` are not PromQL and are skipped)."""
    queries = []
    for path in sorted(paths):
        dashboard = json.loads(path.read_text())
        title = dashboard.get("title") or path.stem
        for panel in panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append(
                        PanelQuery(
                            title, panel.get("title", f"panel {panel.get('id')}"), target.get("refId", "?"), target["expr"]
                        )
                    )
    return queries


def parse_duration(text: str) -> float:
    """Prometheus/Grafana duration (``5s``, ``1m``, ``1m30s``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|[smhdwy])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def datasource_scrape_interval(path: Path = DATASOURCES) -> float:
    """The Prometheus datasource's ``timeInterval`` (Grafana's notion of the scrape interval), seconds."""
    datasources = yaml.safe_load(path.read_text())["datasources"]
    [prometheus] = [d for d in datasources if d["type"] == "prometheus"]
    return parse_duration(prometheus.get("jsonData", {}).get("timeInterval", "15s"))


def grafana_variables(scrape_interval: float, time_range: float = 1800.0, interval: float | None = None) -> dict[str, str]:
    """Grafana's built-in variables for a panel over ``time_range`` seconds.

    ``$__interval`` is the panel's step (at least the scrape interval); ``$__rate_interval`` is
    ``max($__interval + scrape interval, 4 * scrape interval)``, as Grafana defines it.
    """
    step = max(interval or scrape_interval, scrape_interval)
    rate_interval = max(step + scrape_interval, 4 * scrape_interval)
    seconds = lambda value: f"{round(value)}s"  # Prometheus durations are whole seconds here
    return {
        "__interval": seconds(step),
        "__interval_ms": str(int(step * 1000)),
        "__rate_interval": seconds(rate_interval),
        "__range": seconds(time_range),
        "__range_s": str(int(time_range)),
        "__range_ms": str(int(time_range * 1000)),
    }


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana variables replaced; an unknown variable is an error naming it."""

    def replace(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}; known: {', '.join(sorted(variables))}")
        return variables[name]

    return VARIABLE.sub(replace, expr)


def has_data(result: list[dict]) -> bool:
    """At least one series with a finite value (Grafana draws nothing for NaN, e.g. a quantile of no traffic)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


class Load:
    """Traffic of every kind the dashboard counts, in a background thread until :meth:`stop`."""

    def __init__(self, url: str, write_token: str | None, admin_token: str | None):
        self.url = url.rstrip("/")
        self.write_headers = {"Authorization": f"Bearer {write_token}"} if write_token else {}
        self.admin_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _expect(self, response: httpx.Response, wanted: set[int], what: str) -> None:
        key = f"{what} {response.status_code}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if response.status_code not in wanted and len(self.failures) < 20:
            self.failures.append(f"{what}: HTTP {response.status_code} {response.text[:300]}")

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            if self.admin_headers:  # r2end_reloads_total{outcome}
                self._expect(http.post("/admin/reload", headers=self.admin_headers, json={}), {200}, "POST /admin/reload")
            n = 0
            while not self._stop.is_set():
                item = f"{LOAD_ITEM_PREFIX}{n % 5}"
                body = {
                    "title": f"Dashboard check {n}",
                    "categories": ["Drama"],
                    "description": "Traffic for the dashboard check.",
                }
                self._expect(http.put(f"/items/{item}", json=body, headers=self.write_headers), {200, 201}, "PUT /items")
                self._expect(http.post("/recommend", json={"history": [{"item_id": item}], "k": 5}), {200}, "POST /recommend")
                text = "1997-12-04: L.A. Confidential (1997); Categories: Crime, Film-Noir, Mystery, Thriller"
                self._expect(http.post("/recommend", json={"history_text": text, "k": 5}), {200}, "POST /recommend")
                batch = {"requests": [{"history": [{"item_id": item}], "k": 3}, {"history_text": text, "k": 3}]}
                self._expect(http.post("/recommend/batch", json=batch), {200}, "POST /recommend/batch")
                self._expect(http.post("/recommend", json={"history": []}), {422}, "POST /recommend (bad)")  # r2end_errors_total
                self._expect(http.get(f"/items/{item}"), {200}, "GET /items")
                n += 1
                self._stop.wait(0.05)


def wait_target_up(http: httpx.Client, prometheus: str, deadline: float) -> dict:
    """Poll ``/api/v1/targets`` until the service target is up; the target's entry."""
    last: object = "no answer"
    while time.monotonic() < deadline:
        try:
            targets = http.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            mine = [t for t in targets if t["labels"].get("job") == JOB]
            if mine and all(t["health"] == "up" for t in mine):
                return mine[0]
            last = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in mine] or "no r2end target"
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(1)
    raise TimeoutError(f"Prometheus target job={JOB} not up: {last}")


def query(http: httpx.Client, prometheus: str, expr: str) -> list[dict]:
    response = http.get(f"{prometheus}/api/v1/query", params={"query": expr})
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"Prometheus refused {expr!r}: {body.get('error', response.text[:300])}")
    return body["data"]["result"]


def check(prometheus: str, queries: list[PanelQuery], variables: dict[str, str], deadline: float) -> dict[PanelQuery, str]:
    """Ask until every expression has data or the deadline passes; {query: problem} for the rest."""
    pending = {q: "no data" for q in queries}
    with httpx.Client(timeout=10) as http:
        while pending:
            for q in list(pending):
                try:
                    if has_data(query(http, prometheus, substitute(q.expr, variables))):
                        del pending[q]
                except ValueError as exc:
                    pending[q] = str(exc)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(1)
    return pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--service", help="service base URL: put traffic on it while checking (else only query)")
    parser.add_argument("--write-token", help="credential for PUT /items (R2END_WRITE_TOKEN)")
    parser.add_argument("--admin-token", help="credential for POST /admin/reload (R2END_ADMIN_TOKEN)")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARDS, help="folder of dashboard JSON files")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of traffic before the first query (default: $__rate_interval plus one scrape)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the target and for data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

    paths = list(args.dashboards.glob("*.json"))
    queries = dashboard_queries(paths)
    if not queries:
        logger.error("no PromQL targets in %s", args.dashboards)
        return 1
    scrape = datasource_scrape_interval()
    variables = grafana_variables(scrape)
    try:
        for q in queries:
            substitute(q.expr, variables)
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    deadline = time.monotonic() + args.timeout
    prometheus = args.prometheus.rstrip("/")
    with httpx.Client(timeout=10) as http:
        target = wait_target_up(http, prometheus, deadline)
    logger.info("target %s is up", target["scrapeUrl"])
    load = Load(args.service, args.write_token, args.admin_token).start() if args.service else None
    try:
        if load is not None:
            warmup = args.warmup if args.warmup is not None else parse_duration(variables["__rate_interval"]) + scrape
            logger.info("traffic for %.0f s before querying ($__rate_interval = %s)", warmup, variables["__rate_interval"])
            time.sleep(warmup)
        missing = check(prometheus, queries, variables, deadline)
    finally:
        if load is not None:
            load.stop()
    if load is not None:
        logger.info("traffic: %s", ", ".join(f"{k} x{v}" for k, v in sorted(load.counts.items())))
        for failure in load.failures:
            logger.error("unexpected answer: %s", failure)
    for q in queries:
        logger.info("%-7s %s", "NO DATA" if q in missing else "ok", q.label())
    if missing:
        logger.error("%d of %d dashboard expressions returned no data:", len(missing), len(queries))
        for q, problem in missing.items():
            logger.error("  %s: %s\n    %s", q.label(), problem, substitute(q.expr, variables))
        return 1
    if load is not None and load.failures:
        return 1
    logger.info("all %d expressions of %d dashboard(s) returned data", len(queries), len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
