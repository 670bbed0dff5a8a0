"""Make an engine uniformly slower: cap its processes' CPU with a cgroup, and leave the harness alone.

SIGSTOP/SIGCONT duty cycling does not work here (the harness resumes stopped
engines by design), and nice(1) changes nothing on an idle machine. A cgroup's
CPU quota does: the engine gets at most `cpus` cores' worth of time, as if it
ran on a slower machine, while the client and the measurement keep theirs.

    python tests/cpu_cap.py --cpus 1.25 -- pytest suites/test_serving.py ...

caps every descendant of the command (the vLLM servers it starts) but not the
command itself. Needs root and a writable cgroup cpu controller (v1 cpu or v2
cpu.max); `CpuCap.unavailable()` says why not, for a skip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuCap:
    """A cgroup whose processes share `cpus` cores' worth of CPU time at most."""

    def __init__(self, cpus: float) -> None:
        self.cpus = cpus
        self.name = f"pytest-rllm-cap-{uuid.uuid4().hex[:8]}"
        self.path: Path | None = None
        self._v2 = False

    @staticmethod
    def unavailable() -> str | None:
        """Why no cap can be made here, or None."""
        if os.geteuid() != 0:
            return "capping an engine's CPU needs root (a cgroup)"
        if (V1 / "cpu.cfs_quota_us").exists() and os.access(V1, os.W_OK):
            return None
        if (V2 / "cgroup.controllers").exists() and "cpu" in (V2 / "cgroup.subtree_control").read_text():
            return None
        return "no writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max)"

    def __enter__(self) -> CpuCap:
        problem = self.unavailable()
        if problem:
            raise RuntimeError(problem)
        quota = int(self.cpus * PERIOD_US)
        if (V1 / "cpu.cfs_quota_us").exists():
            self.path = V1 / self.name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            self._v2 = True
            self.path = V2 / self.name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        return self

    def add(self, pid: int) -> bool:
        assert self.path is not None
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
            return True
        except OSError:
            return False  # exited meanwhile

    def members(self) -> list[int]:
        assert self.path is not None
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def __exit__(self, *exc: object) -> None:
        if self.path is None:
            return
        parent = (self.path.parent / "cgroup.procs")
        for pid in self.members():
            try:
                parent.write_text(str(pid))  # back to the root group, so the folder can go
            except OSError:
                pass
        for _ in range(50):
            try:
                self.path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def descendants(root: int) -> list[int]:
    """PIDs whose ancestry leads to `root` (not root itself), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                rest = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                parents[int(entry.name)] = int(rest[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], {root}
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        out.extend(children)
        frontier = set(children)
    return out


class CapDescendants:
    """While active, moves every descendant of `root` into `cap` (a thread polls /proc)."""

    def __init__(self, cap: CpuCap, root: int, interval: float = 0.1) -> None:
        self.cap, self.root, self.interval = cap, root, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.moved: set[int] = set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in descendants(self.root):
                if pid not in self.moved and self.cap.add(pid):
                    self.moved.add(pid)
            self._stop.wait(self.interval)

    def __enter__(self) -> CapDescendants:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, required=True, help="cores' worth of CPU time the command's children share")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    with CpuCap(args.cpus) as cap:
        proc = subprocess.Popen(command)
        with CapDescendants(cap, proc.pid):
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
