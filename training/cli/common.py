"""What every ``r2end`` command shares: the console, clean errors, the one ``--set`` parser,
dataset loading and the logging set-up (one rich handler; third-party chatter only with ``--verbose``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

# Wide when piped, so that a file:line in an error is never folded.
console = Console(width=None if os.isatty(1) else 160)
log = logging.getLogger(__name__)

OWN_PACKAGES = ("training", "index", "service", "loadtest")
"""Loggers whose INFO records a user sees; every other library's only from ERROR up, unless --verbose."""

EXIT_USAGE = 2
QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",  # transformers and datasets log through their own handlers
    "DATASETS_VERBOSITY": "error",
    "TORCH_LOGS": "-all",  # so does torch (e.g. the ONNX exporter's notes): ERROR and up only
    "TQDM_DISABLE": "1",  # third-party progress bars (weight loading, model-card widget examples)
}
"""Read by those libraries when they are imported, i.e. after the CLI has set them (heavy imports are lazy)."""

DatasetArg = Annotated[
    str, typer.Argument(help="dataset: ml-100k, ml-1m or one added with `r2end data add` (or a name for --format/--path data)")
]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="raw format: recbole, ml-100k, ml-1m, ml-latest, amazon-2014, amazon-2018, yelp")
]
PathOpt = Annotated[Path | None, typer.Option("--path", help="folder of raw files for --format")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config field: key=value (the value is JSON, else a string)")
]

M = TypeVar("M", bound=BaseModel)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one ``error: ...`` line (escaped: paths may hold ``[...]``; never folded) and exit."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def parse_sets(items: Sequence[str], model: type[BaseModel]) -> dict[str, Any]:
    """``key=value`` strings -> ``{key: value}``; the one rule for every ``--set`` of every command.

    The value is read as JSON (``128``, ``0.5``, ``true``, ``{"design": "history-tower"}``) and
    otherwise kept as a string (``variant=foo``). A malformed item or a key that is not a field
    of ``model`` raises ValueError naming it; value types are checked when ``model`` is built.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        check_field(key, model, "--set ")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def check_field(key: str, model: type[BaseModel], where: str = "") -> None:
    """Raise ValueError unless ``key`` is a field of ``model``: a misspelt override must not be ignored."""
    if key not in model.model_fields:
        raise ValueError(f"{where}{key}: not a {model.__name__} field; known: {', '.join(model.model_fields)}")


def validation_message(exc: ValidationError) -> str:
    """``field: reason (got value)`` for every error of a pydantic ValidationError, on one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']} (got {e['input']!r})" for e in exc.errors())


def build_config(model: type[M], sets: Sequence[str], **base: Any) -> M:
    """``model`` from ``base`` values overridden by ``--set`` items; bad input exits with the key and the reason."""
    try:
        return model.model_validate({**base, **parse_sets(sets, model)})
    except ValidationError as exc:
        fail(f"invalid {model.__name__}: {validation_message(exc)}")
    except ValueError as exc:
        fail(str(exc))


def load_dataset(dataset: str, fmt: str | None = None, path: Path | None = None):
    """The prepared dataset a command asked for; a data problem exits with the file, line and field."""
    from training.data.registry import load_dataset as load
    from training.data.schema import DataFormatError

    try:
        return load(dataset, fmt, path)
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))


class _OwnOrSevere(logging.Filter):
    """Lets through our own records, and other libraries' only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_PACKAGES or record.levelno >= logging.ERROR


def setup_logging(verbose: bool = False) -> None:
    """One rich handler on stderr for the whole process.

    Our modules log progress at INFO (DEBUG with ``verbose``). Third-party loggers and Python
    warnings (routed into logging) are hidden below ERROR unless ``verbose``; libraries with their
    own handlers or bars are told through :data:`QUIET_ENVIRONMENT`.
    """
    handler = RichHandler(console=Console(stderr=True), show_path=verbose, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    if not verbose:
        handler.addFilter(_OwnOrSevere())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    if not verbose:
        for variable, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(variable, value)
    log.debug("verbose logging on")
