"""Soak (issue #13.4 reliability figures): ~2x saturation for 10 minutes with a hot reload every 30 s (a measurement, not a test).

One run against ``python -m service.main`` on a bundle (via ``loadtest.procs``, loopback):

1. capacity: closed-loop ``POST /recommend`` with ``--capacity-clients`` clients for
   ``--capacity-seconds``: goodput (200/s) = the saturation throughput;
2. warm-up: open-loop arrivals at ``--load`` x capacity (Poisson) for ``--warmup-seconds``; the
   server's RSS afterwards is the reference;
3. soak, ``--seconds`` (600): the same open-loop load, a ``POST /admin/reload`` every
   ``--reload-every`` seconds (the served bundle again, with the admin credential), a credentialed
   ``PUT /items/soak-<n>`` stream at ``--puts-per-second``, the server's RSS every 5 s;
4. every acknowledged PUT is read back.

The requests are the test users' histories of the bundle's dataset. Goals, printed as met/missed:
no 5xx except deliberate 503s with ``Retry-After`` (and no request without an answer); RSS at the
end within 10% of after the warm-up; p99 of accepted requests <= queue bound / capacity + one batch
time (as in ``scripts/bench_overload.py``); every reload succeeds and no request overlapping one
fails; every acknowledged PUT is there. Writes ``<out>.md`` and ``<out>.json`` with command, git
commit and machine.

    python scripts/soak.py BUNDLE [--seconds 600] [--load 2] [--server-cpus 0 --client-cpus 1] [--out docs/benchmarks/soak]
    python scripts/soak.py BUNDLE --seconds 20 --warmup-seconds 5 --capacity-seconds 5 --reload-every 8 --out /tmp/soak   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index import bundle as B
from loadtest import procs, rawhttp
from loadtest.capacity import accepted_p99_limit_ms, batch_stats, parse_cpus, parse_settings, queue_bound, scrape
from loadtest.traffic import DEFAULT_MAX_HISTORY, TrafficData, recommend_body

log = logging.getLogger("soak")

RSS_GROWTH_GOAL = 0.10
RSS_EVERY_S = 5.0
K = 10


@dataclass
class Reload:
    at_s: float  # since the soak started
    seconds: float
    status: int  # 0: no answer
    detail: str = ""


@dataclass
class SoakRecord:
    """Everything the soak's side tasks saw (the traffic itself is a :class:`rawhttp.Run`)."""

    reloads: list[Reload] = field(default_factory=list)
    puts_acked: dict[str, str] = field(default_factory=dict)  # item id -> title
    puts_failed: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)


