"""Reading the deployment files the way Docker and Grafana do: Dockerfile instructions, dashboard queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

from locations import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "r2end-latency.json"


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def runtime_stage(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """Instructions of the last stage (the image that runs)."""
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = value
    return env


def one(instructions: list[tuple[str, str]], keyword: str) -> str:
    [value] = [rest for k, rest in instructions if k == keyword]
    return value


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metrics_in(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (ours all start with r2end_ or http_)."""
    return set(re.findall(r"\b((?:r2end|http)_[a-z0-9_]+)\b", expr))


def healthcheck_code() -> str:
    rest = one(runtime_stage(), "HEALTHCHECK")
    options, _, command = rest.partition("CMD ")
    assert "--start-period" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib" in argv[2] and "/healthz" in argv[2] and "curl" not in rest
    return argv[2]
