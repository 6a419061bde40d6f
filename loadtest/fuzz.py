"""Schemathesis against a live service's OpenAPI: generated requests for every operation, checked responses.

Runs the ``schemathesis run`` command line (the maintained runner, with its phases, shrinking and
seeds) in a subprocess and reads its JSON run report. The checks are the two properties the
reliability goal names (issue #13): no 5xx (``not_a_server_error``) and no answer that breaks the
published schema (``response_schema_conformance``, ``status_code_conformance``,
``content_type_conformance``). Used by ``scripts/reliability_schemathesis.py`` (the full run) and by
``tests/e2e/test_reliability_schemathesis.py`` (a short one in CI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHECKS = ("not_a_server_error", "response_schema_conformance", "status_code_conformance", "content_type_conformance")
SERVER_ERROR_TYPES = frozenset({"ServerError"})  # what not_a_server_error reports


@dataclass
class FuzzResult:
    """What one run found, from schemathesis' JSON report."""

    command: list[str]
    exit_code: int
    generated: int
    operations_tested: int
    operations_selected: int  # in the schema, less the excluded ones
    operations_total: int
    failures: list[dict] = field(default_factory=list)  # {"type", "code", "title", "count", "operations"}
    errors: list[dict] = field(default_factory=list)  # {"title", "count"}: requests that got no answer, crashes
    phases: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def server_errors(self) -> int:
        """Distinct failures (schemathesis deduplicates them) of a 5xx answer."""
        return sum(f["count"] for f in self.failures if f["type"] in SERVER_ERROR_TYPES)

    @property
    def schema_violations(self) -> int:
        """Distinct failures of an answer that breaks the OpenAPI document (body, status code or content type)."""
        return sum(f["count"] for f in self.failures if f["type"] not in SERVER_ERROR_TYPES)

    def summary(self) -> str:
        found = "; ".join(f"{f['title']} x{f['count']} ({', '.join(f['operations'])})" for f in self.failures) or "no failures"
        errors = "; ".join(f"{e['title']} x{e['count']}" for e in self.errors)
        return f"{self.generated} test cases over {self.operations_tested}/{self.operations_total} operations: {found}" + (
            f"; errors: {errors}" if errors else ""
        )


def schemathesis_command() -> list[str]:
    """The ``schemathesis`` console script next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    if found is None:
        raise FileNotFoundError("schemathesis is not installed: pip install -e '.[test]'")
    return [found]


def run_schemathesis(
    base_url: str,
    report_dir: Path,
    *,
    max_examples: int,
    token: str | None = None,
    seed: int = 0,
    phases: Sequence[str] = ("examples", "coverage", "fuzzing", "stateful"),
    exclude_paths: Sequence[str] = (),
    request_timeout_s: float = 120.0,
    max_time_s: float | None = None,
    timeout_s: float = 3600.0,
) -> FuzzResult:
    """Fuzz every operation of ``base_url``'s ``/openapi.json`` (except ``exclude_paths``) and read the report.

    ``token`` is sent as ``Authorization: Bearer <token>`` with every request, so routes behind a
    credential are exercised past the credential check (start the server with the same token as
    ``R2END_ADMIN_TOKEN`` and ``R2END_WRITE_TOKEN``).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    report = report_dir / "schemathesis.json"
    report.unlink(missing_ok=True)
    command = [
        *schemathesis_command(),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--phases",
        ",".join(phases),
        "--request-timeout",
        f"{request_timeout_s:g}",
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    for path in exclude_paths:
        command += ["--exclude-path", path]
    if max_time_s:
        command += ["--max-time", f"{max_time_s:g}"]
    shown = [part if not part.startswith("Authorization:") else "Authorization: Bearer [token]" for part in command]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s, cwd=report_dir)
    output = done.stdout + done.stderr
    if not report.is_file():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{output[-4000:]}")
    data = json.loads(report.read_text())
    return FuzzResult(
        command=shown,
        exit_code=done.returncode,
        generated=int(data["test_cases"]["generated"]),
        operations_tested=int(data["operations"]["tested"]),
        operations_selected=int(data["operations"]["selected"]),
        operations_total=int(data["operations"]["total"]),
        failures=[{k: f.get(k) for k in ("type", "code", "title", "count", "operations")} for f in data.get("failures", [])],
        errors=[{"title": e.get("title"), "count": e.get("count")} for e in data.get("errors", [])],
        phases={name: p.get("status") for name, p in data.get("phases", {}).items()},
        output=output,
    )
