"""Load benchmark: R2END (fp32 and int8 user encoder) vs generative LLM recommenders, under Locust.

In one run, on this machine:

1. the R2END service (``python -m service.main``) with the fp32 user encoder, then with the int8
   one; Locust runs headless at each concurrency level with the realistic traffic mix of
   ``loadtest/locustfile.py`` while a real Prometheus scrapes the service every second (its p99 of
   ``POST /recommend`` is read back through the HTTP API and put beside Locust's);
2. for each ``--models`` entry, a llama.cpp server and ``loadtest/generative_app.py`` in front of
   it, loaded with ``POST /recommend`` only (the one route a generative recommender has);
3. p50/p95/p99, sustained throughput and error rate per level from Locust's CSV files, the
   saturation throughput of each system and the ratio R2END / generative (goal >= 100x), written
   as a marked section of ``--out`` (default docs/BENCHMARKS.md) with a PNG plot beside it.

    python scripts/bench_load.py                                     # defaults: about 15-20 minutes
    python scripts/bench_load.py --duration 5 --levels 1,2 --models smollm2-135m --out /tmp/bench/BENCH.md   # smoke

(``scripts/bench_load.py`` runs :func:`main` of this module; so can ``r2end bench``.)

Generative levels and durations default per model (SmolLM2-135M: 1,2,4,8 users x 30 s; Qwen 1.5B:
1,2,4 x 60 s), limited to the largest ``--levels`` entry and scaled by ``--duration`` / 30;
``--gen-levels`` / ``--gen-duration`` set them for every model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from loadtest import procs, report
from loadtest.prom import INSTALL_HINT, Prometheus
from loadtest.results import LevelResult, level_result
from loadtest.traffic import DEFAULT_MAX_HISTORY, DEFAULT_MIX, TrafficData

REPO = procs.REPO

REFERENCE_DURATION = 30.0
MODEL_DEFAULTS: dict[str, tuple[tuple[int, ...], float]] = {
    "smollm2-135m": ((1, 2, 4, 8), 30.0),
    "qwen2.5-coder-1.5b": ((1, 2, 4), 60.0),
}
OTHER_MODEL_DEFAULT = ((1, 2, 4), 60.0)
GENERATIVE_MIX = "recommend=1"
GENERATIVE_STOP_TIMEOUT = 120.0  # seconds: a generation in flight at the end of a level completes and is counted


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip() and v.strip().lower() != "none"]


def home() -> Path:
    """``$R2END_HOME`` (as training.paths.home, without importing training)."""
    return Path(os.environ.get("R2END_HOME") or Path.home() / ".cache" / "r2end").expanduser()


def default_bundle() -> Path:
    return home() / "bundles" / "ml-100k" / "r2end"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle(), help="R2END bundle (default $R2END_HOME/bundles/ml-100k/r2end)"
    )
    parser.add_argument("--histories", type=Path, help="histories JSON (default: made from the bundle's dataset's test users)")
    parser.add_argument("--levels", type=int_list, default=[1, 2, 4, 8, 16, 32], help="R2END concurrency levels (users)")
    parser.add_argument("--duration", type=float, default=REFERENCE_DURATION, help="seconds per R2END level")
    parser.add_argument("--variants", type=name_list, default=["fp32", "int8"], help="R2END user encoders: fp32,int8")
    parser.add_argument("--mix", default=DEFAULT_MIX, help="R2END traffic mix (locustfile --mix)")
    parser.add_argument("--models", type=name_list, default=list(MODEL_DEFAULTS), help="generative baselines ('none' to skip)")
    parser.add_argument("--gen-levels", type=int_list, help="generative concurrency levels for every model")
    parser.add_argument("--gen-duration", type=float, help="seconds per generative level for every model")
    parser.add_argument("--llm-parallel", type=int, default=4, help="llama.cpp slots (continuous batching)")
    parser.add_argument("--llm-threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    parser.add_argument("--max-tokens", type=int, default=32, help="generation budget of the baseline")
    parser.add_argument("--onnx-threads", type=int, help="the service's R2END_ONNX_THREADS (default: all cores)")
    parser.add_argument("--no-prometheus", action="store_true", help="skip the Prometheus cross-check")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md", help="Markdown file to write the section into"
    )
    parser.add_argument("--plot", type=Path, help="PNG path (default: <out dir>/benchmarks/load.png)")
    parser.add_argument("--work-dir", type=Path, help="Locust CSVs and logs (default $R2END_HOME/runs/bench-load-<time>)")
    args = parser.parse_args(argv)
    args.plot = args.plot or args.out.parent / "benchmarks" / "load.png"
    if args.work_dir is None:
        args.work_dir = home() / "runs" / time.strftime("bench-load-%Y%m%dT%H%M%S")
    return args


def generative_plan(model: str, args: argparse.Namespace) -> tuple[list[int], float]:
    """Levels and seconds per level for one generative model (see the module docstring)."""
    levels, seconds = MODEL_DEFAULTS.get(model, OTHER_MODEL_DEFAULT)
    if args.gen_levels:
        levels = tuple(args.gen_levels)
    else:
        levels = tuple(u for u in levels if u <= max(args.levels)) or levels[:1]
    seconds = args.gen_duration if args.gen_duration else seconds * args.duration / REFERENCE_DURATION
    return list(levels), max(2.0, seconds)


def histories_file(args: argparse.Namespace, dataset: str) -> Path:
    """The given histories file, or one made from the dataset's test users (needs the training code, not torch)."""
    if args.histories:
        return args.histories
    from loadtest.make_histories import dataset_histories

    return dataset_histories(dataset, args.work_dir / "histories.json")


