"""Two operating-system helpers that training, the service and the load tests all need (one copy each)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a file created or renamed in ``folder`` durable: fsync the directory entry too.

    Best effort only where a directory cannot be opened at all; an fsync that fails raises, as a
    write that is acknowledged (an item change, a compacted teacher cache) must be on disk.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (free when asked: a caller that loses the race binds again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
