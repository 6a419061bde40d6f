"""Benchmark the online service against raw ONNX Runtime and, optionally, infinity-emb, on one bundle (a benchmark, not a test).

In one run, for each precision asked for (fp32 and/or int8 user graph):

1. raw ONNX Runtime throughput of the bundle's user encoder at batch sizes = the concurrency
   levels (1, 8, 32), on pre-tokenised, pre-padded verbalised histories (``session.run`` alone);
2. end-to-end ``POST /recommend`` throughput and latency against a real server
   (``python -m service.main`` in a subprocess, same threads) with as many closed-loop clients as
   the batch size, then a single client's sequential latency;
3. with ``--peer-infinity PEER_ROOT``: infinity-emb 0.0.78 serving the same all-MiniLM-L6-v2 through
   ONNX Runtime at the same precision (its own venv, see ``shared/peers/infinity/setup.sh``), sent
   the same verbalised histories as ``POST /embeddings`` at the same concurrency levels.

The requests are the test users' histories of the bundle's dataset (943 for ML-100K), each
capped to its last 200 events (as the load test sends); r2end gets the events, raw ONNX and infinity the
text r2end verbalises from them (the bundle's own verbaliser). One table puts r2end,
raw ONNX and infinity side by side, with the ratios and whether each goal is met:

- end to end >= 0.9 x raw ONNX at the same batch size / concurrency (issue #13);
- with the peer, at equal precision: ``/recommend`` >= 1.5 x infinity's ``/embeddings`` throughput at
  8 clients, and ``/recommend`` p99 <= infinity's at 1 client (issue #13);
- single-client p99 <= 30 ms (sequential requests).

``--fusion`` adds how many transformer operators ONNX Runtime's optimizer fuses in the bundle's
user graph (and the peer's graph); ``--fusion-only`` prints just that. The client is a minimal
keep-alive HTTP/1.1 client on asyncio (``loadtest/rawhttp.py``), so that on a small machine the
load generator takes as little CPU from the server as possible.

    python scripts/bench_service.py BUNDLE [--precisions fp32,int8] [--peer-infinity /work/peer-infinity] [--seconds 10]
                                    [--append docs/BENCHMARKS.md] [--json out.json] [--fusion]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index import bundle as B
from index.catalog import Catalog
from index.onnx_encoder import OnnxTextEncoder, pad
from index.verbalize import HistoryEvent
from loadtest import fusion, procs, rawhttp
from loadtest.capacity import parse_settings
from loadtest.traffic import DEFAULT_MAX_HISTORY, TrafficData, recommend_body
from service.settings import available_cores

log = logging.getLogger("bench_service")

PRECISIONS = ("fp32", "int8")
DEFAULT_LEVELS = (1, 8, 32)
E2E_GOAL = 0.9  # end to end / raw ONNX at the same concurrency (issue #13)
PEER_THROUGHPUT_GOAL = 1.5  # /recommend / infinity /embeddings ...
PEER_THROUGHPUT_CLIENTS = 8  # ... at this many clients (issue #13)
PEER_P99_CLIENTS = 1  # /recommend p99 <= infinity's p99 at this many clients (issue #13)
SINGLE_P99_GOAL_MS = 30.0
K = 10


@dataclass
class Level:
    """One closed-loop level against one server."""

    concurrency: int
    per_second: float
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, run: rawhttp.Run) -> Level:
        return cls(
            run.concurrency,
            run.per_second(200),
            run.count(),
            run.count() - run.count(200),
            run.percentile_ms(50),
            run.percentile_ms(95),
            run.percentile_ms(99),
        )


@dataclass
class PrecisionResult:
    precision: str
    raw: dict[int, float]  # batch -> histories/s
    r2end: dict[int, Level]
    single: Level
    infinity: dict[int, Level] | None = None
    raw_parallel: tuple[int, float] | None = None  # (runs in flight, histories/s): one-thread runs of one history each


# ---- inputs -------------------------------------------------------------------------------------


def histories_path(args: argparse.Namespace, dataset: str, workdir: Path) -> Path:
    """``--histories``, or the test users' histories of the bundle's dataset (as the load benchmark makes them)."""
    if args.histories:
        return args.histories
    from loadtest.make_histories import dataset_histories

    return dataset_histories(dataset, workdir / "histories.json")


def requests_of(data: TrafficData, catalog: Catalog, manifest: B.Manifest) -> tuple[list[bytes], list[str]]:
    """Per test history (its last DEFAULT_MAX_HISTORY events, as the load test sends; unknown items dropped): the /recommend body and
    the text the service verbalises from it (the manifest's :class:`~index.verbalize.Verbaliser`, as ``ServingModel.history_text``)."""
    v = manifest.verbaliser
    bodies, texts = [], []
    for history in data.histories:
        known = [(item, ts) for item, ts in history[-DEFAULT_MAX_HISTORY:] if item in catalog]
        if not known:
            continue
        bodies.append(json.dumps(recommend_body(known, k=K)).encode())
        events = sorted((HistoryEvent(item, ts) for item, ts in known), key=lambda e: e.timestamp)
        texts.append(v.history_text(events, catalog.__getitem__))
    if not bodies:
        raise SystemExit(f"none of the {len(data.histories)} histories of {data.dataset} has an item of this bundle's catalogue")
    return bodies, texts


def embeddings_bodies(texts: list[str]) -> list[bytes]:
    """infinity's OpenAI-style ``POST /embeddings`` bodies: one history text each (one user per request, like /recommend)."""
    return [json.dumps({"model": procs.INFINITY_MODEL, "input": [text]}).encode() for text in texts]


# ---- measurements -------------------------------------------------------------------------------


def bench_raw(encoder: OnnxTextEncoder, tokens: list[list[int]], batch: int, seconds: float) -> float:
    """Histories per second through ``session.run`` alone (tokenised and padded beforehand)."""
    tokens = tokens * -(-batch // len(tokens))  # at least one full batch, however few the histories
    batches = [pad(tokens[i : i + batch]) for i in range(0, len(tokens) - batch + 1, batch)]
    encoder.run_padded(*batches[0])  # warm-up
    done, n, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds or n < 3:
        encoder.run_padded(*batches[n % len(batches)])
        done += batch
        n += 1
    return done / (time.perf_counter() - started)


def bench_raw_parallel(encoder: OnnxTextEncoder, tokens: list[list[int]], workers: int, seconds: float) -> float:
    """Histories per second with ``workers`` threads each running one history at a time through one
    shared session (its intra-op threads: the encoder's): the service's encode-worker strategy, raw."""
    inputs = [pad([t]) for t in tokens]
    encoder.run_padded(*inputs[0])
    counts = [0] * workers
    stop = time.perf_counter() + seconds

    def loop(worker: int) -> None:
        n = worker
        while time.perf_counter() < stop:
            encoder.run_padded(*inputs[n % len(inputs)])
            counts[worker] += 1
            n += workers

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def bench_http(url: str, path: str, bodies: list[bytes], levels: list[int], seconds: float) -> dict[int, Level]:
    """A short warm-up, then one closed-loop run per concurrency level."""
    port = urlsplit(url).port
    asyncio.run(rawhttp.closed_loop("127.0.0.1", port, path, bodies, 4, min(2.0, seconds)))
    results = {}
    for concurrency in levels:
        results[concurrency] = Level.of(asyncio.run(rawhttp.closed_loop("127.0.0.1", port, path, bodies, concurrency, seconds)))
        log.info(
            "%s %s, %d clients: %.1f req/s, p99 %.1f ms, %d errors",
            url,
            path,
            concurrency,
            results[concurrency].per_second,
            results[concurrency].p99_ms or float("nan"),
            results[concurrency].errors,
        )
    return results


def check_infinity(url: str, text: str) -> int:
    """One request outside the measurement: infinity answers with one vector; its dimension."""
    import httpx

    response = httpx.post(url + "/embeddings", json={"model": procs.INFINITY_MODEL, "input": [text]}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"infinity /embeddings answered {response.status_code}: {response.text[:500]}")
    data = response.json()["data"]
    if len(data) != 1 or not data[0]["embedding"]:
        raise RuntimeError(f"infinity /embeddings: expected one embedding, got {str(data)[:200]}")
    return len(data[0]["embedding"])


def bench_precision(
    args: argparse.Namespace, precision: str, manifest: B.Manifest, bodies: list[bytes], texts: list[str], workdir: Path
) -> PrecisionResult:
    int8 = precision == "int8"
    encoder = OnnxTextEncoder(
        args.bundle / (B.USER_ONNX_INT8 if int8 else B.USER_ONNX),
        args.bundle / B.TOKENIZER,
        manifest.max_seq_length,
        threads=args.threads or available_cores(),
    )
    tokens = encoder.tokenize(texts)
    raw = {batch: bench_raw(encoder, tokens, batch, args.seconds) for batch in args.levels}
    del encoder
    for batch, rate in raw.items():
        log.info("%s raw ONNX batch %d: %.1f histories/s", precision, batch, rate)
    workers = available_cores()
    narrow = OnnxTextEncoder(
        args.bundle / (B.USER_ONNX_INT8 if int8 else B.USER_ONNX), args.bundle / B.TOKENIZER, manifest.max_seq_length, threads=1
    )
    raw_parallel = (workers, bench_raw_parallel(narrow, tokens, workers, args.seconds))
    del narrow
    log.info("%s raw ONNX, %d one-thread runs of one history in parallel: %.1f histories/s", precision, *raw_parallel)

    server, url = procs.service(args.bundle, workdir / f"r2end-{precision}", int8, args.threads, **args.settings)
    with server:
        r2end = bench_http(url, "/recommend", bodies, args.levels, args.seconds)
        single_run = asyncio.run(rawhttp.sequential("127.0.0.1", urlsplit(url).port, "/recommend", bodies, args.single_requests))
        if single_run.count(200) != single_run.count():
            raise RuntimeError(f"single client: {single_run.statuses()} (expected only 200)")
        single = Level.of(single_run)
    result = PrecisionResult(precision, raw, r2end, single, raw_parallel=raw_parallel)

    if args.peer_infinity:
        peer, peer_url = procs.infinity(
            args.peer_infinity, precision, workdir / f"infinity-{precision}", timeout_s=args.peer_start_timeout
        )
        with peer:
            dim = check_infinity(peer_url, texts[0])
            log.info("infinity %s ready at %s (dimension %d)", precision, peer_url, dim)
            result.infinity = bench_http(peer_url, "/embeddings", embeddings_bodies(texts), args.levels, args.seconds)
    return result


# ---- report -------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "missed")


def table(results: list[PrecisionResult]) -> str:
    peer = any(r.infinity for r in results)
    head = "| precision | clients = batch | raw ONNX (hist/s) | r2end /recommend (req/s) | r2end / raw | r2end p50 (ms) | r2end p99 (ms) | errors |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if peer:
        head += " infinity /embeddings (req/s) | infinity p50 (ms) | infinity p99 (ms) | infinity errors | r2end / infinity |"
        rule += "---:|---:|---:|---:|---:|"
    lines = [head, rule]
    for r in results:
        for c, e in r.r2end.items():
            row = (
                f"| {r.precision} | {c} | {r.raw[c]:.1f} | {e.per_second:.1f} | {fmt(ratio(e.per_second, r.raw[c]), 2)} "
                f"| {fmt(e.p50_ms)} | {fmt(e.p99_ms)} | {e.errors} |"
            )
            if peer:
                i = (r.infinity or {}).get(c)
                row += (
                    f" {fmt(i and i.per_second)} | {fmt(i and i.p50_ms)} | {fmt(i and i.p99_ms)} | {'-' if i is None else i.errors} "
                    f"| {fmt(ratio(e.per_second, i and i.per_second), 2)} |"
                )
            lines.append(row)
    return "\n".join(lines)


def goals(results: list[PrecisionResult]) -> list[str]:
    """One line per goal and precision: the measured value and met / missed."""
    lines = []
    for r in results:
        p = f"**{r.precision}**"
        parts = [f"{fmt(ratio(e.per_second, r.raw[c]), 2)}x at {c}" for c, e in r.r2end.items()]
        ok = all((ratio(e.per_second, r.raw[c]) or 0) >= E2E_GOAL for c, e in r.r2end.items())
        lines.append(f"- {p} end to end >= {E2E_GOAL:g}x raw ONNX at the same concurrency: {', '.join(parts)} ({verdict(ok)})")
        if r.infinity is not None:
            mine, theirs = r.r2end.get(PEER_THROUGHPUT_CLIENTS), r.infinity.get(PEER_THROUGHPUT_CLIENTS)
            x = ratio(mine and mine.per_second, theirs and theirs.per_second)
            lines.append(
                f"- {p} `/recommend` >= {PEER_THROUGHPUT_GOAL:g}x infinity `/embeddings` at {PEER_THROUGHPUT_CLIENTS} clients: "
                f"{fmt(x, 2)}x ({verdict(None if x is None else x >= PEER_THROUGHPUT_GOAL)})"
            )
            mine, theirs = r.r2end.get(PEER_P99_CLIENTS), r.infinity.get(PEER_P99_CLIENTS)
            a, b = mine and mine.p99_ms, theirs and theirs.p99_ms
            lines.append(
                f"- {p} `/recommend` p99 <= infinity's at {PEER_P99_CLIENTS} client: {fmt(a)} vs {fmt(b)} ms "
                f"({verdict(None if a is None or b is None else a <= b)})"
            )
        if r.raw_parallel is not None:
            workers, rate = r.raw_parallel
            best = max(e.per_second for e in r.r2end.values())
            lines.append(
                f"- {p} raw ONNX with {workers} one-thread runs of one history in parallel (the service's encode workers, "
                f"raw): {rate:.1f} hist/s; best `/recommend` level {best:.1f} req/s = {fmt(ratio(best, rate), 2)}x of it"
            )
        s = r.single
        lines.append(
            f"- {p} single client, {s.requests} sequential requests: p50 {fmt(s.p50_ms)}, p95 {fmt(s.p95_ms)}, p99 {fmt(s.p99_ms)} ms "
            f"(p99 <= {SINGLE_P99_GOAL_MS:g} ms: {verdict(s.p99_ms is not None and s.p99_ms <= SINGLE_P99_GOAL_MS)})"
        )
    return lines


def fusion_reports(args: argparse.Namespace) -> list[tuple[str, fusion.FusionReport]]:
    reports = [("r2end user graph (fp32)", fusion.fusion_report(args.bundle / B.USER_ONNX))]
    if args.peer_infinity:
        reports.append(
            (
                "infinity peer, optimum export (fp32)",
                fusion.fusion_report(Path(args.peer_infinity) / "models" / "minilm-fp32" / "model.onnx"),
            )
        )
    return reports


def fusion_section(reports: list[tuple[str, fusion.FusionReport]]) -> str:
    return (
        "Transformer fusions that `onnxruntime.transformers.optimizer` (BERT, `opt_level=0`: its own fusions only) finds in "
        "each graph: nodes of each fused type afterwards (`LayerNormalization` also counts ones the export wrote as such). "
        "0 `Attention` and 0 `SkipLayerNormalization` mean ONNX Runtime runs each attention's MatMuls, Softmax and the residual "
        "Adds as separate nodes:\n\n" + fusion.markdown(reports)
    )


def report(
    args: argparse.Namespace,
    manifest: B.Manifest,
    data: TrafficData,
    texts: list[str],
    mean_tokens: float,
    truncated: float,
    results: list[PrecisionResult],
    fusions: list[tuple[str, fusion.FusionReport]],
) -> str:
    peer = (
        (
            " Peer: infinity-emb (`--engine optimum`, ONNX Runtime, mean pooling, same all-MiniLM-L6-v2; int8 = its dynamic "
            "per-channel `model_quantized.onnx`), started from `--peer-infinity`, same texts, same clients."
        )
        if args.peer_infinity
        else ""
    )
    lines = [
        (
            f"Bundle `{manifest.bundle_version}` ({manifest.variant}, {manifest.encoder}, {manifest.n_items} items). Raw ONNX: one "
            f"session, {args.threads or available_cores()} intra-op threads, batch = clients. Service settings: "
            f"{', '.join(f'{k}={v}' for k, v in args.settings.items()) or 'defaults'}"
            f"{f', R2END_ONNX_THREADS={args.threads}' if args.threads else ''}. Requests: {len(texts)} test-user histories of {data.dataset} "
            f"(at most {DEFAULT_MAX_HISTORY} events, k={K}), verbalised to a mean {mean_tokens:.0f} tokens "
            f"({truncated:.0%} cut at the graph's limit of {manifest.max_seq_length}). {args.seconds:g} s per level, closed loop "
            f"(each client sends its next request when the last is answered); the client runs on the same machine.{peer}"
        ),
        "",
        table(results),
        "",
        *goals(results),
    ]
    if fusions:
        lines += ["", fusion_section(fusions)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument(
        "--levels",
        type=lambda s: [int(v) for v in s.split(",") if v.strip()],
        default=list(DEFAULT_LEVELS),
        help="concurrency levels = raw ONNX batch sizes (default 1,8,32)",
    )
    parser.add_argument(
        "--precisions",
        type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
        default=["fp32"],
        help="user graphs to measure, in order: fp32, int8 or fp32,int8",
    )
    parser.add_argument("--int8", action="store_true", help="shorthand for --precisions int8")
    parser.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime intra-op threads of the raw runs (default: all cores) and the "
        "server's R2END_ONNX_THREADS (default: its own)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting R2END_<NAME> (repeatable), e.g. --set encode_workers=1",
    )
    parser.add_argument(
        "--histories", type=Path, help="histories JSON (loadtest/make_histories.py; default: the bundle's dataset's test users)"
    )
    parser.add_argument("--single-requests", type=int, default=300)
    parser.add_argument(
        "--peer-infinity",
        type=Path,
        metavar="PEER_ROOT",
        help="also measure infinity-emb installed there by shared/peers/infinity/setup.sh",
    )
    parser.add_argument("--peer-start-timeout", type=float, default=600.0, help="seconds infinity may take to become ready")
    parser.add_argument("--fusion", action="store_true", help="add the ONNX Runtime transformer-fusion counts of the user graph")
    parser.add_argument("--fusion-only", action="store_true", help="print the fusion counts and exit (no throughput runs)")
    parser.add_argument("--append", type=Path, help="append the section to this Markdown file (e.g. docs/BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    try:
        args.settings = parse_settings(args.settings)
    except ValueError as exc:
        parser.error(f"--set {exc}")
    if args.int8:
        args.precisions = ["int8"]
    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad or not args.precisions:
        parser.error(f"--precisions: {bad or 'none'}; expected a list of {', '.join(PRECISIONS)}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels: positive integers, e.g. 1,8,32")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)  # third-party chatter stays quiet
    for name in ("bench_service", "loadtest"):
        logging.getLogger(name).setLevel(logging.INFO)
    manifest = B.load_manifest(args.bundle)
    fusions = fusion_reports(args) if args.fusion or args.fusion_only else []
    if args.fusion_only:
        print(fusion_section(fusions))
        return
    catalog = Catalog.load_jsonl(args.bundle / B.CATALOG)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        workdir = Path(tmp)
        data = TrafficData.load(histories_path(args, manifest.dataset, workdir))
        bodies, texts = requests_of(data, catalog, manifest)
        tokenizer = OnnxTextEncoder(args.bundle / B.USER_ONNX, args.bundle / B.TOKENIZER, manifest.max_seq_length, threads=1)
        lengths = [len(ids) for ids in tokenizer.tokenize(texts)]
        del tokenizer
        mean_tokens = float(np.mean(lengths))
        truncated = float(np.mean([n >= manifest.max_seq_length for n in lengths]))
        log.info("%d requests from %s (mean %.0f tokens)", len(bodies), data.dataset, mean_tokens)
        results = [bench_precision(args, precision, manifest, bodies, texts, workdir) for precision in args.precisions]
    section = report(args, manifest, data, texts, mean_tokens, truncated, results, fusions)
    print(section)

    from training.provenance import machine_line, stamp

    info = stamp()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            **info,
            "bundle_version": manifest.bundle_version,
            "levels": args.levels,
            "seconds": args.seconds,
            "threads": args.threads,
            "settings": args.settings,
            "requests": len(bodies),
            "mean_tokens": mean_tokens,
            "results": [asdict(r) for r in results],
            "fusion": {
                label: {"fused": r.fused, "nodes_before": r.nodes_before, "nodes_after": r.nodes_after} for label, r in fusions
            },
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log.info("wrote %s", args.json)
    if args.append:
        title = "Service benchmark" + (" vs infinity-emb" if args.peer_infinity else "")
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write(
                f"\n## {title}, {info['created']}\n\n`{info['command']}`  \ngit {info['git_commit']}; {machine_line()}\n\n{section}\n"
            )
        log.info("appended to %s", args.append)


if __name__ == "__main__":
    main()
