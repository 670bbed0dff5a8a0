"""The session: one engine alive at a time, every (configuration, workload) run once.

Tests ask `rllm_session.run("spec-ngram", "main")`. The first request for a
configuration starts its engine and runs *every* workload that the collected
tests declared for it (marker `rllm_needs`), so each engine starts once per
session and nothing is generated twice. Results, skips and start failures are
cached, so every test that needs the same run reads the same result.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_rllm.client import ChatClient, SamplingOptions, new_event_loop
from pytest_rllm.engines.base import EngineDied, EngineError, EngineStartError, EngineUnsupported
from pytest_rllm.engines.spec import EngineSpec, PresetUnavailable, build_spec
from pytest_rllm.reasoning import resolve_reasoning_parser
from pytest_rllm.records import Item, RequestRecord
from pytest_rllm.results import RunResult
from pytest_rllm.settings import PRESETS, REFERENCE, RllmSettings


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


# The workloads the suites use. Gamma arrivals default to a rate near the
# engine's measured batch capacity when --rllm-arrival is not already gamma.
WORKLOADS: dict[str, Workload] = {
    "main": Workload("main"),
    "no-thinking": Workload("no-thinking", thinking=False),
    "shared-prefix": Workload("shared-prefix", shared_prefix=True),
    "gamma": Workload("gamma", arrival="gamma"),
}


# Worked examples in the shared prefix (~300 characters): long enough to span
# several KV blocks, short enough that prefix caching off stays affordable on CPU.
SHARED_PREFIX_EXAMPLES = 6

# The warm-up batch: enough concurrent requests to exercise batched decoding
# once, few enough to cost a fraction of a measured run.
WARM_UP_REQUESTS = 8


class RunUnavailable(Exception):
    """The run cannot happen here: the test skips with this reason."""


class RunFailed(Exception):
    """The run failed (engine start, engine death, run timeout): the test fails with this message."""


@dataclass
class _Outcome:
    result: RunResult | None = None
    skip: str | None = None
    failure: str | None = None


@dataclass
class Timings:
    """Where the session's wall time went (printed in the summary)."""

    engine_start: float = 0.0
    generation: float = 0.0
    engine_stop: float = 0.0
    warm_up: float = 0.0
    engines_started: int = 0
    per_engine: dict[str, float] = field(default_factory=dict)


