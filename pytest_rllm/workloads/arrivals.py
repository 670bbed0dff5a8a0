"""Arrival processes: when each request of a workload is due, as seconds from the run start.

Specs, as `--rllm-arrival` takes them:

- ``batch``: every request at offset 0 (the study's closed batches).
- ``concurrency:N``: every request at offset 0, at most N in flight; a new one
  goes as soon as one finishes (a closed loop).
- ``poisson:RATE``: exponential gaps with mean 1/RATE (requests per second).
- ``gamma:RATE:BURSTINESS``: vLLM's semantics. Each gap is
  Gamma(shape=b, scale=1/(RATE*b)), so the mean gap is 1/RATE and the
  coefficient of variation is 1/sqrt(b). b=1 is Poisson; b=inf (or ``inf``)
  gives constant gaps of 1/RATE; b<1 is burstier than Poisson.
- ``trace:PATH``: a JSONL file with one arrival per line, ``{"timestamp": SECONDS, ...}``.
  Offsets are the timestamps minus the first one. A workload longer than the
  trace replays it again after its end (see `ArrivalSpec.offsets`).

The first request of a rate process goes at offset 0 and request i at the sum
of the first i gaps, as vLLM's benchmark client does it.

Concurrency cap and rate together (``concurrency:N`` or ``--rllm-max-concurrency``
with a rate): the *gap-preserving* rule. When a request is due but all slots
are busy, it waits for a slot, and the whole remaining schedule slides later by
that wait. So request i is released at

    release[i] = max(start + offset[i] + shift, time a slot is free)
    shift     += release[i] - (start + offset[i] + shift)

which is the same as: release[i] >= release[i-1] + (offset[i] - offset[i-1]).
Released gaps are never shorter than the drawn gaps, so a backlog behind the
cap drains at the arrival process's own pace and never as a burst above the
rate (vLLM's client releases every queued request the moment a slot frees).
The cost, stated plainly: under saturation the run lasts longer than the
schedule, and the achieved rate is min(rate, what the server sustains). The
driver (pytest_rllm.workloads.driver) applies the rule; this module only draws
the offsets.

Pure: numpy only, no I/O except reading a trace file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from pytest_rllm.workloads.jsonl import json_object

KINDS = ("batch", "concurrency", "poisson", "gamma", "trace")
TRACE_FIELD = "timestamp"

_USAGE = "batch, concurrency:N, poisson:RATE, gamma:RATE:BURSTINESS or trace:PATH"


@dataclass(frozen=True)
class ArrivalSpec:
    """A parsed arrival process. Hashable, so it can key a cached run."""

    kind: str
    rate: float | None = None  # requests per second (poisson, gamma)
    burstiness: float | None = None  # gamma shape b; math.inf for constant gaps
    concurrency: int | None = None  # concurrency:N
    trace_path: str | None = None
    trace: tuple[float, ...] = ()  # trace offsets from its first timestamp, sorted as given
    text: str = ""

    @property
    def is_open_loop(self) -> bool:
        """True when requests are due at times of their own (not all at once)."""
        return self.kind in ("poisson", "gamma", "trace")

    def cap(self, max_concurrency: int | None = None) -> int | None:
        """The in-flight cap from this spec and the separate --rllm-max-concurrency option."""
        caps = [c for c in (self.concurrency, max_concurrency) if c is not None]
        return min(caps) if caps else None

    def offsets(self, n: int, seed: int = 0) -> list[float]:
        """`n` send offsets in seconds from the run start, non-decreasing.

        The same (spec, n, seed) always gives the same list, and offsets(n)
        is a prefix of offsets(n + k): numpy's Generator draws sequentially.
        """
        if n < 0:
            raise ValueError(f"number of requests must be 0 or more, got {n}")
        if n == 0:
            return []
        if self.kind in ("batch", "concurrency"):
            return [0.0] * n
        if self.kind == "trace":
            return _tile_trace(self.trace, n, self.trace_path or "")
        gaps = sample_gaps(n - 1, self.rate or 0.0, self.burstiness or 1.0, seed)
        out = np.concatenate(([0.0], np.cumsum(gaps)))
        return [float(x) for x in out]


def sample_gaps(count: int, rate: float, burstiness: float, seed: int) -> np.ndarray:
    """`count` gaps (seconds) ~ Gamma(shape=b, scale=1/(rate*b)); b=inf gives 1/rate each."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a finite number above 0, got {rate}")
    if burstiness <= 0 or math.isnan(burstiness):
        raise ValueError(f"burstiness must be above 0, got {burstiness}")
    if math.isinf(burstiness):
        return np.full(count, 1.0 / rate)
    # A string-free, explicit seed sequence: the draw depends only on `seed`,
    # never on global numpy state, so two runs with one seed send identically.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xA55])))
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=count)


