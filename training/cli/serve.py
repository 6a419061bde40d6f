"""``r2end serve``: the HTTP service for a bundle (FastAPI + ONNX Runtime + FAISS; no torch).

The options are shortcuts for the service's ``R2END_*`` settings, so that ``r2end serve`` and
``python -m service.main`` read, validate and report settings the same way: a missing or bad
setting is one clean line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


def configure(verbose: bool) -> None:
    """The service sets up its own logging from ``R2END_LOG_LEVEL``; ``--verbose`` makes that debug unless it is set."""
    if verbose:
        os.environ.setdefault("R2END_LOG_LEVEL", "debug")


@app.command("serve")
def serve(
    bundle: Annotated[Path | None, typer.Option(help="bundle folder (or R2END_BUNDLE_PATH)")] = None,
    dataset: Annotated[str | None, typer.Option(help="instead of --bundle: the bundle `r2end train --dataset` exported")] = None,
    variant: Annotated[str, typer.Option(help="with --dataset: the variant trained (r2end train --variant)")] = "r2end",
    host: Annotated[str | None, typer.Option(help="bind address (or R2END_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (or R2END_PORT)")] = None,
) -> None:
    """Serve a bundle over HTTP (FastAPI + ONNX Runtime + FAISS; no torch)."""
    from service.main import run

    if dataset is not None:
        from training.cli.common import fail
        from training.paths import bundles_dir

        if bundle is not None:
            fail("give --bundle or --dataset, not both")
        bundle = bundles_dir() / dataset / variant
        if not bundle.is_dir():
            fail(f"{bundle}: no bundle; run `r2end train --dataset {dataset} --variant {variant}` first")
    for name, value in (("BUNDLE_PATH", bundle), ("HOST", host), ("PORT", port)):
        if value is not None:
            os.environ[f"R2END_{name}"] = str(value)
    run()
