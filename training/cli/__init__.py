"""The ``r2end`` command: one subcommand group per pipeline stage.

:mod:`~training.cli.data` (datasets), :mod:`~training.cli.teach` (the teacher LLM),
:mod:`~training.cli.model` (baselines, training, export, evaluation, reports) and
:mod:`~training.cli.serve` (the service). Heavy imports (torch, sentence-transformers,
llama.cpp) happen inside the commands that need them, so ``r2end serve`` works on the slim
serving install.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# after the offline switches above
from training.cli import data, model, serve, teach
from training.cli.common import setup_logging

app = typer.Typer(
    help="r2end: Reasoning-to-Encoder Distillation for recommendation.", no_args_is_help=True, pretty_exceptions_show_locals=False
)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", envvar="R2END_VERBOSE", help="also show third-party logs and warnings")
    ] = False,
) -> None:
    """Set up logging once for whichever command runs (the service sets up its own)."""
    if ctx.invoked_subcommand == "serve":
        serve.configure(verbose)
    else:
        setup_logging(verbose)


app.add_typer(data.app, name="data")
app.add_typer(teach.app, name="teach")
app.add_typer(model.app)
app.add_typer(serve.app)