def bench_r2end(args: argparse.Namespace, variant: str, histories: Path, log) -> list[LevelResult]:
    """Every level against one service process (and its Prometheus)."""
    workdir = args.work_dir / f"r2end-{variant}"
    binary = None if args.no_prometheus else procs.prometheus_binary()
    if binary is None and not args.no_prometheus:
        log(f"no prometheus binary: skipping the Prometheus cross-check (install: {INSTALL_HINT})")
    results = []
    with ExitStack() as stack:
        server, url = procs.service(args.bundle, workdir, int8=variant == "int8", threads=args.onnx_threads)
        stack.enter_context(server)
        prom = None
        if binary:
            lifetime = len(args.levels) * (args.duration + 60) + 120
            prom = stack.enter_context(Prometheus(url.removeprefix("http://"), workdir / "prometheus", lifetime, binary))
        for users in args.levels:
            prefix = workdir / f"u{users}"
            procs.run_locust(url, users, args.duration, prefix, histories, args.mix, DEFAULT_MAX_HISTORY)
            level = level_result(f"R2END {variant}", users, prefix)
            if prom is not None and level.window is not None:
                level.prom_p99_ms, level.prom_rps = prom.level("/recommend", level.window)
            log(describe(level))
            results.append(level)
    return results


def bench_generative(args: argparse.Namespace, model: str, histories: Path, log) -> list[LevelResult]:
    """Every level against llama.cpp + the generative app for one model."""
    workdir = args.work_dir / f"generative-{model}"
    levels, seconds = generative_plan(model, args)
    results = []
    with ExitStack() as stack:
        llm, llm_url = procs.llama_server(model, workdir, args.llm_parallel, args.llm_threads)
        stack.enter_context(llm)
        app, url = procs.generative_app(args.bundle, llm_url, model, workdir, args.max_tokens)
        stack.enter_context(app)
        for users in levels:
            prefix = workdir / f"u{users}"
            procs.run_locust(
                url, users, seconds, prefix, histories, GENERATIVE_MIX, DEFAULT_MAX_HISTORY, stop_timeout=GENERATIVE_STOP_TIMEOUT
            )
            level = level_result(f"generative {model}", users, prefix)
            log(describe(level))
            results.append(level)
    return results


def describe(lv: LevelResult) -> str:
    prom = f", Prometheus p99 {lv.prom_p99_ms:.1f} ms" if lv.prom_p99_ms is not None else ""
    return (
        f"{lv.system} users={lv.users}: {lv.rps:.2f} /recommend req/s ({lv.total_rps:.2f} all), p50 {lv.p50_ms} ms, "
        f"p99 {lv.p99_ms} ms{prom}, {lv.requests} requests, errors {lv.error_rate:.2%}"
    )