def _tile_trace(trace: tuple[float, ...], n: int, path: str) -> list[float]:
    # A trace shorter than the workload is replayed: copy k starts one mean gap
    # after copy k-1's last arrival, so the replayed load keeps the trace's rate.
    if len(trace) >= n:
        return list(trace[:n])
    if len(trace) < 2:
        raise ValueError(
            f"{path}: the trace has {len(trace)} arrival(s) but the workload needs {n}; "
            f"a trace needs at least 2 arrivals to be replayed (or pass fewer --rllm-num-prompts)"
        )
    span = trace[-1]
    period = span + span / (len(trace) - 1)
    return [trace[i % len(trace)] + (i // len(trace)) * period for i in range(n)]


def _rate(text: str, spec: str) -> float:
    rate = _number(text, "RATE", spec)
    if rate <= 0 or math.isinf(rate):
        raise ValueError(f"arrival {spec!r}: RATE must be a finite number of requests per second above 0")
    return rate


def _number(text: str, what: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"arrival {spec!r}: {what} must be a number, got {text!r}") from None
    if math.isnan(value):
        raise ValueError(f"arrival {spec!r}: {what} must be a number, got {text!r}")
    return value


def parse_arrival(text: str) -> ArrivalSpec:
    """Parse an --rllm-arrival value; ValueError names what is wrong and the accepted forms."""
    spec = str(text).strip()
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown arrival process {spec!r}; expected {_USAGE}")
    parts = [p.strip() for p in rest.split(":")] if rest else []
    if kind == "batch":
        if parts:
            raise ValueError(f"arrival {spec!r}: 'batch' takes no parameters")
        return ArrivalSpec("batch", text=spec)
    if kind == "concurrency":
        if len(parts) != 1:
            raise ValueError(f"arrival {spec!r}: expected concurrency:N, e.g. concurrency:8")
        try:
            n = int(parts[0])
        except ValueError:
            raise ValueError(f"arrival {spec!r}: N must be a whole number, got {parts[0]!r}") from None
        if n <= 0:
            raise ValueError(f"arrival {spec!r}: N must be above 0, got {n}")
        return ArrivalSpec("concurrency", concurrency=n, text=spec)
    if kind == "poisson":
        if len(parts) != 1:
            raise ValueError(f"arrival {spec!r}: expected poisson:RATE (requests per second), e.g. poisson:4")
        rate = _rate(parts[0], spec)
        return ArrivalSpec("poisson", rate=rate, burstiness=1.0, text=spec)
    if kind == "gamma":
        if len(parts) != 2:
            raise ValueError(f"arrival {spec!r}: expected gamma:RATE:BURSTINESS, e.g. gamma:4:0.5 (b=1 is Poisson, inf is constant gaps)")
        rate = _rate(parts[0], spec)
        b = _number(parts[1], "BURSTINESS", spec)
        if b <= 0:
            raise ValueError(f"arrival {spec!r}: BURSTINESS must be above 0 (1 is Poisson, inf is constant gaps)")
        return ArrivalSpec("gamma", rate=rate, burstiness=b, text=spec)
    # trace: the path may itself hold ':' (Windows drives), so take all of `rest`.
    path = rest.strip()
    if not path:
        raise ValueError(f"arrival {spec!r}: expected trace:PATH to a JSONL file with a {TRACE_FIELD!r} per line")
    return ArrivalSpec("trace", trace_path=os.path.abspath(os.path.expanduser(path)), trace=load_trace(path), text=spec)


def load_trace(path: str) -> tuple[float, ...]:
    """Offsets from a JSONL trace: each non-blank line an object with a numeric 'timestamp'."""
    full = os.path.expanduser(path)
    try:
        with open(full, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise ValueError(f"trace file {path}: cannot be read ({exc.strerror or exc})") from None
    stamps: list[float] = []
    previous = -math.inf
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"trace file {path}, line {number}"
        row = json_object(line, where, f"a JSON object with field {TRACE_FIELD!r}")
        if TRACE_FIELD not in row:
            raise ValueError(f"{where}: field {TRACE_FIELD!r} is missing")
        value = row[TRACE_FIELD]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: field {TRACE_FIELD!r} must be a finite number of seconds, got {value!r}")
        # Replaying needs a time-ordered trace; sorting silently would reorder
        # which payload goes when, so an unsorted file is an error instead.
        if value < previous:
            raise ValueError(f"{where}: field {TRACE_FIELD!r} goes back in time ({value} after {previous}); sort the trace")
        previous = float(value)
        stamps.append(float(value))
    if not stamps:
        raise ValueError(f"trace file {path}: no arrivals (expected one JSON object with {TRACE_FIELD!r} per line)")
    first = stamps[0]
    return tuple(s - first for s in stamps)


__all__ = ["KINDS", "TRACE_FIELD", "ArrivalSpec", "load_trace", "parse_arrival", "sample_gaps"]
