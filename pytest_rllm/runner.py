"""Running one workload on a started engine: RunResult in, finished RunResult out.

The session plans and caches; the runner sends the requests on their arrival
schedule, samples the engine's telemetry and the host's load around them, and
returns a result whose records, timelines, counters and error are final.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from pytest_rllm.client import SamplingOptions, new_event_loop
from pytest_rllm.engines.base import Engine, EngineDied
from pytest_rllm.records import Item, RequestRecord
from pytest_rllm.results import RunResult
from pytest_rllm.settings import RllmSettings

@dataclass(frozen=True)
class Workload:
    """What is sent: the data set draw, thinking on/off, the arrival process."""

    name: str
    thinking: bool = True
    arrival: str | None = None  # None: the session's --rllm-arrival
    shared_prefix: bool = False  # prompts share one long prefix (prefix caching suite)
    max_tokens: int | None = None  # None: --rllm-max-tokens

    def config(self, settings: RllmSettings) -> dict[str, Any]:
        return {
            "name": self.name,
            "thinking": self.thinking,
            "arrival": self.arrival or settings.arrival,
            "shared_prefix": self.shared_prefix,
            "max_tokens": self.max_tokens or settings.max_tokens,
            "dataset": list(settings.dataset),
            "num_prompts": settings.num_prompts,
            "repeats": settings.repeats,
            "seed": settings.seed,
            "max_concurrency": settings.max_concurrency,
        }

    def sampling_options(self, settings: RllmSettings) -> SamplingOptions:
        return SamplingOptions(
            max_tokens=self.max_tokens or settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            request_timeout=settings.request_timeout,
        )


class Runner:
    """Runs workloads for one session: one event loop, reused by every run (connections, an in-process engine's step thread)."""

    def __init__(self, settings: RllmSettings, *, gpu_ids: list[int] | None = None) -> None:
        self.settings = settings
        self.gpu_ids = gpu_ids
        self.runs: list[RunResult] = []  # every run, failed and interrupted ones included (the JSON report lists them)
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def run_workload(
        self,
        engine: Engine,
        label: str,
        workload: Workload,
        jobs: list[tuple[Item, int]],
        *,
        arrival: str,
        thinking: bool,
        engine_info: dict[str, Any],
        trial: int = 0,
    ) -> RunResult:
        """One run of `jobs` on `engine`; `result.engine_died` says whether the engine survived it."""
        from pytest_rllm.telemetry import host
        from pytest_rllm.telemetry.nvml import NvmlMemory
        from pytest_rllm.telemetry.sampler import TelemetrySampler
        from pytest_rllm.workloads.arrivals import parse_arrival

        settings = self.settings
        records = [RequestRecord.for_item(item, repeat=r, thinking=thinking) for item, r in jobs]
        arrival_spec = parse_arrival(arrival)
        offsets = arrival_spec.offsets(len(records), settings.seed)
        pgids = engine.process_groups()
        # GPU memory is read on this host only when the engine runs on it.
        nvml = NvmlMemory(self.gpu_ids) if pgids is not None else None
        sampler = TelemetrySampler(engine.samples, settings.metrics_interval or engine.metrics_interval, nvml)
        result = RunResult(
            label=label,
            workload=workload.name,
            trial=trial,
            records=records,
            engine=engine_info,
            workload_config={**workload.config(settings), "arrival": arrival},
            slo=settings.slo_seconds(),
        )
        result.counters_start = engine.samples() or {}
        # Measured while the engine idles, before the clock starts: the yardstick must not compete with it.
        result.host["python_speed"] = host.python_speed()
        cpu_start = host.snapshot(pgids) if pgids is not None else None
        sampler.start()
        result.t_start = time.perf_counter()
        timed_out = False
        try:
            cap = arrival_spec.cap(settings.max_concurrency)
            options = workload.sampling_options(settings)
            timed_out = self._run(self._drive(engine, jobs, records, offsets, options, cap)).timed_out
        except KeyboardInterrupt:
            # Keep what was collected (the report shows it), stop sampling, and let the interrupt unwind.
            result.error = "interrupted"
            result.t_end = time.perf_counter()
            result.timelines = sampler.stop()
            self.runs.append(result)
            raise
        except Exception as exc:  # a harness bug must not hide the records: keep them for the report
            result.error = f"run failed: {type(exc).__name__}: {exc}"
        result.t_end = time.perf_counter()
        cpu_end = host.snapshot(pgids) if cpu_start is not None else None
        load = cpu_end.since(cpu_start) if cpu_end is not None and cpu_start is not None else None
        if load is not None:
            result.host.update(load.to_dict())
        result.counters_end = _settled_counters(engine, result.counters_start)
        result.timelines = sampler.stop()
        if nvml is not None:
            if not nvml.available:
                result.engine = {**result.engine, "gpu_memory": nvml.reason}
            nvml.close()
        if timed_out:
            result.error = f"the run exceeded --rllm-run-timeout={settings.run_timeout:g}s"
        for r in records:
            if r.t_done is None and r.error is None:
                r.error = f"cancelled: {result.error or 'the run ended before this request finished'}"
        try:
            # A server is also asked for /health: one that is alive but stopped answering is hung.
            engine.check_alive()
        except EngineDied as exc:
            result.error = str(exc) if not result.error else f"{exc}\n(the run: {result.error})"
            result.engine_died = True
            engine.stop()  # reap what is left of its process group
        if not result.error and records and not any(r.ok for r in records):
            result.error = f"every request failed; the first: {records[0].error}"
        self.runs.append(result)
        return result

    def warm_up(self, engine: Engine, workload: Workload, jobs: list[tuple[Item, int]], *, thinking: bool) -> float:
        """One unmeasured batch: first-batch costs (compilation, allocation) stay out of every trial. Returns its seconds."""
        # Prompts the measured runs never send, so that the prefix cache gives none of them a head start.
        jobs = [(dataclasses.replace(item, prompt=f"(warm-up) {item.prompt}"), r) for item, r in jobs]
        records = [RequestRecord.for_item(item, repeat=r, thinking=thinking) for item, r in jobs]
        t0 = time.perf_counter()
        try:
            self._run(self._drive(engine, jobs, records, [0.0] * len(jobs), workload.sampling_options(self.settings), None))
        except Exception:
            pass  # a broken engine shows up, with its reason, in the measured run that follows
        return time.perf_counter() - t0

    async def _drive(
        self,
        engine: Engine,
        jobs: list[tuple[Item, int]],
        records: list[RequestRecord],
        offsets: list[float],
        options: SamplingOptions,
        max_concurrency: int | None,
    ) -> Any:
        from pytest_rllm.workloads.driver import drive

        async with engine.client(options) as client:
            prepare = getattr(client, "prepare", None)
            if prepare is not None:
                # Before the schedule's clock starts (in-process: the chat template).
                prepare([(item, record.thinking) for (item, _), record in zip(jobs, records)])

            async def send(index: int, t_scheduled: float) -> None:
                record = records[index]
                record.t_scheduled = t_scheduled
                if engine.exited():
                    # A dead server: fail at once instead of retrying a refused connection per request.
                    record.error = "not sent: the engine process had exited"
                    return
                await client.send(jobs[index][0], record)

            return await drive(
                list(range(len(records))),
                offsets,
                send,
                max_concurrency=max_concurrency,
                run_timeout=self.settings.run_timeout,
            )

    def _run(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = new_event_loop()
        return self._loop.run_until_complete(coro)


def _settled_counters(engine: Engine, start: dict[str, float]) -> dict[str, float]:
    """Counters after the run; the engine may publish its last step a moment after the last response."""
    last: dict[str, float] = {}
    for _ in range(10):
        values = engine.samples()
        if values is None:
            return last  # no metrics, or an engine that stopped answering: don't wait on it 10 times
        if values and values.get("generation_tokens") == last.get("generation_tokens") and last:
            return values
        last = values
        time.sleep(0.1)
    return last