class RllmSession:
    def __init__(self, settings: RllmSettings, *, log_dir: Path | None = None, gpu_ids: list[int] | None = None) -> None:
        self.settings = settings
        self.model = resolve_model(settings.model)
        self.log_dir = log_dir
        self.gpu_ids = gpu_ids
        self.plan: dict[str, list[str]] = {}  # label -> workload names, in first-needed order
        self.outcomes: dict[tuple[str, str], _Outcome] = {}
        self.engine_failures: dict[str, _Outcome] = {}
        self.runs: list[RunResult] = []  # every run, failed ones included (for the JSON report)
        self.timings = Timings()
        self._engine: Any = None
        self._engine_label: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: list[Item] | None = None
        self.engine_infos: dict[str, dict[str, Any]] = {}
        self._warmed: Any = None  # the engine that has had its warm-up batch

    # -- planning --------------------------------------------------------------
    def need(self, label: str, workload: str) -> None:
        names = self.plan.setdefault(label, [])
        if workload not in names:
            names.append(workload)
            # "main" runs first: the gamma workload's default rate is measured from it.
            order = list(WORKLOADS)
            names.sort(key=order.index)

    # -- the public entry point -----------------------------------------------------
    def run(self, label: str, workload: str = "main") -> RunResult:
        """The cached run of `workload` on configuration `label`; skips or fails with the engine's reason."""
        if label not in PRESETS and label != REFERENCE:
            raise ValueError(f"unknown configuration {label!r}")
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
        if label != "baseline" and label != REFERENCE and label not in self.settings.optimizations:
            raise RunUnavailable(f"{label} is not in --rllm-optimizations={','.join(self.settings.optimizations)}")
        outcome = self.outcomes.get((label, workload)) or self._execute(label, workload)
        if outcome.skip:
            raise RunUnavailable(outcome.skip)
        if outcome.failure:
            raise RunFailed(outcome.failure)
        assert outcome.result is not None
        return outcome.result

    def measure(self, label: str, workload: str = "main", *, trials: int | None = None) -> RunResult:
        """A fresh run of `workload` on configuration `label` (its engine started if needed), never cached.

        For comparing runs of one engine with each other: before and after a
        change to the host, or trials interleaved with another engine's
        (trials=1 each, combined with results.combine_trials). `trials`
        defaults to --rllm-trials.
        """
        engine = self.engine(label)
        outcome = self._run_workload(engine, label, WORKLOADS[workload], trials=trials)
        if outcome.failure:
            raise RunFailed(outcome.failure)
        assert outcome.result is not None
        return outcome.result

    def engine(self, label: str = "baseline") -> Any:
        """The running engine of a configuration (started if needed), e.g. to point lm-eval at it."""
        failed = self.engine_failures.get(label)
        if failed is not None:
            raise RunUnavailable(failed.skip) if failed.skip else RunFailed(failed.failure or "engine failed")
        try:
            return self._engine_for(label)
        except PresetUnavailable as exc:
            raise RunUnavailable(str(exc)) from None
        except EngineUnsupported as exc:
            raise RunUnavailable(f"the engine rejected {label} on this hardware: {exc.reason}") from None
        except EngineStartError as exc:
            raise RunFailed(str(exc)) from None

    def spec_for(self, label: str) -> EngineSpec:
        if label == REFERENCE:
            if not self.settings.reference_model:
                raise PresetUnavailable("no --rllm-reference-model given")
            spec = build_spec("baseline", self.settings, resolve_model(self.settings.reference_model))
            return EngineSpec(spec.model, REFERENCE, spec.engine_args, spec.extra_server_args)
        return build_spec(label, self.settings, self.model)

    # -- engines -------------------------------------------------------------------
    def _execute(self, label: str, workload: str) -> _Outcome:
        failed = self.engine_failures.get(label)
        if failed is not None:
            self.outcomes[(label, workload)] = failed
            return failed
        self.need(label, workload)
        problem = self._data_problem()
        if problem is not None:
            # A bad data set fails every run before an engine is started for nothing.
            outcome = self.outcomes[(label, workload)] = _Outcome(failure=problem)
            return outcome
        try:
            engine = self._engine_for(label)
        except PresetUnavailable as exc:
            return self._engine_failed(label, _Outcome(skip=str(exc)))
        except EngineUnsupported as exc:
            return self._engine_failed(label, _Outcome(skip=f"the engine rejected {label} on this hardware: {exc.reason}"))
        except EngineStartError as exc:
            return self._engine_failed(label, _Outcome(failure=str(exc)))
        # Run everything planned for this configuration while its engine is up.
        for name in list(self.plan[label]):
            if (label, name) in self.outcomes:
                continue
            outcome = self._run_workload(engine, label, WORKLOADS[name])
            self.outcomes[(label, name)] = outcome
            if outcome.failure and self._engine is None:
                # The engine died: the remaining workloads of this configuration fail with the same cause.
                for rest in self.plan[label]:
                    self.outcomes.setdefault((label, rest), outcome)
                break
        return self.outcomes[(label, workload)]

    def _engine_failed(self, label: str, outcome: _Outcome) -> _Outcome:
        self.engine_failures[label] = outcome
        for name in self.plan.get(label, []):
            self.outcomes.setdefault((label, name), outcome)
        return outcome

    def _engine_for(self, label: str) -> Any:
        if self._engine is not None and self._engine_label == label:
            return self._engine
        self.stop_engine()
        spec = self.spec_for(label)
        engine = self._make_engine(spec, label)
        t0 = time.perf_counter()
        try:
            engine.start()
        finally:
            elapsed = time.perf_counter() - t0
            self.timings.engine_start += elapsed
            self.timings.per_engine[label] = elapsed
        self.timings.engines_started += 1
        self._engine, self._engine_label = engine, label
        from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, cache_config

        # KV capacity (blocks x block size) and cache dtype, as the engine reports them.
        self.engine_infos[label] = {**engine.info(), "spec": spec.to_dict(), "cache_config": cache_config(engine.metrics_text(SAMPLE_NAMES) or "")}
        return engine

    def _make_engine(self, spec: EngineSpec, label: str) -> Any:
        settings = self.settings
        if settings.endpoint:
            if label not in ("baseline", REFERENCE):
                # An external server runs one fixed configuration: comparisons need engines we start.
                raise PresetUnavailable(
                    f"{label} needs an engine the harness starts; --rllm-endpoint serves one fixed configuration"
                )
            from pytest_rllm.engines.endpoint import ExternalEndpoint

            # --rllm-model names what the server serves; None: the first id of its /v1/models.
            return ExternalEndpoint(spec, settings.endpoint, api_key=self.api_key(), model=settings.served_model_wanted)
        if settings.engine == "inprocess":
            from pytest_rllm.engines.inprocess import InProcessEngine

            return InProcessEngine(spec)
        from pytest_rllm.engines.server import VllmServer

        env = dict(os.environ)
        if self.gpu_ids is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpu_ids)
        parser = None if label == REFERENCE else resolve_reasoning_parser(settings.reasoning_parser, spec.model, settings)
        return VllmServer(
            spec,
            reasoning_parser=parser,
            startup_timeout=settings.startup_timeout,
            log_dir=self.log_dir,
            env=env,
        )

    def api_key(self) -> str | None:
        name = self.settings.api_key_env
        if not name:
            return None
        key = os.environ.get(name)
        if not key:
            raise EngineStartError(f"--rllm-api-key-env={name}: the environment variable {name} is not set")
        return key

    def stop_engine(self) -> None:
        engine, self._engine, self._engine_label = self._engine, None, None
        if engine is not None:
            t0 = time.perf_counter()
            engine.stop()
            self.timings.engine_stop += time.perf_counter() - t0

    def close(self) -> None:
        self.stop_engine()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    # -- workloads -----------------------------------------------------------------
    def _data_problem(self) -> str | None:
        from pytest_rllm.workloads.datasets import DatasetError

        try:
            self.items()
        except DatasetError as exc:
            return f"--rllm-dataset: {exc}"
        return None

    def items(self) -> list[Item]:
        if self._items is None:
            from pytest_rllm.workloads.datasets import load_items

            self._items = load_items(self.settings.dataset, num_prompts=self.settings.num_prompts, seed=self.settings.seed)
        return self._items

    def _arrival_text(self, workload: Workload) -> str:
        arrival = workload.arrival or self.settings.arrival
        if arrival == "gamma":
            if self.settings.arrival.startswith("gamma:"):
                return self.settings.arrival
            # Offer load near what the engine sustained in its closed batch, in
            # Gamma bursts (b=0.5, CV=1.41): the study's real-world workload shape.
            # Every configuration gets the same rate: baseline's, so their gamma runs compare.
            rate = 4.0
            base = self.outcomes.get(("baseline", "main"))
            if base and base.result is not None:
                rate = max(base.result.summary().get("request_throughput", rate), 0.1)
            return f"gamma:{rate:.4g}:0.5"
        return arrival

    def workload_items(self, workload: Workload) -> list[tuple[Item, int]]:
        from pytest_rllm.workloads import datasets

        items = self.items()
        if workload.shared_prefix:
            items = datasets.with_shared_prefix(items, datasets.shared_prefix(examples=SHARED_PREFIX_EXAMPLES, seed=self.settings.seed))
        return datasets.expand_repeats(items, self.settings.repeats)

    def _run_workload(self, engine: Any, label: str, workload: Workload, *, trials: int | None = None) -> _Outcome:
        """--rllm-trials runs of `workload`, after the engine's warm-up batch; one result, its summary over the trials."""
        count = trials or self.settings.trials  # the list below reuses the name: read the count first
        # Trials are compared with each other, so the first must not pay first-batch costs
        # (vLLM 0.31.0 on CPU: 30 s). A single run keeps them, as every run did before trials:
        # the engine tests count its requests and time a hang from the first one.
        if self._warmed is not engine and max(count, self.settings.trials) > 1:
            self._warm_up(engine, label, workload)
        trials = []
        for index in range(count):
            outcome = self._run_once(engine, label, workload, trial=index)
            trials.append(outcome)
            if outcome.failure:
                return outcome  # a failed trial fails the run; its records are in the report
        if len(trials) == 1:
            return trials[0]
        from pytest_rllm.results import combine_trials

        result = combine_trials([t.result for t in trials if t.result is not None], repeats=self.settings.repeats)
        # The report lists the run once, its trials inside it.
        self.runs = [r for r in self.runs if r not in result.trials] + [result]
        return _Outcome(result=result)

    def _warm_up(self, engine: Any, label: str, workload: Workload) -> None:
        """One unmeasured batch per engine: first-batch costs (compilation, allocation) stay out of every trial."""
        self._warmed = engine
        jobs = self.workload_items(workload)[:WARM_UP_REQUESTS]
        thinking = workload.thinking and label != REFERENCE
        records = [RequestRecord.for_item(item, repeat=r, thinking=thinking) for item, r in jobs]
        options = SamplingOptions(
            max_tokens=workload.max_tokens or self.settings.max_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            request_timeout=self.settings.request_timeout,
        )
        t0 = time.perf_counter()
        try:
            self._loop_run(self._drive(engine, jobs, records, [0.0] * len(jobs), options, None))
        except Exception:
            pass  # a broken engine shows up, with its reason, in the measured run that follows
        self.timings.warm_up += time.perf_counter() - t0

    def _engine_pgids(self, engine: Any) -> list[int] | None:
        """Process groups whose CPU is the engine's; None when the engine runs elsewhere (an endpoint)."""
        if self.settings.endpoint:
            return None
        proc = getattr(engine, "proc", None)
        return [proc.pid] if proc is not None else []

    def _run_once(self, engine: Any, label: str, workload: Workload, *, trial: int = 0) -> _Outcome:
        from pytest_rllm.telemetry import host
        from pytest_rllm.telemetry.nvml import NvmlMemory
        from pytest_rllm.telemetry.sampler import TelemetrySampler
        from pytest_rllm.workloads.arrivals import parse_arrival

        settings = self.settings
        arrival = self._arrival_text(workload)
        jobs = self.workload_items(workload)
        thinking = workload.thinking and label != REFERENCE
        records = [RequestRecord.for_item(item, repeat=r, thinking=thinking) for item, r in jobs]
        arrival_spec = parse_arrival(arrival)
        offsets = arrival_spec.offsets(len(records), settings.seed)
        options = SamplingOptions(
            max_tokens=workload.max_tokens or settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            request_timeout=settings.request_timeout,
        )
        nvml = NvmlMemory(self.gpu_ids) if settings.endpoint is None else None
        sampler = TelemetrySampler(engine.samples, settings.metrics_interval, nvml)
        config = {**workload.config(settings), "arrival": arrival}
        result = RunResult(
            label=label,
            workload=workload.name,
            trial=trial,
            records=records,
            engine=self.engine_infos.get(label, {}),
            workload_config=config,
            slo=settings.slo_seconds(),
        )
        result.counters_start = engine.samples() or {}
        pgids = self._engine_pgids(engine)
        # Measured while the engine idles, before the clock starts: the yardstick must not compete with it.
        result.host["python_speed"] = host.python_speed()
        cpu_start = host.snapshot(pgids) if pgids is not None else None
        sampler.start()
        t0 = time.perf_counter()
        result.t_start = t0
        timed_out = False
        try:
            cap = arrival_spec.cap(settings.max_concurrency)
            timed_out = self._loop_run(self._drive(engine, jobs, records, offsets, options, cap)).timed_out
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
        self.timings.generation += result.t_end - t0
        result.counters_end = self._settled_counters(engine, result.counters_start)
        result.timelines = sampler.stop()
        if nvml is not None:
            if not nvml.available:
                result.engine = {**result.engine, "gpu_memory": nvml.reason}
            nvml.close()
        if timed_out:
            result.error = f"the run exceeded --rllm-run-timeout={settings.run_timeout:g}s"
        unfinished = [r for r in records if r.t_done is None and r.error is None]
        for r in unfinished:
            r.error = f"cancelled: {result.error or 'the run ended before this request finished'}"
        try:
            # A server is also asked for /health: one that is alive but stopped answering is hung.
            engine.check_alive()
        except EngineDied as exc:
            result.error = str(exc) if not result.error else f"{exc}\n(the run: {result.error})"
            self._engine, self._engine_label = None, None
            engine.stop()  # reap what is left of its process group
        if not result.error and records and not any(r.ok for r in records):
            result.error = f"every request failed; the first: {records[0].error}"
        self.runs.append(result)
        if result.error:
            kept = sum(1 for r in records if r.ok)
            return _Outcome(result=result, failure=f"{result.error} ({kept} of {len(records)} records kept in the report)")
        return _Outcome(result=result)

    def _settled_counters(self, engine: Any, start: dict[str, float]) -> dict[str, float]:
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

    async def _drive(
        self,
        engine: Any,
        jobs: list[tuple[Item, int]],
        records: list[RequestRecord],
        offsets: list[float],
        options: SamplingOptions,
        max_concurrency: int | None,
    ) -> Any:
        from pytest_rllm.workloads.driver import drive

        if engine.base_url is None:
            client: Any = engine.client(options)
        else:
            parser_on = getattr(engine, "reasoning_parser", None) is not None  # chosen when the server was made
            client = ChatClient(
                engine.base_url,
                engine.served_model,
                options,
                api_key=self.api_key() if self.settings.endpoint else None,
                # Our servers run with a parser (content is already split); for an
                # external endpoint we cannot know, so split only when needed.
                split_thinking=None if self.settings.endpoint else (not parser_on),
            )
        async with client:
            prepare = getattr(client, "prepare", None)
            if prepare is not None:
                # Before the schedule's clock starts (in-process: the chat template).
                prepare([(item, record.thinking) for (item, _), record in zip(jobs, records)])

            async def send(index: int, t_scheduled: float) -> None:
                record = records[index]
                record.t_scheduled = t_scheduled
                if _process_exited(engine):
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

    def _loop_run(self, coro: Any) -> Any:
        # One loop for the whole session: an in-process engine's step thread
        # posts to it, and connections are reused across runs.
        if self._loop is None:
            self._loop = new_event_loop()
        return self._loop.run_until_complete(coro)


def _process_exited(engine: Any) -> bool:
    """True when the engine is a server process that has exited (cheap: no request is made)."""
    proc = getattr(engine, "proc", None)
    return proc is not None and proc.poll() is not None


def resolve_model(model: str) -> str:
    from pytest_rllm.settings import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL:
        from pytest_rllm.pocket import MODEL_DIR

        if not (Path(MODEL_DIR) / "config.json").exists():
            raise EngineError(f"the embedded model is missing from {MODEL_DIR}; reinstall pytest-rllm")
        return str(MODEL_DIR)
    return model
