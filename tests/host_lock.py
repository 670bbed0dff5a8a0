"""A lock between the xdist workers of one test run: tests marked `alone` hold it exclusively.

Used by conftest.py's pytest_runtest_protocol; tested in test_host_lock.py.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class HostLock:
    """A readers-writer lock between the xdist workers of one run, from two flock files.

    flock grants a shared lock while a writer waits, so readers that come one after another
    could starve it forever; the writer therefore holds a turnstile while it waits, which
    every reader passes through before it takes its shared lock.
    """

    def __init__(self, folder: Path):
        self.turnstile = folder / "turnstile.lock"
        self.host = folder / "host.lock"

    def hold(self, alone: bool) -> IO[str]:
        turnstile = open(self.turnstile, "a")
        host = open(self.host, "a")
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(host, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            turnstile.close()
        return host  # closing it releases the lock
