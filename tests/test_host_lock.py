"""The lock that lets a test marked `alone` run with no other test at once under xdist.

flock locks belong to open files, so threads that each open the lock files contend as
the xdist workers' processes do.
"""

from __future__ import annotations

import threading
import time

from host_lock import HostLock


def _holder(lock: HostLock, alone: bool, events: list, name: str, hold_s: float) -> threading.Thread:
    def body():
        held = lock.hold(alone)
        events.append(("start", name, time.monotonic()))
        time.sleep(hold_s)
        events.append(("end", name, time.monotonic()))
        held.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def _span(events: list, name: str) -> tuple[float, float]:
    return next(t for e, n, t in events if (e, n) == ("start", name)), next(t for e, n, t in events if (e, n) == ("end", name))


def test_shared_holders_run_together_and_an_alone_one_waits_for_them(tmp_path):
    lock, events = HostLock(tmp_path), []
    a = _holder(lock, False, events, "a", 0.4)
    b = _holder(lock, False, events, "b", 0.4)
    time.sleep(0.1)
    alone = _holder(lock, True, events, "alone", 0.1)
    for thread in (a, b, alone):
        thread.join(5)
    (a0, a1), (b0, b1), (g0, _) = _span(events, "a"), _span(events, "b"), _span(events, "alone")
    assert a0 < b1 and b0 < a1, "two shared holders did not overlap"
    assert g0 >= max(a1, b1), "the alone holder started while others ran"


def test_no_test_starts_while_an_alone_one_runs(tmp_path):
    lock, events = HostLock(tmp_path), []
    alone = _holder(lock, True, events, "alone", 0.3)
    time.sleep(0.05)
    other = _holder(lock, False, events, "other", 0.01)
    for thread in (alone, other):
        thread.join(5)
    assert _span(events, "other")[0] >= _span(events, "alone")[1]


def test_shared_holders_coming_one_after_another_do_not_starve_an_alone_one(tmp_path):
    lock, events = HostLock(tmp_path), []
    stop = threading.Event()

    def reader_chain(name):
        # Each shared hold overlaps the next one's request: without the turnstile the
        # exclusive request would never see the lock free.
        i = 0
        while not stop.is_set():
            _holder(lock, False, events, f"{name}{i}", 0.05).join(5)
            i += 1

    chains = [threading.Thread(target=reader_chain, args=(n,)) for n in ("r", "s")]
    for chain in chains:
        chain.start()
        time.sleep(0.02)
    time.sleep(0.1)
    asked = time.monotonic()
    alone = _holder(lock, True, events, "alone", 0.05)
    alone.join(3)
    stop.set()
    for chain in chains:
        chain.join(5)
    assert not alone.is_alive(), "the alone holder was starved by shared holders"
    assert _span(events, "alone")[0] - asked < 1.0
