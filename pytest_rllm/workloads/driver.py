"""The driver: sends each job at its scheduled time, with an optional in-flight cap.

    result = await drive(jobs, offsets, send, max_concurrency=None, run_timeout=600)

`send(job, t_scheduled)` is the caller's coroutine (the streaming client). It
stamps `t_sent` itself just before the request leaves, so the send lag it
records, t_sent - t_scheduled, measures this driver. It must not raise for
request failures; an exception from it is treated as a bug: the run is
cancelled and the exception re-raised.

Precision, and why it is done this way:
- One scheduler coroutine walks the jobs in offset order and launches each
  job's task only a short lead before it is due, so 10k jobs never mean 10k
  sleeping tasks and timers.
- Event-loop sleeps oversleep (uvloop's timers have 1 ms resolution, asyncio's
  selector rounds its timeout up, and a busy loop adds its own delay). So the
  scheduler's sleeps end a lead early (`spin`; by default adapted to the
  oversleep it observes, see `_Lead`), and the launched task yields with
  sleep(0) until the due time, then calls `send` in that same step. Yielding
  instead of blocking keeps the in-flight streams served while it waits, and
  calling `send` from the task that waited avoids a task start-up delay (one
  loop pass) after the due time.
- Jobs that are due together (batch, or a bursty Gamma draw) launch in one
  pass, with no yield between them.

Concurrency cap: the gap-preserving rule of pytest_rllm.workloads.arrivals. A
due job that finds every slot busy waits for one, and every later job's due
time moves by the same wait, so released gaps never shrink below the drawn
gaps: a backlog never leaves in a burst above the rate. `t_scheduled` passed
to `send` is the release time after that shift (so send lag stays a measure of
the driver); `DriveResult.cap_delay` holds the total shift.

Works on asyncio's default loop and on uvloop; it only uses the loop's
public API.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

# Coarse sleeps end `spin` seconds before the due time and the rest is spent
# yielding. A fixed lead either wastes CPU (spinning costs about spin x rate of
# a core: 2 ms at 200 req/s is 40%, taken from the engine on a shared CPU) or
# is too short for the loop's timer (uvloop: 1 ms granularity; asyncio rounds
# its poll timeout up to 1 ms; a loaded host adds more). So by default the
# lead adapts: the 90th percentile of how late recent coarse sleeps woke, plus
# a margin, within [MIN_SPIN, MAX_SPIN]. The ceiling is low on purpose: wake-ups
# later than that are the OS preempting a process on a busy host, which a
# longer spin does not cure (the spinning process is preempted as well) but
# pays for in CPU (benchmarks/RESULTS.md: a longer fixed lead gave more late sends).
DEFAULT_SPIN = None
INITIAL_SPIN = 0.0015
MIN_SPIN = 0.0003
MAX_SPIN = 0.0015
SPIN_MARGIN = 0.0002
_WINDOW = 64  # recent oversleeps kept


class _Lead:
    """The spin lead: fixed, or adapted to the observed oversleep of coarse sleeps."""

    def __init__(self, fixed: float | None) -> None:
        self.fixed = fixed
        self.value = INITIAL_SPIN if fixed is None else fixed
        self._late: list[float] = []
        self._next = 0

    def observe(self, late: float) -> None:
        if self.fixed is not None:
            return
        if len(self._late) < _WINDOW:
            self._late.append(late)
        else:
            self._late[self._next] = late
            self._next = (self._next + 1) % _WINDOW
        if len(self._late) >= 8 and self._next % 8 == 0:
            ordered = sorted(self._late)
            high = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            self.value = min(MAX_SPIN, max(MIN_SPIN, high + SPIN_MARGIN))


@dataclass
class DriveResult(Generic[T]):
    """What happened to the jobs; indices refer to the `jobs` list."""

    started: list[int] = field(default_factory=list)  # in start order
    finished: int = 0
    cancelled: list[int] = field(default_factory=list)  # in flight when the run timed out
    not_sent: list[int] = field(default_factory=list)  # never started (run timed out first)
    timed_out: bool = False
    max_in_flight: int = 0
    spin: float = 0.0  # the spin lead at the end (adapted unless fixed)
    cap_delay: float = 0.0  # total seconds the schedule slid because the cap was full
    capped: int = 0  # jobs whose release the cap delayed
    t_start: float = 0.0  # perf_counter() of offset 0
    t_end: float = 0.0


async def drive(
    jobs: Sequence[T],
    offsets: Sequence[float],
    send: Callable[[T, float], Awaitable[None]],
    *,
    max_concurrency: int | None = None,
    run_timeout: float | None = None,
    spin: float | None = DEFAULT_SPIN,
    start_at: float | None = None,
) -> DriveResult[T]:
    """Send every job at perf_counter() start + offset; return when all finished or at run_timeout.

    Jobs go in offset order (stable for ties, so equal offsets keep list order).
    On run_timeout the jobs still in flight are cancelled and awaited, the
    jobs not yet started are listed in `not_sent`, and drive returns normally:
    the caller marks those records as failed.
    """
    if len(jobs) != len(offsets):
        raise ValueError(f"{len(jobs)} jobs but {len(offsets)} offsets")
    if max_concurrency is not None and max_concurrency <= 0:
        raise ValueError(f"max_concurrency must be above 0, got {max_concurrency}")
    if run_timeout is not None and run_timeout <= 0:
        raise ValueError(f"run_timeout must be above 0, got {run_timeout}")
    if spin is not None and spin < 0:
        raise ValueError(f"spin must be 0 or more seconds, got {spin}")
    lead = _Lead(spin)
    order = sorted(range(len(jobs)), key=lambda i: offsets[i])
    result: DriveResult[T] = DriveResult()
    loop = asyncio.get_running_loop()
    in_flight: dict[asyncio.Task[None], int] = {}
    slot_freed = asyncio.Event()
    failure: list[BaseException] = []
    all_done = loop.create_future()
    position = 0  # next index into `order`

    def on_done(task: asyncio.Task[None]) -> None:
        in_flight.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        result.finished += 1
        slot_freed.set()
        if exc is not None:
            failure.append(exc)  # a bug in send: stop the run and re-raise it
            finish()
        elif position >= len(order) and not in_flight:
            finish()

    def finish(_: object = None) -> None:
        if not all_done.done():
            all_done.set_result(None)

    turn = [0]  # launch number of the job whose send goes next

    async def fire(job: T, due: float, number: int) -> None:
        # Started `spin` early, so the send itself begins in the same step
        # that sees the due time pass: no task start-up delay in the lag.
        # Waiting for its turn too keeps the offset order: two spinning jobs
        # due microseconds apart could otherwise see their times pass in the
        # wrong order within one loop pass.
        while turn[0] != number or time.perf_counter() < due:
            await asyncio.sleep(0)
        turn[0] += 1
        await send(job, due)

    async def schedule() -> None:
        nonlocal position
        shift = 0.0
        while position < len(order):
            index = order[position]
            due = start + offsets[index] + shift
            wake = due - lead.value
            ahead = wake - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
                lead.observe(time.perf_counter() - wake)
            if max_concurrency is not None and len(in_flight) >= max_concurrency:
                # The slot is taken at launch, up to the spin lead before the send.
                while len(in_flight) >= max_concurrency:
                    slot_freed.clear()
                    await slot_freed.wait()
                now = time.perf_counter()
                if now > due:
                    # The gap-preserving rule: everything after this job slides too.
                    shift += now - due
                    result.cap_delay += now - due
                    result.capped += 1
                    due = now
            if failure:
                return
            task = loop.create_task(fire(jobs[index], due, position))
            in_flight[task] = index
            task.add_done_callback(on_done)
            result.started.append(index)
            result.max_in_flight = max(result.max_in_flight, len(in_flight))
            position += 1
        if not in_flight:
            finish()

    start = time.perf_counter() if start_at is None else start_at
    result.t_start = start
    scheduler = loop.create_task(schedule())
    # A scheduler that raised (or stopped on a failure) must end the wait too.
    scheduler.add_done_callback(lambda t: finish() if t.cancelled() or t.exception() or failure else None)
    try:
        remaining = None if run_timeout is None else start + run_timeout - time.perf_counter()
        if remaining is not None and remaining <= 0:
            result.timed_out = True
        else:
            try:
                await asyncio.wait_for(asyncio.shield(all_done), remaining)
            except asyncio.TimeoutError:
                result.timed_out = True
    finally:
        scheduler.cancel()
        pending = list(in_flight.items())
        for task, _ in pending:
            task.cancel()
        await asyncio.gather(scheduler, *(t for t, _ in pending), return_exceptions=True)
        result.cancelled = sorted(index for task, index in pending if task.cancelled())
        result.not_sent = [order[i] for i in range(position, len(order))]
        result.t_end = time.perf_counter()
        result.spin = lead.value
    if not scheduler.cancelled() and scheduler.exception() is not None:
        raise scheduler.exception()  # type: ignore[misc]
    if failure:
        raise failure[0]
    return result


__all__ = ["DEFAULT_SPIN", "DriveResult", "drive"]
