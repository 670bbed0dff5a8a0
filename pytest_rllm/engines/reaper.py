"""A watchdog process: when the pytest process dies (even by kill -9), kill the engine's process group.

Started by the server engine with its own session, so a SIGINT to the terminal's
foreground group does not reach it first. It exits once the engine group is gone.

    python -m pytest_rllm.engines.reaper PARENT_PID ENGINE_PGID
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable


def _answers(send_signal_0: Callable[[int, int], None], target: int) -> bool:
    """Whether signal 0 reaches `target` (a process or a group); one we may not signal still exists."""
    try:
        send_signal_0(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    return _answers(os.kill, pid)


def _group_alive(pgid: int) -> bool:
    return _answers(os.killpg, pgid)


def kill_group(pgid: int, grace: float = 5.0) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)  # a paused engine (one started ahead) acts on SIGTERM only once continued
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    parent, pgid = int(argv[0]), int(argv[1])
    while True:
        if not _group_alive(pgid):
            return 0
        if not _alive(parent) or os.getppid() == 1 and not _alive(parent):
            kill_group(pgid)
            return 0
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
