"""``r2end teach run | status | compact | run-ray | serve``: the teacher LLM's rationales and item descriptions."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from training.cli.common import DatasetArg, FormatOpt, PathOpt, console, fail, load_dataset

if TYPE_CHECKING:
    from training.data.preprocess import PreparedDataset

app = typer.Typer(help="Teacher LLM: rationales and item descriptions.", no_args_is_help=True)

KindsOpt = Annotated[str, typer.Option(help="comma-separated, in order: oracle, description, unguided")]
DataDirOpt = Annotated[Path | None, typer.Option(help="teacher data folder (default: the repo's data/teacher)")]
LimitOpt = Annotated[int | None, typer.Option(help="stop after this many new generations per kind")]
ApiKeyOpt = Annotated[str | None, typer.Option(help="bearer token for --endpoint (or R2END_TEACHER_API_KEY)")]
ColdStartOpt = Annotated[
    float,
    typer.Option(
        "--cold-start",
        min=0.0,
        max=0.9,
        help="the prompts of the cold-start protocol (`r2end ablations --cold-start SHARE`): this share of items held out "
        "of the histories and evidence, as its training sees the data (0 = the full data)",
    ),
]
ColdSeedOpt = Annotated[
    int | None, typer.Option("--cold-seed", help="seed of the held-out items (default: R2ENDConfig's seed, as training)")
]


def _teacher_view(ds: PreparedDataset, cold_start: float, cold_seed: int | None) -> PreparedDataset:
    """The data the teacher's prompts are built from: ``ds``, or under the cold-start protocol the training view
    (held-out items removed), exactly as ``training.r2end.run`` builds it, so the keys match what training reads."""
    if cold_start <= 0:
        return ds
    from training.evaluation.coldstart import pick_cold_items, training_view
    from training.r2end.config import R2ENDConfig

    seed = R2ENDConfig.model_fields["seed"].default if cold_seed is None else cold_seed
    return training_view(ds, pick_cold_items(ds, cold_start, seed))


def _kinds(kinds: str) -> list[str]:
    return [k.strip() for k in kinds.split(",") if k.strip()]


def _backend(model: str, endpoint: str | None, api_key: str | None, concurrency: int, parallel: int, threads: int | None = None):
    """The OpenAI-compatible HTTP backend for ``endpoint``, else a local llama.cpp server."""
    if endpoint:
        from training.teacher.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(
            endpoint, model, api_key=api_key or os.environ.get("R2END_TEACHER_API_KEY"), concurrency=concurrency
        )
    from training.teacher.backends.llamacpp import LlamaCppSettings, LocalLlamaCppBackend

    settings = (
        LlamaCppSettings(n_parallel=parallel) if threads is None else LlamaCppSettings(n_parallel=parallel, n_threads=threads)
    )
    return LocalLlamaCppBackend(model, settings)


@app.command("run")
def teach_run(
    dataset: DatasetArg,
    kinds: KindsOpt = "oracle,description,unguided",
    model: Annotated[
        str, typer.Option(help="registered model name or .gguf path; with --endpoint, the served model name")
    ] = "qwen2.5-coder-1.5b",
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL; default: a local llama.cpp server")] = None,
    api_key: ApiKeyOpt = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight for --endpoint")] = 4,
    parallel: Annotated[int, typer.Option(help="llama.cpp slots for the local server")] = 4,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads for the local server (default: all cores)")] = None,
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
    redo_flagged: Annotated[
        bool, typer.Option("--redo-flagged", help="generate flagged records again (after a change to the retries)")
    ] = False,
    cold_start: ColdStartOpt = 0.0,
    cold_seed: ColdSeedOpt = None,
) -> None:
    """Generate missing teacher outputs (resumable: cached requests are skipped)."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path, run_tasks
    from training.teacher.tasks import build_tasks

    ds = _teacher_view(load_dataset(dataset, fmt, path), cold_start, cold_seed)
    folder = data_dir or teacher_data_dir(ds.name)
    backend = _backend(model, endpoint, api_key, concurrency, parallel, threads)

    async def go() -> None:
        try:
            for kind in _kinds(kinds):
                cache = TeacherCache(cache_path(folder, ds.name, kind))
                summary = await run_tasks(build_tasks(ds, kind), backend, cache, ds.name, limit=limit, redo_flagged=redo_flagged)
                cache.compact()
                console.print(f"{kind}: {summary}")
        finally:
            await backend.aclose()

    asyncio.run(go())


