"""What else the host did while a run was timed: CPU used by other processes, steal, and a speed probe.

An engine that is uniformly slower and a host that is busy look the same in a
run's throughput. The first is a regression; the second proves nothing. So each
run records, from /proc (Linux), how much of the machine's CPU went to
processes that are neither the engine nor this harness (a neighbour job, a
parallel test session) and how much the hypervisor stole. The regression gate
then calls a slower speed on a contended host "inconclusive", not "fail"
(checks/serving.py).

Each run also records how many pages the engine's processes had to read back from disk
(major page faults): these hosts run DAMON proactive reclaim, which pages out memory left
unused for a minute. It is recorded for the reader, not judged: on a warm engine, paused or
idle for 90 s, it read 0 (benchmarks/RESULTS.md).

The probe is a short single-threaded pure-Python loop run before each trial,
while the engine idles: a yardstick the engine does not run, recorded so a
report can show whether the host itself got slower between two sessions.

Everything degrades to "unknown" (None) off Linux or without /proc.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU times in clock ticks: the whole machine, and the processes we own."""

    t: float  # time.perf_counter()
    busy: int  # user+nice+system+irq+softirq, all CPUs (steal excluded: it is not ours)
    total: int  # busy + idle + iowait + steal
    steal: int
    own: int  # utime+stime of the engine's processes and this one, children included once
    engine_major_faults: int = 0  # pages the engine's processes had to read back from disk, so far

    def since(self, start: CpuSnapshot) -> HostLoad | None:
        total = self.total - start.total
        if total <= 0:
            return None
        foreign = max(0, (self.busy - start.busy) - (self.own - start.own))
        return HostLoad(foreign_cpu_share=foreign / total, steal_share=max(0, self.steal - start.steal) / total,
                        engine_major_faults=max(0, self.engine_major_faults - start.engine_major_faults))


@dataclass(frozen=True)
class HostLoad:
    """Shares of all CPUs' time during a run (0..1)."""

    foreign_cpu_share: float  # processes other than the engine and the harness
    steal_share: float  # taken by the hypervisor for other guests
    # Major page faults of the engine's processes: code or weights the host had paged out
    # (these hosts run DAMON proactive reclaim, which pages out what sat unused for a minute).
    engine_major_faults: int = 0

    def to_dict(self) -> dict[str, float]:
        return {"foreign_cpu_share": self.foreign_cpu_share, "steal_share": self.steal_share,
                "engine_major_faults": self.engine_major_faults}


def _machine_times(stat_text: str) -> tuple[int, int, int] | None:
    """(busy, total, steal) from /proc/stat's first line."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            fields = [int(x) for x in line.split()[1:]]
            fields += [0] * (8 - len(fields))
            user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
            # guest time is already counted in user (the kernel adds it there).
            busy = user + nice + system + irq + softirq
            return busy, busy + idle + iowait + steal, steal
    return None


def _process_ticks(stat_text: str) -> int:
    """utime+stime of one /proc/<pid>/stat line (fields after the parenthesised name)."""
    rest = stat_text.rsplit(")", 1)[-1].split()
    # rest[0] is the state (field 3); utime, stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def _process_major_faults(stat_text: str) -> int:
    """majflt (field 12) of one /proc/<pid>/stat line: faults that read a page from disk."""
    return int(stat_text.rsplit(")", 1)[-1].split()[9])


def _group_pids(pgids: Iterable[int]) -> list[int]:
    wanted = set(pgids)
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(rest[2]) in wanted:  # field 5: process group
            pids.append(int(entry.name))
    return pids


def snapshot(engine_pgids: Iterable[int] = ()) -> CpuSnapshot | None:
    """The machine's and our processes' CPU times now; None where /proc is not there to read."""
    try:
        machine = _machine_times((PROC / "stat").read_text())
    except OSError:
        return None
    if machine is None:
        return None
    engine = set(_group_pids(engine_pgids)) if engine_pgids else set()
    own = faults = 0
    for pid in engine | {os.getpid()}:
        try:
            text = (PROC / str(pid) / "stat").read_text()
            own += _process_ticks(text)
            if pid in engine:
                faults += _process_major_faults(text)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile: its ticks are lost, which only overstates foreign load a little
    return CpuSnapshot(time.perf_counter(), *machine, own=own, engine_major_faults=faults)


def python_speed(seconds: float = 0.1) -> float:
    """Millions of simple interpreter additions per second on one core, over `seconds`."""
    done = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        total = 0
        for i in range(2000):
            total += i
        done += 2000
        now = time.perf_counter()
        if now >= end:
            return done / (now - t0) / 1e6