def header(args: argparse.Namespace, manifest, data: TrafficData, skipped: list[str], prometheus: bool) -> dict:
    from service.metrics import LATENCY_BUCKETS
    from training.provenance import machine_line, stamp

    info = stamp()
    lengths = [min(len(h), DEFAULT_MAX_HISTORY) for h in data.histories]
    models = (
        ", ".join(
            f"{m} ({','.join(map(str, generative_plan(m, args)[0]))} users x {generative_plan(m, args)[1]:.0f} s)"
            for m in args.models
        )
        or "none"
    )
    setup = [
        (
            f"Bundle `{manifest.bundle_version}` ({manifest.variant}, {manifest.encoder}, {manifest.n_items} items, dataset "
            f"{manifest.dataset}). Traffic: {len(lengths)} test-user histories of {data.dataset} (events with timestamps, "
            f"median length {statistics.median(lengths):.0f}, at most {DEFAULT_MAX_HISTORY})."
        ),
        (
            f"R2END: `python -m service.main`, ONNX threads {args.onnx_threads or 'all cores'}, levels "
            f"{','.join(map(str, args.levels))} users x {args.duration:.0f} s, traffic mix `{args.mix}` (`/recommend`, "
            "`/recommend/batch` of 2-16 users, `PUT /items/lt-<uuid>` upserts, `GET /items/{id}`). "
            f"Generative (SLIM-style, `loadtest/generative_app.py` + llama.cpp, {args.llm_parallel} slots, {args.llm_threads} threads, "
            f"temperature 0, max {args.max_tokens} tokens, `/recommend` only): {models}."
        ),
        (
            "Closed loop: each Locust user sends its next request when the last is answered (users = concurrency); Locust "
            "runs on the same machine and takes CPU from the server."
        ),
    ]
    if skipped:
        setup.append("Skipped: " + "; ".join(skipped) + ".")
    buckets = ", ".join(f"{b * 1000:g}" for b in LATENCY_BUCKETS)
    notes = [
        (
            "Throughput is successful `POST /recommend` answers per second over each run's steady window (after the users "
            "spawned and a 20% warm-up, up to the last second in which requests completed); the saturation throughput is the "
            "best level with an error rate <= 1%. R2END's mixed traffic spends part of its capacity on batch requests and "
            "upserts, so its `/recommend` rate understates what it serves: the ratios are conservative."
        ),
        (
            "The generative levels let the request in flight at the end finish (Locust `--stop-timeout`), so a level as short "
            "as a few generations still records them."
        ),
        "Locust's percentiles are over the whole run and rounded by Locust (to 1 ms below 100 ms, 10 ms below 1 s, 100 ms above).",
    ]
    if prometheus:
        notes.append(
            'Prometheus p99 is `histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{handler="/recommend"}[<window>])) '
            "by (le))` at the end of each level's steady window, scraped every second. It can only be as precise as the "
            f"histogram's buckets ({buckets} ms, then coarser): inside a bucket it interpolates linearly, so a p99 "
            "between two bounds is an estimate (and one above the last finite bound is reported as that bound). It is "
            "measured inside the app (the instrumentator's middleware), without the client's connection and queueing time, "
            "so apart from the interpolation it reads at or below Locust's p99; a large gap means time spent outside the "
            "handler (accept queue, event loop, CPU contention with the load generator)."
        )
    return {
        "command": info["command"],
        "git_commit": info["git_commit"],
        "machine": machine_line(),
        "created": info["created"],
        "setup": [" ".join(setup)],
        "notes": [f"- {n}" for n in notes],
        "stamp": info,
    }


def missing_models(models: list[str]) -> list[str]:
    """Why each requested generative model cannot run (registered but not installed), checked up front."""
    from training.teacher.models import REGISTRY, not_installed

    return [str(not_installed(REGISTRY[m])) for m in models if m in REGISTRY and not REGISTRY[m].installed()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from index import bundle as B

    def log(message: str) -> None:
        print(f"[bench_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    missing = missing_models(args.models)
    if missing:  # before the R2END levels: a comparison without its reference is not worth ten minutes
        print(f"bench_load: --models: {'; '.join(missing)} (or leave it out with --models)", file=sys.stderr)
        return 2
    manifest = B.load_manifest(args.bundle, verify_checksums=False)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    histories = histories_file(args, manifest.dataset)
    data = TrafficData.load(histories)
    log(f"work dir {args.work_dir}; {len(data.histories)} histories from {histories}")
    levels: list[LevelResult] = []
    skipped: list[str] = []
    for variant in args.variants:
        if variant == "int8" and not (args.bundle / B.USER_ONNX_INT8).is_file():
            skipped.append(f"R2END int8 (no {B.USER_ONNX_INT8} in the bundle)")
            log(skipped[-1])
            continue
        levels += bench_r2end(args, variant, histories, log)
    for model in args.models:
        try:
            levels += bench_generative(args, model, histories, log)
        except (RuntimeError, TimeoutError) as exc:
            skipped.append(f"generative {model} ({str(exc).splitlines()[0]})")
            log(f"skipping {model}: {exc}")
    prometheus = any(lv.prom_p99_ms is not None for lv in levels)
    info = header(args, manifest, data, skipped, prometheus)
    plot_path = report.plot(levels, args.plot) if levels else None
    plot_ref = os.path.relpath(plot_path, args.out.parent) if plot_path else None
    section = report.markdown(levels, info, plot_ref)
    report.write_section(args.out, section)
    raw = {
        "stamp": info["stamp"],
        "args": {k: str(v) for k, v in vars(args).items()},
        "skipped": skipped,
        "levels": [lv.to_json() for lv in levels],
    }
    (args.plot.with_suffix(".json")).write_text(json.dumps(raw, indent=2) + "\n")
    print(section)
    log(f"wrote {args.out}, {args.plot} and {args.plot.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