@app.command("status")
def teach_status(
    dataset: DatasetArg,
    model: str = "qwen2.5-coder-1.5b",
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
    cold_start: ColdStartOpt = 0.0,
    cold_seed: ColdSeedOpt = None,
) -> None:
    """Done/total, token rates and an ETA per kind of teacher output."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path
    from training.teacher.status import kind_status
    from training.teacher.tasks import KINDS, build_tasks

    ds = _teacher_view(load_dataset(dataset, fmt, path), cold_start, cold_seed)
    folder = data_dir or teacher_data_dir(ds.name)
    protocol = f", cold-start protocol ({cold_start:g} of the items held out)" if cold_start > 0 else ""
    table = Table(title=f"teacher data for {ds.name} ({model}{protocol}) in {folder / ds.name}")
    for column in ("kind", "done/total", "ok", "flagged", "other prompts", "prompt tok/s", "gen tok/s", "s/record", "ETA"):
        table.add_column(column, justify="right")

    def rate(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    for kind in KINDS:
        status = kind_status(kind, build_tasks(ds, kind), TeacherCache(cache_path(folder, ds.name, kind)), model)
        eta = status.eta_s
        table.add_row(
            kind,
            f"{status.done}/{status.total}",
            str(status.ok),
            str(status.flagged),
            str(status.other_prompts),
            rate(status.prompt_tok_s),
            rate(status.gen_tok_s),
            rate(status.wall_s_per_record),
            "done" if status.pending == 0 else (f"{eta / 3600:.1f} h" if eta is not None else "-"),
        )
    console.print(table)


@app.command("sample")
def teach_sample(
    dataset: str,
    kind: Annotated[str, typer.Option(help="oracle, description or unguided")] = "oracle",
    n: Annotated[int, typer.Option(min=1, help="how many records")] = 5,
    seed: Annotated[int, typer.Option(help="the draw's seed (the same seed and data give the same records)")] = 0,
    flagged: Annotated[bool, typer.Option("--flagged", help="draw from the flagged records instead of the usable ones")] = False,
    subject: Annotated[
        list[str] | None, typer.Option("--subject", help="print these records instead of a draw, e.g. item:529 or user:12")
    ] = None,
    model: str = "qwen2.5-coder-1.5b",
    data_dir: DataDirOpt = None,
) -> None:
    """Print a seeded random draw of teacher outputs (or the records of --subject) as Markdown, to read what the teacher writes."""
    import random

    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path
    from training.teacher.tasks import KINDS

    if kind not in KINDS:
        fail(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    path = cache_path(data_dir or teacher_data_dir(dataset), dataset, kind)
    if not path.is_file():
        fail(f"{path}: no teacher data; run `r2end teach run {dataset} --kinds {kind}` first")
    records = [r for r in TeacherCache(path).records() if r.get("model") == model]
    if subject:
        chosen = [r for r in records if r.get("subject") in subject]
        missing = sorted(set(subject) - {str(r.get("subject")) for r in chosen})
        if missing:
            fail(f"{path}: no {model} record for {', '.join(missing)}")
        console.print(f"{len(chosen)} {kind} records in {path}\n", markup=False)
    else:
        wanted = "flagged" if flagged else "ok"
        pool = sorted((r for r in records if r.get("status") == wanted), key=lambda r: str(r.get("subject")))
        chosen = sorted(random.Random(seed).sample(pool, min(n, len(pool))), key=lambda r: str(r.get("subject")))
        console.print(f"{len(chosen)} of {len(pool)} {wanted} {kind} records in {path} (seed {seed})\n", markup=False)
    for record in chosen:
        problem = f", {record['problem']}" if record.get("problem") else ""
        problem += ", flagged" if subject and record.get("status") != "ok" else ""
        console.print(f"**{record.get('subject')}** ({len(str(record.get('text', '')).split())} words{problem}):", markup=False)
        console.print(f"> {record.get('text', '')}\n", markup=False, highlight=False, soft_wrap=True)


@app.command("compact")
def teach_compact(dataset: str, data_dir: DataDirOpt = None) -> None:
    """Rewrite the cache files sorted by key (the committed form)."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache

    for path in sorted(((data_dir or teacher_data_dir(dataset)) / dataset).glob("*.jsonl")):
        console.print(f"{path}: {TeacherCache(path).compact()} records")


@app.command("run-ray")
def teach_run_ray(
    dataset: DatasetArg,
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL (vLLM, llama.cpp server, hosted API)")],
    kinds: KindsOpt = "oracle,description,unguided",
    model: Annotated[str, typer.Option(help="the served model name (part of the cache key)")] = "qwen2.5-coder-1.5b",
    api_key: ApiKeyOpt = None,
    actors: Annotated[int, typer.Option(help="Ray actors, each with its own HTTP client")] = 2,
    requests_per_actor: Annotated[int, typer.Option(help="requests each actor keeps in flight (= batch size)")] = 4,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray instance)")] = None,
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
    cold_start: ColdStartOpt = 0.0,
    cold_seed: ColdSeedOpt = None,
) -> None:
    """Like `teach run --endpoint`, with the requests spread over Ray Data actors (needs the `scale` extra)."""
    try:
        from training.teacher.ray_pipeline import RaySettings, ensure_ray, run_tasks_ray
    except ImportError as exc:
        fail(f"{exc}: install the scale extra (pip install 'ray[data]>=2.40,<3')")
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path
    from training.teacher.tasks import build_tasks

    ds = _teacher_view(load_dataset(dataset, fmt, path), cold_start, cold_seed)
    folder = data_dir or teacher_data_dir(ds.name)
    settings = RaySettings(
        endpoint=endpoint,
        model=model,
        api_key=api_key or os.environ.get("R2END_TEACHER_API_KEY"),
        actors=actors,
        requests_per_actor=requests_per_actor,
    )
    ensure_ray(ray_address)
    for kind in _kinds(kinds):
        cache = TeacherCache(cache_path(folder, ds.name, kind))
        summary = run_tasks_ray(build_tasks(ds, kind), settings, cache, ds.name, limit=limit)
        cache.compact()
        console.print(f"{kind}: {summary}")


@app.command("serve")
def teach_serve(
    model: str = "qwen2.5-coder-1.5b",
    port: int = 8088,
    parallel: int = 4,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads (default: all cores)")] = None,
) -> None:
    """Serve a local GGUF model on 127.0.0.1 with an OpenAI-compatible API."""
    from training.teacher.server import main

    main(["--model", model, "--port", str(port), "--parallel", str(parallel)] + (["--threads", str(threads)] if threads else []))
