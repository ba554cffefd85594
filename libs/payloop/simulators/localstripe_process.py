"""localstripe as a child process, kept in memory.

localstripe pickles its whole store to /tmp/localstripe.pickle after every write, and every
localstripe on the machine shares that file, so each request costs more than the last (tens of
milliseconds by a few thousand objects) and runs on one machine slow each other down. Tests and
the benchmark start from scratch and never read the copy back: they run it without one.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

from payloop.embedded import wait_for_port

_IN_MEMORY = ("from localstripe import resources, server; "
              "resources.Store.dump_to_disk = lambda self: None; server.start()")


def start_localstripe(port: int, cwd: Path, *, log: IO | int = subprocess.DEVNULL,
                      timeout_s: float = 20.0) -> subprocess.Popen:
    """A fresh, in-memory localstripe on `port`, answering when this returns."""
    cwd.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", _IN_MEMORY, "--port", str(port), "--from-scratch"],
                               cwd=cwd, stdout=log, stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log)
    try:
        wait_for_port("127.0.0.1", port, timeout_s, process, "localstripe")
    except (RuntimeError, TimeoutError):
        process.terminate()
        raise
    return process
