"""Processes the load benchmark starts: the R2END service, llama.cpp, the generative app, Prometheus, Locust.

Each runs in its own subprocess with its log in the work directory and is always stopped by
:meth:`Managed.stop` (SIGTERM, then SIGKILL) - use them as context managers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from index.osutil import free_port

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
WRITE_TOKEN = "loadtest-write-token"  # R2END_WRITE_TOKEN of the loopback servers started here; Locust's PUTs send it


def child_env(**extra: object) -> dict[str, str]:
    """This environment without service (``R2END_<setting>``), load-test (``R2END_LT_*``) and Locust settings,
    the repo on PYTHONPATH, plus ``extra``: every child is configured by the benchmark alone."""
    from service.settings import ServiceSettings

    service_vars = {f"R2END_{name.upper()}" for name in ServiceSettings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in service_vars and not k.startswith(("R2END_LT_", "LOCUST_"))}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def terminate(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited after ``grace_s``; reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


class Managed:
    """A subprocess with a log file and an HTTP readiness URL."""

    def __init__(
        self,
        name: str,
        command: list[str],
        workdir: Path,
        env: dict[str, str],
        ready_url: str | None,
        timeout_s: float = 300.0,
        cwd: Path = REPO,
    ):
        self.name, self.command, self.env, self.ready_url, self.timeout_s, self.cwd = (
            name,
            command,
            env,
            ready_url,
            timeout_s,
            cwd,
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if self.ready_url:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited ({self.process and self.process.returncode}); log:\n{self.log()[-3000:]}"
                    )
                try:
                    if client.get(self.ready_url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {self.timeout_s:.0f} s; log:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service(
    bundle: Path, workdir: Path, int8: bool, threads: int | None = None, cpus: str | None = None, **settings: object
) -> tuple[Managed, str]:
    """``python -m service.main`` on a free loopback port (item log in ``workdir``) and its URL.

    ``cpus`` (a ``taskset -c`` list such as ``0`` or ``0-1``) pins the server to those cores from its
    start, so every thread it makes (ONNX Runtime's too) stays there; its default thread count then
    follows the pinned cores.
    """
    port = free_port()
    settings = {"write_token": WRITE_TOKEN, **settings}
    env = child_env(
        R2END_BUNDLE_PATH=bundle,
        R2END_HOST="127.0.0.1",
        R2END_PORT=port,
        R2END_USE_INT8=str(int8).lower(),
        R2END_ITEM_LOG_PATH=workdir / "items.jsonl",
        R2END_LOG_LEVEL="warning",
        **({"R2END_ONNX_THREADS": threads} if threads else {}),
        **{f"R2END_{k.upper()}": v for k, v in settings.items()},
    )
    url = f"http://127.0.0.1:{port}"
    name = "service-int8" if int8 else "service-fp32"
    command = [sys.executable, "-m", "service.main"]
    if cpus:
        command = [taskset(), "-c", cpus, *command]
    return Managed(name, command, workdir, env, url + "/readyz"), url


def taskset() -> str:
    """The ``taskset`` binary (util-linux), or a clear error."""
    path = shutil.which("taskset")
    if path is None:
        raise FileNotFoundError("taskset not found: install util-linux to pin processes to cores")
    return path


def llama_server(model: str, workdir: Path, parallel: int, threads: int) -> tuple[Managed, str]:
    """``python -m training.teacher.server`` (llama.cpp, OpenAI-compatible) and its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "training.teacher.server",
        "--model",
        model,
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "--threads",
        str(threads),
    ]
    url = f"http://127.0.0.1:{port}"
    return Managed(f"llama-{model}", command, workdir, child_env(), url + "/health", timeout_s=900.0), url


