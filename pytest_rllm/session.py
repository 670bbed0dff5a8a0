"""The session plans and caches: one engine alive at a time, every (configuration, workload) run once.

Tests ask `rllm_session.run("spec-ngram", "main")`, or take a run fixture. The
first request for a configuration starts its engine and runs *every* workload
that the collected tests need of it (the plugin's plan, read from their run
fixtures and `rllm_needs` markers), so each engine starts once per session and
nothing is generated twice. Results, skips and start failures are cached, so
every test that needs the same run reads the same result. Running a workload
is the runner's (runner.py).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_rllm.engines.base import Engine, EngineDied, EngineStartError, EngineUnsupported
from pytest_rllm.engines.start_ahead import EngineAhead
from pytest_rllm.engines.spec import EngineSpec, PresetUnavailable, build_spec, resolve_model
from pytest_rllm.reasoning import ParserChoice, reasoning_choice
from pytest_rllm.records import Item
from pytest_rllm.results import RunResult
from pytest_rllm.run_reuse import RunSources
from pytest_rllm.run_store import RunKey
from pytest_rllm.runner import Runner, Workload
from pytest_rllm.workloads.suite_workloads import GAMMA_RATE, SHARED_PREFIX_EXAMPLES, WORKLOADS
from pytest_rllm.choices import PRESETS, REFERENCE
from pytest_rllm.settings import RllmSettings


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
    engines_started_ahead: int = 0  # started beside another engine (--rllm-start-ahead), paused until their turn
    runs_reused: int = 0  # read from the run store, another xdist worker or a report
    per_engine: dict[str, float] = field(default_factory=dict)


class RllmSession:
    def __init__(self, settings: RllmSettings, *, log_dir: Path | None = None, gpu_ids: list[int] | None = None,
                 sources: RunSources | None = None) -> None:
        self.settings = settings
        # Where a run comes from before it is generated (run store, xdist workers, a report); none: always generated.
        self.sources = sources or RunSources(settings)
        self.model = resolve_model(settings.model)
        self.log_dir = log_dir
        self.gpu_ids = gpu_ids
        self.plan: dict[str, list[str]] = {}  # label -> workload names, in first-needed order
        self.outcomes: dict[tuple[str, str], _Outcome] = {}
        self.engine_failures: dict[str, _Outcome] = {}
        self.timings = Timings()
        self.runner = Runner(settings, gpu_ids=gpu_ids)
        self._engine: Engine | None = None
        self._engine_label: str | None = None
        self._items: list[Item] | None = None
        self.engine_infos: dict[str, dict[str, Any]] = {}
        self._warmed: Engine | None = None  # the engine that has had its warm-up batch
        self.shared_engines: dict[str, tuple[str, str]] = {}  # label -> (the label whose engine served it, why)
        self._ahead: EngineAhead | None = None  # a server started beside another, paused until its configuration's turn
        self.started_ahead: dict[str, str] = {}  # label -> the label whose engine it started beside

    @property
    def runs(self) -> list[RunResult]:
        """Every run, failed ones included (for the JSON report); a combined run stands for its trials."""
        return self.runner.runs

    # -- planning --------------------------------------------------------------
    def need(self, label: str, workload: str) -> None:
        names = self.plan.setdefault(label, [])
        if workload not in names:
            names.append(workload)
            names.sort(key=list(WORKLOADS).index)  # WORKLOADS' order: "main" before "gamma" (GAMMA_RATE)

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

    def engine(self, label: str = "baseline") -> Engine:
        """The running engine of a configuration (started if needed), e.g. to point lm-eval at it."""
        if not self.sources.generates:
            raise RunUnavailable(f"--rllm-from-report re-checks stored runs; this check needs a running engine ({label})")
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
            return dataclasses.replace(spec, preset=REFERENCE)  # keeps the dtype and its reason
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
        # Run everything planned for this configuration while its engine is up; the engine starts
        # only for a run that is neither stored nor another worker's (which holds the claim meanwhile).
        with self.sources.claim(label):
            outcome = self._generate_planned(label, workload)
            if not self.sources.shared_with_workers:  # another worker may hold the other label's claim
                self._serve_same_engine_labels(label)
            return outcome

    def _serve_same_engine_labels(self, label: str) -> None:
        """While `label`'s engine is up, the planned runs of configurations that are this same engine (same_engine)."""
        from pytest_rllm.engines.sharing import same_engine

        if self._engine is None or self._engine_label != label:
            return
        running = self.spec_for(label)
        for other in list(self.plan):
            if self._engine is None:  # it died serving one of them
                return
            if other == label or other in self.engine_failures or all((other, n) in self.outcomes for n in self.plan[other]):
                continue
            try:
                why = same_engine(running, self.spec_for(other), self.engine_infos[label].get("cache_config") or {})
            except PresetUnavailable:
                continue
            if why is None:
                continue
            # The report says the two labels were one engine, and why.
            self.engine_infos[other] = {**self.engine_infos[label], "spec": self.spec_for(other).to_dict(),
                                        "shared_engine": {"with": label, "why": why}}
            self.shared_engines[other] = (label, why)
            self._engine_label = other
            try:
                self._generate_planned(other, self.plan[other][0])
            finally:
                if self._engine is not None:
                    self._engine_label = label

    def _generate_planned(self, label: str, workload: str) -> _Outcome:
        engine: Engine | None = None
        if label != "baseline" and any(WORKLOADS[n].arrival == "gamma" for n in self.plan[label]):
            self._find_baseline_main()
        for name in list(self.plan[label]):
            if (label, name) in self.outcomes:
                continue
            try:
                key = self.run_key(label, WORKLOADS[name])
            except PresetUnavailable as exc:
                return self._engine_failed(label, _Outcome(skip=str(exc)))
            found = self.sources.find(key, f"{label}/{name}")
            if isinstance(found, str):  # re-checking from a report that cannot give this run
                self.outcomes[(label, name)] = _Outcome(skip=found)
                continue
            if found is not None:
                self._reuse(label, found)
                self.outcomes[(label, name)] = _Outcome(result=found)
                continue
            if engine is None:
                try:
                    engine = self._engine_for(label)
                except PresetUnavailable as exc:
                    return self._engine_failed(label, _Outcome(skip=str(exc)))
                except EngineUnsupported as exc:
                    return self._engine_failed(label, _Outcome(skip=f"the engine rejected {label} on this hardware: {exc.reason}"))
                except EngineStartError as exc:
                    return self._engine_failed(label, _Outcome(failure=str(exc)))
            outcome = self._run_workload(engine, label, WORKLOADS[name])
            self.outcomes[(label, name)] = outcome
            if outcome.result is not None:
                self.sources.keep(key, outcome.result)
            if outcome.failure and self._engine is None:
                # The engine died: the remaining workloads of this configuration fail with the same cause.
                for rest in self.plan[label]:
                    self.outcomes.setdefault((label, rest), outcome)
                break
        return self.outcomes[(label, workload)]

    def _find_baseline_main(self) -> None:
        """baseline/main, for the gamma rate, where another xdist worker (or the store) has it and this process does not.

        Without it the rate falls back (GAMMA_RATE), and a gamma run would differ with the
        worker it landed on. Claims are taken in one order, another configuration's before
        baseline's, so two workers never wait on each other.
        """
        if ("baseline", "main") in self.outcomes or self.sources.store is None:
            return
        with self.sources.claim("baseline"):  # under xdist: wait while a worker generates it
            try:
                key = self.run_key("baseline", WORKLOADS["main"])
            except PresetUnavailable:
                return
            found = self.sources.find(key, "baseline/main")
            if isinstance(found, RunResult):
                self._reuse("baseline", found)
                self.outcomes[("baseline", "main")] = _Outcome(result=found)

    def run_key(self, label: str, workload: Workload) -> RunKey:
        """What generates this run (run_store.run_key), known before any engine starts."""
        from pytest_rllm.engines.identity import local_identity
        from pytest_rllm.hardware import hardware_key_for
        from pytest_rllm.run_store import run_key

        arrival, _ = self.arrival_for(workload)
        engine = {"kind": self.settings.engine, "identity": local_identity().to_dict()}
        return run_key(self.settings, self.spec_for(label), workload.config(self.settings), self.workload_items(workload),
                       arrival=arrival, thinking=workload.thinking and label != REFERENCE, engine=engine,
                       hardware=hardware_key_for(self.settings))

    def _reuse(self, label: str, run: RunResult) -> None:
        """A run read instead of generated: its engine's info stands for the engine (identity, KV capacity)."""
        self.engine_infos.setdefault(label, run.engine)
        self.timings.runs_reused += 1
        if run.reused:  # from the store or a report: this session's verdict rests on it, so its report lists it
            self.runs.append(run)

    def _engine_failed(self, label: str, outcome: _Outcome) -> _Outcome:
        self.engine_failures[label] = outcome
        for name in self.plan.get(label, []):
            self.outcomes.setdefault((label, name), outcome)
        return outcome

    def _engine_for(self, label: str) -> Engine:
        if self._engine is not None and self._engine_label == label:
            return self._engine
        self.stop_engine()
        spec = self.spec_for(label)
        engine = self._adopt_ahead(label)
        if engine is None:
            engine = self._make_engine(spec, label)
            self._start(engine, label)
        self._engine, self._engine_label = engine, label
        from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, cache_config

        # KV capacity (blocks x block size) and cache dtype, as the engine reports them.
        self.engine_infos[label] = {**engine.info(), "spec": spec.to_dict(), "cache_config": cache_config(engine.metrics_text(SAMPLE_NAMES) or "")}
        if label in self.started_ahead:  # the report says so: it waited paused, and took no CPU meanwhile
            self.engine_infos[label]["started_ahead"] = {"beside": self.started_ahead[label]}
        return engine

    def _start(self, engine: Engine, label: str) -> None:
        """Starts `label`'s engine, and the next configuration's beside it where that is allowed (engines/start_ahead.py)."""
        from pytest_rllm.engines import start_ahead

        other = start_ahead.partner_for(self, label) if self._ahead is None else None
        t0 = time.perf_counter()
        try:
            if other is None:
                engine.start()
            else:
                self._ahead = start_ahead.start_pair(engine, start_ahead.EngineAhead(
                    other, self._make_engine(self.spec_for(other), other), beside=label))
                self.timings.engines_started += self._ahead.engine is not None
        finally:
            self.timings.engine_start += time.perf_counter() - t0
            self.timings.per_engine[label] = getattr(engine, "startup_seconds", None) or time.perf_counter() - t0
        self.timings.engines_started += 1

    def _adopt_ahead(self, label: str) -> Engine | None:
        """The engine started ahead for `label`, continued; None: start one (none was, or it failed beside another)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.label != label:
            self._ahead = ahead
            return None
        if isinstance(ahead.error, EngineUnsupported):
            raise ahead.error  # the hardware's answer, beside another engine or not
        if ahead.engine is None:
            return None  # a failure beside another engine may be the pairing's (memory): started again alone
        try:
            ahead.engine.resume()
        except EngineDied:
            ahead.engine.stop()
            return None
        self.started_ahead[label] = ahead.beside
        self.timings.engines_started_ahead += 1
        self.timings.per_engine[label] = getattr(ahead.engine, "startup_seconds", None) or 0.0
        return ahead.engine

    def _make_engine(self, spec: EngineSpec, label: str) -> Engine:
        from pytest_rllm.engines.factory import make_engine

        return make_engine(self.settings, spec, label, choice=lambda: self.reasoning_choice(spec, label),
                           gpu_ids=self.gpu_ids, log_dir=self.log_dir)

    def reasoning_choice(self, spec: EngineSpec, label: str) -> ParserChoice:
        """The reasoning parser for `spec`'s model, from --rllm-reasoning-parser and the model's own files."""
        return reasoning_choice(self.settings, spec.model, label)

    def api_key(self) -> str | None:
        from pytest_rllm.engines.factory import api_key_from_env

        return api_key_from_env(self.settings.api_key_env)

    def stop_engine(self) -> None:
        engine, self._engine, self._engine_label = self._engine, None, None
        if engine is not None:
            t0 = time.perf_counter()
            engine.stop()
            self.timings.engine_stop += time.perf_counter() - t0

    def close(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.engine is not None:
            ahead.engine.stop()
        self.stop_engine()
        self.runner.close()

    # -- workloads -----------------------------------------------------------------
    def _data_problem(self) -> str | None:
        from pytest_rllm.workloads.dataset_errors import DatasetError

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

    def arrival_for(self, workload: Workload) -> tuple[str, str | None]:
        """(the workload's arrival text, where a gamma rate came from; None when the settings gave it)."""
        arrival = workload.arrival or self.settings.arrival
        if arrival != "gamma":
            return arrival, None
        if self.settings.arrival.startswith("gamma:"):
            return self.settings.arrival, None
        base = self.outcomes.get(("baseline", "main"))
        return GAMMA_RATE.arrival(base.result if base is not None else None)

    def workload_items(self, workload: Workload) -> list[tuple[Item, int]]:
        from pytest_rllm.workloads import datasets

        items = self.items()
        if workload.shared_prefix:
            items = datasets.with_shared_prefix(items, datasets.shared_prefix(examples=SHARED_PREFIX_EXAMPLES, seed=self.settings.seed))
        return datasets.expand_repeats(items, self.settings.repeats)

    def _run_workload(self, engine: Engine, label: str, workload: Workload, *, trials: int | None = None) -> _Outcome:
        """--rllm-trials runs of `workload`, after the engine's warm-up batch; one result, its summary over the trials."""
        count = trials or self.settings.trials
        jobs = self.workload_items(workload)
        thinking = workload.thinking and label != REFERENCE
        # The first measured run must not pay first-batch costs (vLLM 0.31.0 on CPU: 30 s),
        # which no baseline of warmed-up runs saw.
        if self._warmed is not engine and self.settings.warm_up > 0:
            self._warmed = engine
            self.timings.warm_up += self.runner.warm_up(engine, workload, jobs[: self.settings.warm_up], thinking=thinking)
        arrival, rate_source = self.arrival_for(workload)
        results = []
        for index in range(count):
            result = self.runner.run_workload(engine, label, workload, jobs, arrival=arrival, thinking=thinking,
                                              engine_info=self.engine_infos.get(label, {}), trial=index)
            if rate_source is not None:
                result.workload_config["arrival_rate_source"] = rate_source
            self.timings.generation += result.t_end - result.t_start
            if result.engine_died:
                self._engine, self._engine_label = None, None
            if result.error:
                kept = sum(1 for r in result.records if r.ok)
                # A failed trial fails the run; its records are in the report.
                return _Outcome(result=result, failure=f"{result.error} ({kept} of {len(result.records)} records kept in the report)")
            results.append(result)
        if len(results) == 1:
            return _Outcome(result=results[0])
        from pytest_rllm.results import combine_trials

        result = combine_trials(results, repeats=self.settings.repeats)
        # The report lists the run once, its trials inside it.
        self.runs[:] = [r for r in self.runs if r not in result.trials] + [result]
        return _Outcome(result=result)
