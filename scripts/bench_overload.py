"""Overload table (issue #16): what the service does with 8, 32, 128 and 512 closed-loop clients (a benchmark, not a test).

The service (``python -m service.main`` via ``loadtest.procs``) serves one bundle; at each level,
that many clients post real test-user histories of the bundle's dataset to ``POST /recommend``
for ``--seconds`` each, every client sending its next request as soon as the last is answered
(a 503 included: the worst case for the server). Per level: goodput (200 answers per second),
p50/p99 of the 200s and of the 503s, the count of each status (0 = no HTTP answer), 503s without
``Retry-After``, and from the server's own metrics the mean time of one encode batch and its
size. ``--server-cpus 0 --client-cpus 1`` pins server and load generator to separate cores
(``taskset``), so the load generator cannot take the server's CPU.

Goals, printed as met/missed:

- goodput at 128 and 512 clients >= 0.9 x the best level's (overload does not collapse throughput);
- p99 of a 503 <= 20 ms (refusals are immediate);
- p99 of accepted requests <= queue bound / capacity + one batch time, where the queue bound is
  the most requests the service lets wait with the settings given (its admission limit, or
  ``queue_size`` in a service without one), capacity the best level's goodput and the batch time
  the largest mean time of one encode batch measured by the server at any level.

Writes ``<out>.md`` and ``<out>.json`` (command, git commit, machine, settings, every number):

    python scripts/bench_overload.py BUNDLE [--seconds 20] [--server-cpus 0 --client-cpus 1] [--out docs/benchmarks/overload]
    python scripts/bench_overload.py BUNDLE --set queue_size=64 --set max_inflight=96
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index import bundle as B
from loadtest import procs, rawhttp
from loadtest.capacity import accepted_p99_limit_ms, batch_stats, parse_cpus, parse_settings, queue_bound, scrape
from loadtest.traffic import DEFAULT_MAX_HISTORY, TrafficData, recommend_body

log = logging.getLogger("bench_overload")

DEFAULT_LEVELS = (8, 32, 128, 512)
OVERLOAD_LEVELS = (128, 512)  # goodput here must stay near the best level's
GOODPUT_GOAL = 0.9
REJECT_P99_GOAL_MS = 20.0
REQUEST_TIMEOUT_S = 120.0  # a request still unanswered then counts as a transport error (status 0)
K = 10


@dataclass
class LevelResult:
    clients: int
    seconds: float
    goodput: float
    statuses: dict[int, int]
    ok_p50_ms: float | None
    ok_p99_ms: float | None
    rejected_p50_ms: float | None
    rejected_p99_ms: float | None
    rejected_without_retry_after: int
    batch_ms: float | None  # server: mean (tokenise + encode) time of one batch during this level
    batch_size: float | None  # server: mean histories per batch


@dataclass
class Goal:
    name: str
    value: str
    met: bool | None


def level_result(run: rawhttp.Run, batch: tuple[float | None, float | None]) -> LevelResult:
    rejected = [s for s in run.samples if s.status == 503]
    return LevelResult(
        run.concurrency,
        run.seconds,
        run.per_second(200),
        run.statuses(),
        run.percentile_ms(50, 200),
        run.percentile_ms(99, 200),
        run.percentile_ms(50, 503),
        run.percentile_ms(99, 503),
        sum(s.retry_after is None for s in rejected),
        *batch,
    )


def goals(levels: list[LevelResult], bound_name: str, bound: float) -> list[Goal]:
    best = max(levels, key=lambda lv: lv.goodput)
    out = []
    for clients in OVERLOAD_LEVELS:
        lv = next((lv for lv in levels if lv.clients == clients), None)
        x = lv.goodput / best.goodput if lv and best.goodput else None
        out.append(
            Goal(
                f"goodput at {clients} clients >= {GOODPUT_GOAL:g}x the best level's ({best.goodput:.1f}/s at {best.clients})",
                "-" if x is None else f"{x:.2f}x",
                None if x is None else x >= GOODPUT_GOAL,
            )
        )
    rejected = [lv.rejected_p99_ms for lv in levels if lv.rejected_p99_ms is not None]
    worst = max(rejected) if rejected else None
    out.append(
        Goal(
            f"p99 of a 503 <= {REJECT_P99_GOAL_MS:g} ms (worst level)",
            "no 503" if worst is None else f"{worst:.1f} ms",
            None if worst is None else worst <= REJECT_P99_GOAL_MS,
        )
    )
    batch_times = [lv.batch_ms for lv in levels if lv.batch_ms is not None]
    accepted = [lv.ok_p99_ms for lv in levels if lv.ok_p99_ms is not None]
    if batch_times and accepted and best.goodput:
        limit = accepted_p99_limit_ms(bound, best.goodput, max(batch_times))
        out.append(
            Goal(
                f"p99 of accepted <= {bound_name} {bound:g} / capacity {best.goodput:.1f}/s + one batch {max(batch_times):.0f} ms "
                f"= {limit:.0f} ms (worst level)",
                f"{max(accepted):.0f} ms",
                max(accepted) <= limit,
            )
        )
    else:
        out.append(Goal("p99 of accepted <= queue bound / capacity + one batch time", "not measured", None))
    return out


def markdown(info: dict, description: str, levels: list[LevelResult], goal_list: list[Goal]) -> str:
    def f(v: float | None, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    codes = sorted({code for lv in levels for code in lv.statuses})
    lines = [
        "# Overload: POST /recommend under 8-512 closed-loop clients",
        "",
        f"`{info['command']}`  ",
        f"git {info['git_commit']}; {info['machine_line']}; {info['created']}",
        "",
        description,
        "",
        "| clients | goodput (200/s) | 200 p50 (ms) | 200 p99 (ms) | 503 p50 (ms) | 503 p99 (ms) | "
        + " | ".join(f"{'no answer' if c == 0 else c}" for c in codes)
        + " | 503 w/o Retry-After | server batch (ms) | batch size |",
        "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(codes) + "---:|---:|---:|",
    ]
    for lv in levels:
        lines.append(
            f"| {lv.clients} | {lv.goodput:.1f} | {f(lv.ok_p50_ms)} | {f(lv.ok_p99_ms)} | {f(lv.rejected_p50_ms)} | "
            f"{f(lv.rejected_p99_ms)} | "
            + " | ".join(str(lv.statuses.get(c, 0)) for c in codes)
            + f" | {lv.rejected_without_retry_after} | {f(lv.batch_ms)} | {f(lv.batch_size)} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- {g.name}: {g.value} ({'not measured' if g.met is None else 'met' if g.met else 'missed'})" for g in goal_list]
    lines += [
        "",
        (
            'Status columns count answers by HTTP status over the level ("no answer": refused, reset or timed out '
            f"after {REQUEST_TIMEOUT_S:g} s). Percentiles are over the whole level, measured by the client (connection and "
            "queueing included); the server batch time is the server's own tokenise + encode time per batch "
            "(`r2end_tokenize_seconds`, `r2end_encode_seconds`, `r2end_batch_size`)."
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--levels", type=lambda s: [int(v) for v in s.split(",") if v.strip()], default=list(DEFAULT_LEVELS))
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--int8", action="store_true", help="serve the int8 user graph")
    parser.add_argument("--threads", type=int, help="the server's R2END_ONNX_THREADS (default: its cores)")
    parser.add_argument("--server-cpus", help="pin the server to these cores (taskset -c syntax, e.g. 0)")
    parser.add_argument("--client-cpus", help="pin this load generator to these cores (e.g. 1)")
    parser.add_argument("--histories", type=Path, help="histories JSON (default: the bundle's dataset's test users)")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting R2END_<NAME> (repeatable), e.g. --set queue_size=64",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks" / "overload", help="writes <out>.md and <out>.json"
    )
    args = parser.parse_args(argv)
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels: positive integers, e.g. 8,32,128,512")
    try:
        args.settings = parse_settings(args.settings)
        server_cores = len(parse_cpus(args.server_cpus)) if args.server_cpus else None
        args.bound_name, args.bound = queue_bound(args.bundle, args.settings, server_cores)
    except ValueError as exc:  # a pydantic ValidationError is one
        errors = getattr(exc, "errors", None)
        parser.error(
            "--set: " + ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors()) if errors else str(exc))
        )
    for option in ("server_cpus", "client_cpus"):
        text = getattr(args, option)
        if text:
            try:
                cores = parse_cpus(text)
            except ValueError:
                parser.error(f"--{option.replace('_', '-')} {text!r}: expected cores like 0, 0,2 or 0-3")
            if not cores <= os.sched_getaffinity(0):
                parser.error(
                    f"--{option.replace('_', '-')} {text!r}: this machine offers cores {sorted(os.sched_getaffinity(0))}"
                )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)  # third-party chatter stays quiet
    for name in ("bench_overload", "loadtest"):
        logging.getLogger(name).setLevel(logging.INFO)
    manifest = B.load_manifest(args.bundle)
    bound = args.bound
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        workdir = Path(tmp)
        if args.histories:
            data = TrafficData.load(args.histories)
        else:
            from loadtest.make_histories import dataset_histories

            data = TrafficData.load(dataset_histories(manifest.dataset, workdir / "histories.json"))
        bodies = [json.dumps(recommend_body(h, k=K, max_history=DEFAULT_MAX_HISTORY)).encode() for h in data.histories]
        server, url = procs.service(args.bundle, workdir, args.int8, args.threads, cpus=args.server_cpus, **args.settings)
        levels = []
        with server:
            if args.client_cpus:  # after the server started: it must not inherit the client's cores
                os.sched_setaffinity(0, parse_cpus(args.client_cpus))
            port = urlsplit(url).port
            asyncio.run(
                rawhttp.closed_loop("127.0.0.1", port, "/recommend", bodies, 4, args.warmup_seconds, timeout_s=REQUEST_TIMEOUT_S)
            )
            for clients in args.levels:
                before = scrape(url)
                run = asyncio.run(
                    rawhttp.closed_loop(
                        "127.0.0.1", port, "/recommend", bodies, clients, args.seconds, timeout_s=REQUEST_TIMEOUT_S
                    )
                )
                lv = level_result(run, batch_stats(before, scrape(url)))
                levels.append(lv)
                log.info(
                    "%d clients: goodput %.1f/s, statuses %s, 200 p99 %s ms, 503 p99 %s ms",
                    clients,
                    lv.goodput,
                    lv.statuses,
                    lv.ok_p99_ms and round(lv.ok_p99_ms),
                    lv.rejected_p99_ms and round(lv.rejected_p99_ms, 1),
                )
            if server.process is not None and server.process.poll() is not None:
                raise SystemExit(f"the server exited during the run; log:\n{server.log()[-3000:]}")

    from training.provenance import machine_line, stamp

    info = {**stamp(), "machine_line": machine_line()}
    pinning = (
        f"server pinned to cores {args.server_cpus}, load generator to {args.client_cpus}"
        if args.server_cpus or args.client_cpus
        else "server and load generator share all cores"
    )
    settings_text = ", ".join(f"`R2END_{k.upper()}={v}`" for k, v in args.settings.items()) or "defaults"
    description = (
        f"Bundle `{manifest.bundle_version}` ({manifest.variant}, {manifest.encoder}, {manifest.n_items} items), "
        f"{'int8' if args.int8 else 'fp32'} user graph; service settings {settings_text}; {pinning}. Requests: "
        f"{len(bodies)} test-user histories of {data.dataset} (at most {DEFAULT_MAX_HISTORY} events, k={K}), "
        f"{args.seconds:g} s per level after a {args.warmup_seconds:g} s warm-up at 4 clients. Closed loop: each client "
        "sends its next request as soon as the last is answered, a 503 included (no back-off)."
    )
    goal_list = goals(levels, args.bound_name, bound)
    text = markdown(info, description, levels, goal_list)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md, js = Path(f"{args.out}.md"), Path(f"{args.out}.json")
    md.write_text(text, encoding="utf-8")
    payload = {
        **info,
        "bundle_version": manifest.bundle_version,
        "int8": args.int8,
        "settings": args.settings,
        "bound_name": args.bound_name,
        "bound": bound,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "seconds": args.seconds,
        "requests": len(bodies),
        "levels": [asdict(lv) for lv in levels],
        "goals": [asdict(g) for g in goal_list],
    }
    js.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s and %s", md, js)


if __name__ == "__main__":
    main()