def generative_app(bundle: Path, llm_url: str, model: str, workdir: Path, max_tokens: int) -> tuple[Managed, str]:
    """``python -m loadtest.generative_app`` in front of ``llm_url`` and its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "loadtest.generative_app",
        "--bundle",
        str(bundle),
        "--llm-url",
        llm_url,
        "--model",
        model,
        "--port",
        str(port),
        "--max-tokens",
        str(max_tokens),
    ]
    url = f"http://127.0.0.1:{port}"
    return Managed(f"generative-{model}", command, workdir, child_env(), url + "/readyz"), url


def locust_command(
    host: str,
    users: int,
    seconds: float,
    csv_prefix: Path,
    histories: Path,
    mix: str,
    max_history: int = 200,
    stop_timeout: float = 0.0,
) -> list[str]:
    """A headless closed-loop Locust run: ``users`` users spawned within a second, for ``seconds``.

    ``stop_timeout``: seconds users may finish their request in flight at the end (slow systems: else it is lost).
    """
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(1, round(seconds))}s",
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "--csv-full-history",
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        f"{stop_timeout:g}",
        "--histories",
        str(histories),
        "--mix",
        mix,
        "--max-history",
        str(max_history),
        "--loglevel",
        "WARNING",
        "--write-token",
        WRITE_TOKEN,
    ]


def run_locust(
    host: str,
    users: int,
    seconds: float,
    csv_prefix: Path,
    histories: Path,
    mix: str,
    max_history: int = 200,
    stop_timeout: float = 0.0,
) -> None:
    """Run Locust to completion (its output in ``<csv_prefix>.log``); raise if it did not produce its CSV files."""
    command = locust_command(host, users, seconds, csv_prefix, histories, mix, max_history, stop_timeout)
    log_path = Path(f"{csv_prefix}.log")
    with open(log_path, "wb") as log:
        done = subprocess.run(
            command,
            check=False,
            cwd=REPO,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=seconds + stop_timeout + 600,
        )
    if done.returncode != 0 or not Path(f"{csv_prefix}_stats.csv").is_file():
        raise RuntimeError(f"locust failed ({done.returncode}); log:\n{log_path.read_text(errors='replace')[-3000:]}")


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


INFINITY_MODEL = "all-MiniLM-L6-v2"  # the --served-model-name; requests to the peer name it


def infinity(peer_root: Path, precision: str, workdir: Path, timeout_s: float = 600.0) -> tuple[Managed, str]:
    """infinity-emb (the side-by-side peer of ``scripts/bench_service.py``) serving all-MiniLM-L6-v2 and its URL.

    ``peer_root`` is what ``shared/peers/infinity/setup.sh`` made: its own venv (infinity needs
    numpy<2 and sentence-transformers<4, apart from this project's pins) and ONNX folders
    ``models/minilm-fp32`` and ``models/minilm-int8`` (``model_quantized.onnx``, which infinity's
    optimum engine picks on CPU). It must start inside the model folder with ``--model-id .``.
    Offline and without telemetry; on loopback; stopped like every :class:`Managed`. infinity 0.0.78
    cannot apply its own ONNX Runtime graph optimisation with optimum 2.1 (it logs "Optimization
    failed ... Going to use the unoptimized model"), so it serves the export as written.
    """
    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision {precision!r}: expected fp32 or int8")
    peer_root = Path(peer_root).resolve()
    executable = peer_root / "venv" / "bin" / "infinity_emb"
    model_dir = peer_root / "models" / f"minilm-{precision}"
    missing = [p for p in (executable, model_dir / "model.onnx") if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"infinity peer not installed at {peer_root} (missing {', '.join(map(str, missing))}); "
            f"run: PEER_ROOT={peer_root} bash shared/peers/infinity/setup.sh"
        )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{executable.parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
        HF_HOME=str(peer_root / "hf_home"),
    )
    command = [
        str(executable),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        INFINITY_MODEL,
        "--engine",
        "optimum",
        "--pooling-method",
        "mean",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-model-warmup",
    ]  # its warm-up times batches of 512 tokens (minutes on 2 cores); the benchmark warms up both servers alike
    url = f"http://127.0.0.1:{port}"
    return Managed(f"infinity-{precision}", command, workdir, env, url + "/health", timeout_s=timeout_s, cwd=model_dir), url
