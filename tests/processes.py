"""Process helpers shared by the engine tests: find an engine's processes by a
unique marker in their command line (a per-test model path) and wait for them."""

from __future__ import annotations

import os
import time
from pathlib import Path


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains `marker`, other than this process and a pytest runner."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # A pytest runner started with the model path on its command line names it too.
        if marker in cmdline and " -m pytest " not in cmdline:
            found.append(int(proc.name))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def ctrl_c_delivered() -> None:
    """Popen preexec_fn: the child takes SIGINT as Ctrl-C even when this runner was started in the background.

    A shell that starts a job with `&` (as CI scripts may) sets SIGINT to ignored, the
    child inherits it, and Python then never raises KeyboardInterrupt: a Ctrl-C test
    would send a signal nobody hears.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
