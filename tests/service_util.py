"""Helpers for the service tests: the tiny bundle, a real uvicorn server in a subprocess, metric parsing.

The bundle is trained on ``tests/fixtures/recbole/movies`` (40 users x 30 movies) without any
teacher data, once per test session (about a minute). ``R2END_TEST_BUNDLE=/path`` reuses a
bundle built earlier (for quick iterations; CI builds it); ``R2END_TEST_STARTUP_TIMEOUT=600`` waits longer
for a server to become ready on a busy machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx
from locations import MOVIES, REPO

from index.osutil import free_port
from loadtest.procs import WRITE_TOKEN, terminate

FIXTURE = MOVIES
STARTUP_TIMEOUT = float(os.environ.get("R2END_TEST_STARTUP_TIMEOUT", "120"))  # seconds; the machine may be busy with other jobs
ADMIN_TOKEN = "test-admin-token"
WRITE_AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}  # every ServiceProcess takes writes with it unless given write_token=""
START_COMMAND = ["python", "-m", "service.main"]  # the Dockerfile's CMD (tests/unit/test_deployment.py checks)


def build_tiny_bundle(out_dir: Path) -> Path:
    """Train the tiny R2END variant on the fixture dataset (no teacher data) and export its bundle."""
    from training.data.preprocess import prepare
    from training.data.recbole import load_recbole
    from training.export import export_bundle
    from training.r2end.config import R2ENDConfig
    from training.r2end.pipeline import train_r2end

    ds = prepare(load_recbole(FIXTURE, "movies"), k=2)
    config = R2ENDConfig(item_text="metadata", rationale="item", projection_epochs=2, threads=2, variant="tiny")
    model = train_r2end(config, ds)
    export_bundle(model, ds, out_dir)
    return out_dir


def copy_bundle(source: Path, target: Path, bundle_version: str | None = None) -> Path:
    """A copy of a bundle; ``bundle_version`` rewrites the manifest's (the manifest is not checksummed)."""
    shutil.copytree(source, target)
    if bundle_version is not None:
        set_bundle_version(target, bundle_version)
    return target


def set_bundle_version(bundle: Path, bundle_version: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["bundle_version"] = bundle_version
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def service_env(**settings: object) -> dict[str, str]:
    """Environment for a service subprocess: repo on the path, no inherited R2END_* service settings."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("R2END_") and k != "R2END_HOME")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("R2END_HOME", str(REPO / ".r2end"))
    env["R2END_ONNX_THREADS"] = "1"
    env["R2END_LOG_LEVEL"] = "info"
    for name, value in settings.items():
        env[f"R2END_{name.upper()}"] = str(value)
    return env


class ServiceProcess:
    """``python -m service.main`` on 127.0.0.1 and a free port; always stopped by :meth:`stop`."""

    def __init__(self, bundle: Path, workdir: Path, **settings: object):
        self.bundle = bundle
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings = {"bundle_path": bundle, "item_log_path": workdir / "items.jsonl", "write_token": WRITE_TOKEN, **settings}
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.log_path = workdir / "server.log"
        self._log_handle = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def start(self, wait_ready: bool = True) -> Self:
        for _attempt in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            env = service_env(**{**self.settings, "port": self.port, "host": "127.0.0.1"})
            self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it until stop() closes it
            self.process = subprocess.Popen(
                [sys.executable, *START_COMMAND[1:]], cwd=REPO, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT
            )
            if not wait_ready:
                return self
            if self.wait_ready():
                return self
            if "address already in use" not in self.log().lower():
                break
        raise RuntimeError(f"service did not become ready; exit code {self.process.poll()}; log:\n{self.log()[-4000:]}")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Poll /readyz until 200 (True), or the process exits / time runs out (False)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.1)  # poll interval, not synchronisation
        return False

    def wait_exit(self, timeout: float = STARTUP_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (labels as printed)."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of samples named ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def metric_names(text: str) -> set[str]:
    """Every sample name in a Prometheus text exposition."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def assert_error_shape(response: httpx.Response) -> list[dict]:
    """Every error answer: JSON ``{"detail": [{"loc": [...], "msg": str, "type": str}]}``."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body.get("detail"), list) and body["detail"], body
    for entry in body["detail"]:
        assert isinstance(entry["loc"], list) and isinstance(entry["msg"], str) and entry["msg"], body
        assert isinstance(entry["type"], str) and entry["type"], body
    return body["detail"]
