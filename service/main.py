"""Start the service: ``python -m service.main`` (or ``r2end serve``), configured by ``R2END_*`` variables.

One process, one uvicorn worker, per container. The batcher already keeps every core busy
(``R2END_ENCODE_WORKERS`` ONNX runs in flight, one per core by default), and it needs every
request of the machine in one queue to form batches; several uvicorn workers would each load
the model (memory x N), split the batches and oversubscribe the cores. Scale out with more
containers (each sized to its cores), not with more workers.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.settings import ServiceSettings

EXIT_BAD_SETTINGS = 2
EXIT_BAD_BUNDLE = 3


def run(settings: ServiceSettings | None = None) -> None:
    """Serve until SIGINT/SIGTERM; exit non-zero if the settings or the first bundle are unusable."""
    if settings is None:
        try:
            settings = ServiceSettings()  # type: ignore[call-arg]
        except ValidationError as exc:
            details = "; ".join(f"R2END_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            print(f"r2end serve: invalid settings: {details}", file=sys.stderr)
            sys.exit(EXIT_BAD_SETTINGS)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        access_log=False,
    )
    server = uvicorn.Server(config)
    runtime = app.state.runtime
    runtime.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run()
    if runtime.state == "failed":
        print(f"r2end serve: {runtime.error}", file=sys.stderr)
        sys.exit(EXIT_BAD_BUNDLE)


if __name__ == "__main__":
    run()
