"""Schemathesis against the live OpenAPI of a served bundle (issue #13.4 reliability figure; a measurement, not a test).

Starts ``python -m service.main`` on the bundle (loopback, admin and write credentials set to
one token that every generated request carries), runs schemathesis on every operation of
``/openapi.json`` with all its phases (examples, coverage, fuzzing, stateful), and writes
``<out>.md`` and ``<out>.json`` with the command, git commit and machine. Goals, printed as
met/missed: at least ``--min-cases`` (1,000) generated test cases, every operation tested,
0 answers with a 5xx, 0 answers that break the published schema (body, status code, content
type), and no traceback in the server's log.

    python scripts/reliability_schemathesis.py BUNDLE [--max-examples 150] [--out docs/benchmarks/schemathesis]

The CI slice of this is ``tests/e2e/test_reliability_schemathesis.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadtest import procs
from loadtest.fuzz import CHECKS, FuzzResult, run_schemathesis

log = logging.getLogger("reliability_schemathesis")

MIN_CASES = 1000


def goals(result: FuzzResult, min_cases: int, tracebacks: int) -> list[tuple[str, str, bool]]:
    return [
        (f"generated test cases >= {min_cases}", str(result.generated), result.generated >= min_cases),
        (
            "every operation tested",
            f"{result.operations_tested}/{result.operations_total}",
            result.operations_tested == result.operations_total,
        ),
        ("5xx answers found (distinct failures) = 0", str(result.server_errors), result.server_errors == 0),
        (
            "answers breaking the schema found (distinct failures) = 0",
            str(result.schema_violations),
            result.schema_violations == 0,
        ),
        ("requests without an answer or run errors = 0", str(sum(e["count"] or 0 for e in result.errors)), not result.errors),
        ("tracebacks in the server log = 0", str(tracebacks), tracebacks == 0),
    ]


def markdown(info: dict, bundle: str, result: FuzzResult, goal_list: list[tuple[str, str, bool]]) -> str:
    lines = [
        "# Schemathesis against the live OpenAPI",
        "",
        f"`{info['command']}`  ",
        f"git {info['git_commit']}; {info['machine_line']}; {info['created']}",
        "",
        (
            f"Bundle `{bundle}`; schemathesis `{' '.join(result.command[1:])}` (every request carries the admin and write "
            f"credential); checks {', '.join(f'`{c}`' for c in CHECKS)}. Phases: "
            + ", ".join(f"{name} {status}" for name, status in result.phases.items())
            + "."
        ),
        "",
        "| goal | measured | |",
        "|---|---:|---|",
        *[f"| {name} | {value} | {'met' if ok else 'missed'} |" for name, value, ok in goal_list],
        "",
    ]
    if result.failures or result.errors:
        lines += ["What schemathesis found:", ""]
        lines += [f"- {f['code']} {f['title']}: {f['count']} ({', '.join(f['operations'] or [])})" for f in result.failures]
        lines += [f"- error: {e['title']}: {e['count']}" for e in result.errors]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--max-examples", type=int, default=150, help="schemathesis --max-examples (per operation and phase)")
    parser.add_argument("--min-cases", type=int, default=MIN_CASES, help="goal: at least this many generated test cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--threads", type=int, help="the server's R2END_ONNX_THREADS (default: its cores)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (a reload may take long)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks" / "schemathesis", help="writes <out>.md and <out>.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    from index import bundle as B

    manifest = B.load_manifest(args.bundle)
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as tmp:
        workdir = Path(tmp)
        server, url = procs.service(args.bundle, workdir, False, args.threads, admin_token=token, write_token=token)
        with server:
            log.info("service ready at %s; running schemathesis (max %d examples per operation)", url, args.max_examples)
            result = run_schemathesis(
                url,
                workdir / "report",
                max_examples=args.max_examples,
                token=token,
                seed=args.seed,
                phases=[p.strip() for p in args.phases.split(",") if p.strip()],
                request_timeout_s=args.request_timeout,
                timeout_s=6 * 3600,
            )
        tracebacks = server.log().count("Traceback (most recent call last)")
    log.info("%s", result.summary())

    from training.provenance import machine_line, stamp

    info = {**stamp(), "machine_line": machine_line()}
    goal_list = goals(result, args.min_cases, tracebacks)
    text = markdown(info, manifest.bundle_version, result, goal_list)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text(text, encoding="utf-8")
    payload = {
        **info,
        "bundle_version": manifest.bundle_version,
        "schemathesis_command": result.command,
        "exit_code": result.exit_code,
        "generated": result.generated,
        "operations_tested": result.operations_tested,
        "operations_total": result.operations_total,
        "failures": result.failures,
        "errors": result.errors,
        "phases": result.phases,
        "server_tracebacks": tracebacks,
        "goals": [{"goal": n, "measured": v, "met": ok} for n, v, ok in goal_list],
    }
    Path(f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s.md and %s.json", args.out, args.out)
    return 0 if all(ok for _n, _v, ok in goal_list) else 1


if __name__ == "__main__":
    sys.exit(main())
