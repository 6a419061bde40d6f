"""``python -m training.teacher.server``: a standalone llama.cpp OpenAI-compatible server.

Used by ``r2end teach serve``, by the HTTP-backend test and the benchmarks. Runs
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading

from training.teacher.backends.llamacpp import LlamaCppServer, LlamaCppSettings


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, start the server, print its URL, wait for a signal."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="registered model name or .gguf path")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parallel", type=int, default=LlamaCppSettings.n_parallel)
    parser.add_argument("--threads", type=int, default=LlamaCppSettings.n_threads)
    parser.add_argument("--ctx-per-slot", type=int, default=LlamaCppSettings.ctx_per_slot)
    parser.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer <key>' on every API request (default: no key, loopback only)",
    )
    args = parser.parse_args(argv)
    settings = LlamaCppSettings(n_parallel=args.parallel, n_threads=args.threads, ctx_per_slot=args.ctx_per_slot)
    server = LlamaCppServer(args.model, settings, port=args.port, host=args.host, api_key=args.api_key or None)
    print(f"serving {server.model_id} at {server.base_url}/v1", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.close()


if __name__ == "__main__":
    main()
