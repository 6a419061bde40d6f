"""Who made a number: the command, the git commit, the machine and the time."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from training.paths import REPO_ROOT

NOT_CODE = (":(exclude)data/teacher", ":(exclude)docs")


def git_commit() -> str:
    """HEAD commit, with ``+dirty`` when tracked code differs from it; ``unknown`` outside git.

    The teacher cache (``data/teacher/``, appended to by a running ``r2end teach``) and ``docs/``
    (generated reports) are inputs and outputs, not code: changes there do not make a result dirty.
    Every result records the teacher data it used separately.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or the platform string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """A short description of this machine."""
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def machine_line() -> str:
    """One-line machine description for docs."""
    m = machine()
    return f"{m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}"


def command_line() -> str:
    """The command that is running, as typed (``r2end ...`` when run through the console script)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("cli.py", "__main__.py")):
        argv[0] = "r2end"
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def stamp() -> dict[str, object]:
    """Everything a result file records about how it was made."""
    return {
        "command": command_line(),
        "git_commit": git_commit(),
        "machine": machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