def rss_of(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def side_tasks(
    url: str,
    pid: int,
    started: float,
    seconds: float,
    reload_every: float,
    puts_per_second: float,
    admin_token: str,
    write_token: str,
    record: SoakRecord,
) -> None:
    """Reloads, credentialed PUTs and RSS samples until ``seconds`` after ``started`` (perf_counter)."""
    end = started + seconds

    async def reloads(client: httpx.AsyncClient) -> None:
        # one every reload_every seconds; one that ran past its successor's slot is followed at once; none starts after the end
        while (next_at := started + (len(record.reloads) + 1) * reload_every) < end and time.perf_counter() < end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                response = await client.post("/admin/reload", headers={"Authorization": f"Bearer {admin_token}"})
                status, detail = response.status_code, "" if response.status_code == 200 else response.text[:300]
            except httpx.HTTPError as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"
            record.reloads.append(Reload(t0 - started, time.perf_counter() - t0, status, detail))
            log.info("reload %d at %.0f s: %s in %.1f s", len(record.reloads), t0 - started, status, time.perf_counter() - t0)

    async def puts(client: httpx.AsyncClient) -> None:
        if puts_per_second <= 0:
            return
        n = 0
        while (next_at := started + n / puts_per_second) < end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            item_id, title = f"soak-{n}", f"Soak item {n}"
            try:
                response = await client.put(
                    f"/items/{item_id}",
                    json={"title": title, "year": 2000, "categories": ["Drama"]},
                    headers={"Authorization": f"Bearer {write_token}"},
                )
                if response.status_code in (200, 201):
                    record.puts_acked[item_id] = title
                elif response.status_code != 503:  # a 503 is a deliberate refusal under overload, not a lost write
                    record.puts_failed.append(f"{item_id}: {response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                record.puts_failed.append(f"{item_id}: {type(exc).__name__}: {exc}")
            n += 1

    async def rss() -> None:
        while time.perf_counter() < end:
            record.rss.append((time.perf_counter() - started, rss_of(pid)))
            await asyncio.sleep(RSS_EVERY_S)

    async with httpx.AsyncClient(base_url=url, timeout=600.0) as client:
        await asyncio.gather(reloads(client), puts(client), rss())


async def soak(
    port: int, url: str, pid: int, bodies: list[bytes], rate: float, args: argparse.Namespace, tokens: tuple[str, str]
) -> tuple[rawhttp.Run, SoakRecord, float]:
    record = SoakRecord()
    started = time.perf_counter()
    traffic = rawhttp.open_loop(
        "127.0.0.1", port, "/recommend", bodies, rate, args.seconds, timeout_s=args.request_timeout, seed=1
    )
    run, _ = await asyncio.gather(
        traffic,
        side_tasks(url, pid, started, args.seconds, args.reload_every, args.puts_per_second, tokens[0], tokens[1], record),
    )
    return run, record, started


def failed(sample: rawhttp.Sample) -> bool:
    """Anything but a 200 or a deliberate 503 with Retry-After."""
    return not (sample.status == 200 or (sample.status == 503 and sample.retry_after is not None))


def windows(run: rawhttp.Run, record: SoakRecord, started: float, seconds: float, width: float) -> list[dict]:
    """Per ``width`` seconds of the soak's ``seconds`` of arrivals: rates, failures, p99 of 200s (by start time), RSS at its end."""
    rows = []
    n = max(1, int(np.ceil(seconds / width)))
    for w in range(n):
        lo, hi = started + w * width, started + min((w + 1) * width, seconds)
        inside = [s for s in run.samples if lo <= s.started < hi]
        span = hi - lo
        ok_ms = [s.seconds * 1000 for s in inside if s.status == 200]
        rss = [b for t, b in record.rss if t < (w + 1) * width]
        rows.append(
            {
                "from_s": w * width,
                "sent_per_s": len(inside) / span if span > 0 else 0.0,
                "ok_per_s": len(ok_ms) / span if span > 0 else 0.0,
                "rejected_per_s": sum(s.status == 503 for s in inside) / span if span > 0 else 0.0,
                "failed": sum(failed(s) for s in inside),
                "ok_p99_ms": float(np.percentile(ok_ms, 99)) if ok_ms else None,
                "rss_mb": rss[-1] / 2**20 if rss else None,
                "reloads": sum(lo - started <= r.at_s < hi - started for r in record.reloads),
            }
        )
    return rows


def overlapping_reloads(run: rawhttp.Run, record: SoakRecord, started: float) -> list[rawhttp.Sample]:
    """Requests in flight at any moment a reload was running."""
    spans = [(started + r.at_s, started + r.at_s + r.seconds) for r in record.reloads]
    return [s for s in run.samples if any(s.started < b and s.started + s.seconds > a for a, b in spans)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=600.0, help="soak duration")
    parser.add_argument("--load", type=float, default=2.0, help="offered load as a multiple of the measured capacity")
    parser.add_argument("--capacity-clients", type=int, default=16)
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--reload-every", type=float, default=30.0, help="seconds between hot reloads (0: none)")
    parser.add_argument("--puts-per-second", type=float, default=1.0, help="credentialed PUT /items during the soak (0: none)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per row of the time table")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--threads", type=int, help="the server's R2END_ONNX_THREADS (default: its cores)")
    parser.add_argument("--server-cpus", help="pin the server to these cores (taskset -c syntax)")
    parser.add_argument("--client-cpus", help="pin this load generator to these cores")
    parser.add_argument("--histories", type=Path, help="histories JSON (default: the bundle's dataset's test users)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE", help="a service setting (repeatable)"
    )
    parser.add_argument("--request-timeout", type=float, default=120.0, help="a request unanswered this long counts as failed")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "soak", help="writes <out>.md and <out>.json")
    args = parser.parse_args(argv)
    try:
        args.settings = parse_settings(args.settings)
        server_cores = len(parse_cpus(args.server_cpus)) if args.server_cpus else None
        args.bound_name, args.bound = queue_bound(args.bundle, args.settings, server_cores)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        parser.error(
            "--set: " + ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors()) if errors else str(exc))
        )
    if args.reload_every <= 0:
        args.reload_every = float("inf")
    for option in ("server_cpus", "client_cpus"):
        if getattr(args, option):
            try:
                cores = parse_cpus(getattr(args, option))
            except ValueError:
                parser.error(f"--{option.replace('_', '-')}: expected cores like 0, 0,2 or 0-3")
            if not cores <= os.sched_getaffinity(0):
                parser.error(f"--{option.replace('_', '-')}: this machine offers cores {sorted(os.sched_getaffinity(0))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in ("soak", "loadtest"):
        logging.getLogger(name).setLevel(logging.INFO)
    manifest = B.load_manifest(args.bundle)
    admin_token, write_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        if args.histories:
            data = TrafficData.load(args.histories)
        else:
            from loadtest.make_histories import dataset_histories

            data = TrafficData.load(dataset_histories(manifest.dataset, workdir / "histories.json"))
        bodies = [json.dumps(recommend_body(h, k=K, max_history=DEFAULT_MAX_HISTORY)).encode() for h in data.histories]
        server, url = procs.service(
            args.bundle,
            workdir,
            args.int8,
            args.threads,
            cpus=args.server_cpus,
            admin_token=admin_token,
            write_token=write_token,
            **args.settings,
        )
        with server:
            assert server.process is not None
            pid, port = server.process.pid, urlsplit(url).port  # with --server-cpus, taskset execs python in place: the same pid
            if args.client_cpus:
                os.sched_setaffinity(0, parse_cpus(args.client_cpus))
            capacity_run = asyncio.run(
                rawhttp.closed_loop("127.0.0.1", port, "/recommend", bodies, args.capacity_clients, args.capacity_seconds)
            )
            capacity = capacity_run.per_second(200)
            if capacity <= 0:
                raise SystemExit(f"no request succeeded while measuring capacity: {capacity_run.statuses()}")
            rate = args.load * capacity
            log.info("capacity %.1f/s at %d clients; offering %.1f/s (%.1fx)", capacity, args.capacity_clients, rate, args.load)
            warm = asyncio.run(
                rawhttp.open_loop(
                    "127.0.0.1", port, "/recommend", bodies, rate, args.warmup_seconds, timeout_s=args.request_timeout
                )
            )
            rss_warm = rss_of(pid)
            before = scrape(url)
            log.info("warm-up: %s; RSS %.0f MB; soaking %.0f s", warm.statuses(), rss_warm / 2**20, args.seconds)
            run, record, started = asyncio.run(soak(port, url, pid, bodies, rate, args, (admin_token, write_token)))
            rss_end = rss_of(pid)
            batch_ms, batch_size = batch_stats(before, scrape(url))
            with httpx.Client(base_url=url, timeout=60) as client:
                missing = [
                    i
                    for i, title in record.puts_acked.items()
                    if (r := client.get(f"/items/{i}")).status_code != 200 or r.json().get("title") != title
                ]
            exited = server.process.poll()
        tracebacks = server.log().count("Traceback (most recent call last)")

    failures = [s for s in run.samples if failed(s)]
    by_reload = [s for s in overlapping_reloads(run, record, started) if failed(s)]
    ok_p99 = run.percentile_ms(99, 200)
    limit = accepted_p99_limit_ms(args.bound, capacity, batch_ms) if batch_ms is not None else None
    growth = rss_end / rss_warm - 1
    reload_ok = all(r.status == 200 for r in record.reloads)
    goal_list = [
        ("no 5xx but 503 with Retry-After, every request answered", f"{len(failures)} failed of {run.count()}", not failures),
        (
            f"RSS at the end within {RSS_GROWTH_GOAL:.0%} of after warm-up",
            f"{rss_warm / 2**20:.0f} -> {rss_end / 2**20:.0f} MB ({growth:+.1%})",
            abs(growth) <= RSS_GROWTH_GOAL,
        ),
        (
            f"p99 of accepted <= {args.bound_name} {args.bound} / capacity {capacity:.1f}/s + one batch {batch_ms or 0:.0f} ms"
            + (f" = {limit:.0f} ms" if limit else ""),
            "-" if ok_p99 is None else f"{ok_p99:.0f} ms",
            None if ok_p99 is None or limit is None else ok_p99 <= limit,
        ),
        (
            f"hot reloads every {args.reload_every:g} s succeed, 0 failed requests overlapping them",
            f"{sum(r.status == 200 for r in record.reloads)}/{len(record.reloads)} ok, {len(by_reload)} failed requests",
            bool(record.reloads) and reload_ok and not by_reload,
        ),
        (
            "every acknowledged PUT is there afterwards",
            f"{len(record.puts_acked) - len(missing)}/{len(record.puts_acked)}"
            + (f", {len(record.puts_failed)} PUTs failed" if record.puts_failed else ""),
            not missing and not record.puts_failed,
        ),
        (
            "server still running, no traceback in its log",
            f"exit {exited}, {tracebacks} tracebacks",
            exited is None and tracebacks == 0,
        ),
    ]
    rows = windows(run, record, started, args.seconds, args.window)

    from training.provenance import machine_line, stamp

    info = {**stamp(), "machine_line": machine_line()}
    text = markdown(info, args, manifest, data, len(bodies), capacity, rate, run, batch_ms, batch_size, rows, goal_list, record)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text(text, encoding="utf-8")
    payload = {
        **info,
        "bundle_version": manifest.bundle_version,
        "settings": args.settings,
        "int8": args.int8,
        "bound_name": args.bound_name,
        "bound": args.bound,
        "capacity_per_s": capacity,
        "offered_per_s": rate,
        "seconds": args.seconds,
        "statuses": run.statuses(),
        "skipped": run.skipped,
        "ok_p50_ms": run.percentile_ms(50, 200),
        "ok_p99_ms": ok_p99,
        "rejected_p99_ms": run.percentile_ms(99, 503),
        "batch_ms": batch_ms,
        "batch_size": batch_size,
        "rss_warm_bytes": rss_warm,
        "rss_end_bytes": rss_end,
        "rss": record.rss,
        "reloads": [asdict(r) for r in record.reloads],
        "puts_acked": len(record.puts_acked),
        "puts_missing": missing,
        "puts_failed": record.puts_failed,
        "failed_examples": [asdict(s) for s in failures[:20]],
        "windows": rows,
        "goals": [{"goal": g, "measured": v, "met": ok} for g, v, ok in goal_list],
    }
    Path(f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s.md and %s.json", args.out, args.out)
    return 0 if all(ok for _g, _v, ok in goal_list) else 1


def markdown(
    info: dict,
    args: argparse.Namespace,
    manifest: B.Manifest,
    data: TrafficData,
    n_bodies: int,
    capacity: float,
    rate: float,
    run: rawhttp.Run,
    batch_ms: float | None,
    batch_size: float | None,
    rows: list[dict],
    goal_list: list,
    record: SoakRecord,
) -> str:
    def f(v: float | None, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    pinning = (
        f"server on cores {args.server_cpus}, load generator on {args.client_cpus}"
        if args.server_cpus or args.client_cpus
        else "server and load generator share all cores"
    )
    settings_text = ", ".join(f"`R2END_{k.upper()}={v}`" for k, v in args.settings.items()) or "defaults"
    reload_times = [r.seconds for r in record.reloads]
    lines = [
        "# Soak: ~2x saturation with hot reloads",
        "",
        f"`{info['command']}`  ",
        f"git {info['git_commit']}; {info['machine_line']}; {info['created']}",
        "",
        (
            f"Bundle `{manifest.bundle_version}` ({manifest.variant}, {manifest.n_items} items), {'int8' if args.int8 else 'fp32'} user graph; "
            f"service settings {settings_text}; {pinning}. Capacity {capacity:.1f} req/s (closed loop, {args.capacity_clients} clients, "
            f"{args.capacity_seconds:g} s); offered {rate:.1f} req/s ({args.load:g}x, Poisson arrivals, open loop) of `POST /recommend` with "
            f"{n_bodies} test-user histories of {data.dataset}, {args.warmup_seconds:g} s warm-up, then {args.seconds:g} s with "
            f"`POST /admin/reload` every {args.reload_every:g} s ({len(record.reloads)} reloads, "
            f"{f(min(reload_times) if reload_times else None)}-{f(max(reload_times) if reload_times else None)} s each) and "
            f"{args.puts_per_second:g} credentialed `PUT /items` per second."
        ),
        "",
        (
            f"Soak totals: statuses {run.statuses()} (0 = no answer), {run.skipped} arrivals not sent (client limit); "
            f"200 p50 {f(run.percentile_ms(50, 200))} ms, p99 {f(run.percentile_ms(99, 200))} ms; 503 p99 {f(run.percentile_ms(99, 503))} ms; "
            f"server batch {f(batch_ms)} ms for {f(batch_size)} histories on average."
        ),
        "",
        "| goal | measured | |",
        "|---|---|---|",
        *[f"| {g} | {v} | {'not measured' if ok is None else 'met' if ok else 'missed'} |" for g, v, ok in goal_list],
        "",
        "| from (s) | sent/s | 200/s | 503/s | failed | 200 p99 (ms) | RSS (MB) | reloads |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['from_s']:.0f} | {r['sent_per_s']:.1f} | {r['ok_per_s']:.1f} | {r['rejected_per_s']:.1f} | {r['failed']} | "
            f"{f(r['ok_p99_ms'])} | {f(r['rss_mb'], 0)} | {r['reloads']} |"
            for r in rows
        ],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
