"""Samples engine metrics (and NVML) on a thread at a fixed interval into timelines.

A thread, not a task on the client's event loop: a scrape of /metrics must never
delay a scheduled send or a token timestamp.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from pytest_rllm.telemetry.nvml import NvmlMemory

Timelines = dict[str, list[tuple[float, float]]]

# At most this share of wall time is spent scraping. Rendering /metrics costs
# the server CPU that its engine needs (benchmarks/RESULTS.md), and vLLM's own
# benchmark client scrapes nothing. So the interval stretches to 1/MAX_DUTY
# times the last scrape's duration. Not further: a scrape's duration is mostly
# queueing behind the streams on a busy server, and a lower cap left short runs
# too few samples for the memory findings.
MAX_DUTY = 0.5


class TelemetrySampler:
    def __init__(self, samples: Callable[[], dict[str, float] | None], interval: float, nvml: NvmlMemory | None = None) -> None:
        self._samples = samples  # an engine's samples(): {timeline name: value}, None when unavailable
        self.interval = interval
        self.nvml = nvml
        self.timelines: Timelines = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.failures = 0

    def sample_once(self) -> dict[str, float]:
        now = time.perf_counter()
        values = self._samples()
        if values is None:
            self.failures += 1
            values = {}
        if self.nvml is not None and self.nvml.available:
            used = self.nvml.used_bytes()
            if used is not None:
                values["gpu_memory_used_bytes"] = used
        for key, value in values.items():
            self.timelines.setdefault(key, []).append((now, value))
        self.samples += 1
        return values

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            began = time.perf_counter()
            self.sample_once()
            took = time.perf_counter() - began
            next_at += max(self.interval, took / MAX_DUTY)
            delay = next_at - time.perf_counter()
            if delay < 0:  # a slow scrape: skip ahead instead of bursting
                next_at = time.perf_counter()
                delay = 0
            self._stop.wait(delay)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rllm-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> Timelines:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        return self.timelines
