"""RunResult: one workload on one engine, and the pure summary derived from it.

Everything here takes plain data (records, timelines) and returns numbers, so it
is tested without an engine. The summary is derived on demand, never stored twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pytest_rllm.engines.identity import EngineIdentity, identity_of
from pytest_rllm.records import RequestRecord

Timeline = list[tuple[float, float]]
LATENCY_METRICS = ("ttft", "ttfvt", "tpot", "itl", "e2e")
PERCENTILES = (50, 90, 99)


def _values(xs: Iterable[float | None]) -> list[float]:
    return [float(x) for x in xs if x is not None and not math.isnan(x)]


def distribution(values: Sequence[float], prefix: str) -> dict[str, float]:
    """mean, p50, p90, p99 (numpy's linear percentiles); NaN when there is no value."""
    if not values:
        return {f"{prefix}_mean": math.nan, **{f"{prefix}_p{p}": math.nan for p in PERCENTILES}}
    arr = np.asarray(values, dtype=float)
    out = {f"{prefix}_mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES)):
        out[f"{prefix}_p{p}"] = float(v)
    return out


def timeline_stats(points: Timeline, prefix: str) -> dict[str, float]:
    """mean, peak, min, coefficient of variation of a sampled series, and how many samples they rest on."""
    values = [v for _, v in points]
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    times = np.asarray([t for t, _ in points], dtype=float)
    # Usage x seconds (trapezoid): how much memory-time the run held. A closed
    # batch's mean hides how long it held memory; the area does not.
    area = float(np.sum((arr[1:] + arr[:-1]) * np.diff(times)) / 2.0) if len(arr) > 1 else 0.0
    return {
        f"{prefix}_area": area,
        f"{prefix}_mean": mean,
        f"{prefix}_peak": float(arr.max()),
        f"{prefix}_min": float(arr.min()),
        f"{prefix}_cv": float(arr.std() / mean) if mean > 0 else 0.0,
        f"{prefix}_samples": float(len(arr)),
    }


def goodput(records: Sequence[RequestRecord], slo: dict[str, float], duration: float) -> dict[str, float]:
    """Requests per second that completed within every SLO (vLLM's definition, plus ttfvt)."""
    if not slo or duration <= 0:
        return {}
    good = 0
    for r in records:
        if not r.ok:
            continue
        observed = {"ttft": r.ttft, "ttfvt": r.ttfvt, "tpot": r.tpot, "e2e": r.e2e, "itl": max(r.itls, default=None)}
        if all(observed[m] is not None and observed[m] <= limit for m, limit in slo.items()):
            good += 1
    return {"goodput": good / duration, "goodput_fraction": good / len(records) if records else math.nan}


def straggler_stats(records: Sequence[RequestRecord], tail_fraction: float = 0.10) -> dict[str, float]:
    """How much a few long requests dominate a batch.

    makespan_over_median_e2e: batch makespan (first send to last finish) over the
    median request's E2E. tail_share: the share of the makespan during which at
    most `tail_fraction` of the requests (and at least one) were still running.
    """
    done = [r for r in records if r.ok]
    if len(done) < 2:
        return {}
    start = min(r.t_sent for r in done)  # type: ignore[type-var]
    ends = sorted(r.t_done for r in done)  # type: ignore[type-var]
    makespan = ends[-1] - start
    median_e2e = float(np.median([r.e2e for r in done]))
    # The tail begins when at most k = max(1, floor(f * n)) requests are still
    # running, i.e. when the (n - k)-th request finished. "At least one" keeps the
    # metric meaningful for small batches, where 10% is less than one request.
    k = max(1, math.floor(tail_fraction * len(done)))
    t_tail_begins = ends[len(done) - k - 1] if len(done) > k else start
    lengths = np.asarray([r.output_tokens for r in done], dtype=float)
    p50 = float(np.percentile(lengths, 50))
    return {
        "makespan": makespan,
        "makespan_over_median_e2e": makespan / median_e2e if median_e2e > 0 else math.nan,
        "tail_share": (ends[-1] - t_tail_begins) / makespan if makespan > 0 else 0.0,
        "output_tokens_p99_over_p50": float(np.percentile(lengths, 99)) / p50 if p50 > 0 else math.nan,
    }


def counter_deltas(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    from pytest_rllm.telemetry.prometheus import COUNTERS

    deltas = {k: end[k] - start.get(k, 0.0) for k in COUNTERS if k in end}
    out: dict[str, float] = {}
    if "generation_tokens" in deltas:
        out["engine_generation_tokens"] = deltas["generation_tokens"]
    if "prompt_tokens" in deltas:
        out["engine_prompt_tokens"] = deltas["prompt_tokens"]
    if "num_preemptions" in deltas:
        out["preemptions"] = deltas["num_preemptions"]
    if deltas.get("prefix_cache_queries"):
        out["prefix_cache_hit_rate"] = deltas.get("prefix_cache_hits", 0.0) / deltas["prefix_cache_queries"]
    if deltas.get("spec_decode_num_draft_tokens"):
        out["spec_acceptance_rate"] = (
            deltas.get("spec_decode_num_accepted_tokens", 0.0) / deltas["spec_decode_num_draft_tokens"]
        )
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class EngineInfo:
    """What a run's engine was: read from the info the session records with each run (RunResult.engine)."""

    kind: str = ""  # "server" | "inprocess" | "endpoint"
    engine: str = ""  # name and version, as platform.engine_version_text() gives them
    preset: str = ""
    model: str = ""
    engine_args: dict[str, Any] = field(default_factory=dict)
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    cache_dtype: str | None = None
    identity: EngineIdentity = field(default_factory=EngineIdentity)  # version, commit, torch, device, driver
    dtype: str = ""  # what the engine was given ("auto": vLLM's default), and why
    dtype_reason: str = ""
    variant: str = ""  # what the preset ran as on this build, e.g. "fp8_per_channel on CPU"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineInfo:
        spec = data.get("spec") or {}
        cache = data.get("cache_config") or {}
        return cls(
            kind=str(data.get("kind", "")), engine=str(data.get("engine", "")), identity=identity_of(data),
            preset=str(data.get("preset", spec.get("preset", ""))), model=str(spec.get("model", data.get("model", ""))),
            engine_args=dict(spec.get("engine_args") or {}), block_size=_int(cache.get("block_size")),
            num_gpu_blocks=_int(cache.get("num_gpu_blocks")), cache_dtype=cache.get("cache_dtype"),
            dtype=str(spec.get("dtype", "")), dtype_reason=str(spec.get("dtype_reason", "")),
            variant=str(spec.get("variant", "")),
        )

    @property
    def description(self) -> str:
        """The preset, with the variant it ran as where there was one: "quant-fp8 (fp8_per_channel on CPU)"."""
        return f"{self.preset} ({self.variant})" if self.variant else self.preset

    @property
    def kv_capacity_tokens(self) -> int | None:
        """Tokens the KV cache holds (blocks x block size), where the engine reports its cache config."""
        if self.num_gpu_blocks and self.block_size:
            return self.num_gpu_blocks * self.block_size
        return None

    @property
    def draft_model(self) -> str | None:
        """The speculative-decoding draft model, where the configuration names one."""
        draft = (self.engine_args.get("speculative_config") or {}).get("model")
        return str(draft) if draft else None


@dataclass
class RunResult:
    """One workload run on one engine configuration."""

    label: str  # configuration label, e.g. "baseline", "spec-ngram", "reference"
    workload: str  # workload name, e.g. "main", "no-thinking", "shared-prefix", "gamma"
    records: list[RequestRecord]
    timelines: dict[str, Timeline] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    counters_start: dict[str, float] = field(default_factory=dict)
    counters_end: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # EngineSpec + engine info
    workload_config: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the run as a whole failed (engine died, run timeout)
    trial: int = 0  # which of --rllm-trials this run is
    host: dict[str, float] = field(default_factory=dict)  # telemetry.host: other load on the machine, probe speed
    trials: list[RunResult] = field(default_factory=list)  # a combined run's trials (combine_trials); empty for one run
    engine_died: bool = False  # the engine was gone when the run ended (its error says how)
    reused: str | None = None  # where a run that was not generated in this session came from, and when it was
    generated: str = ""  # when it was generated (UTC), once the session kept it
    store_key: dict[str, Any] = field(default_factory=dict)  # run_store.RunKey: digest and fields (a report's runs match on it)
    _summary: dict[str, float] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.label}/{self.workload}"

    @property
    def engine_info(self) -> EngineInfo:
        return EngineInfo.from_dict(self.engine)

    def summary(self) -> dict[str, float]:
        if self._summary is None:
            self._summary = summarize_trials(self) if self.trials else summarize(self)
        return self._summary

    def accuracy(self) -> dict[str, Any]:
        """Accuracy with Wilson intervals, overall, per domain and per difficulty."""
        from pytest_rllm.accuracy.summary import accuracy_summary

        return accuracy_summary(self.records)

    def to_dict(self, *, digits: int | None = None) -> dict[str, Any]:
        """JSON-ready and complete (run_codec.run_from_dict reads it back); times relative to the run's start.

        `digits`: decimals kept of each time (None: all, so a re-check from a report reads the same numbers).
        """
        from pytest_rllm.run_codec import run_to_dict

        return run_to_dict(self, digits=digits)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The run that to_dict wrote; its summary is computed again from the records."""
        from pytest_rllm.run_codec import run_from_dict

        return run_from_dict(data)


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity (nested in dicts and lists too) turned into None, as JSON wants."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summarize(run: RunResult) -> dict[str, float]:
    records = run.records
    done = [r for r in records if r.ok]
    out: dict[str, float] = {
        "requests": float(len(records)),
        "completed": float(len(done)),
        "failed": float(len(records) - len(done)),
    }
    if done:
        first_send = min(r.t_sent for r in done)  # type: ignore[type-var]
        last_done = max(r.t_done for r in done)  # type: ignore[type-var]
        duration = max(last_done - first_send, 1e-9)
    else:
        duration = max(run.t_end - run.t_start, 1e-9)
    out["duration"] = duration
    out["request_throughput"] = len(done) / duration
    output_tokens = sum(r.output_tokens for r in done)
    out["output_tokens_total"] = float(output_tokens)
    out["output_throughput"] = output_tokens / duration
    out.update(distribution(_values(r.ttft for r in done), "ttft"))
    out.update(distribution(_values(r.ttfvt for r in done), "ttfvt"))
    out.update(distribution(_values(r.tpot for r in done), "tpot"))
    out.update(distribution(_values(itl for r in done for itl in r.itls), "itl"))
    out.update(distribution(_values(r.e2e for r in done), "e2e"))
    out.update(distribution([float(r.output_tokens) for r in done], "output_tokens"))
    out.update(distribution(_values(r.send_lag for r in records), "send_lag"))
    out["truncated"] = float(sum(1 for r in done if r.finish_reason == "length"))
    out.update(goodput(records, run.slo, duration))
    out.update(straggler_stats(records))
    window = (run.t_start, run.t_end if run.t_end > run.t_start else math.inf)
    for name, prefix in (
        ("kv_cache_usage", "kv_cache_usage"),
        ("num_requests_running", "num_requests_running"),
        ("num_requests_waiting", "num_requests_waiting"),
        ("gpu_memory_used_bytes", "gpu_memory_used_bytes"),
    ):
        points = [(t, v) for t, v in run.timelines.get(name, []) if window[0] <= t <= window[1]]
        stats = timeline_stats(points, prefix)
        if prefix != "kv_cache_usage":
            stats = {k: v for k, v in stats.items() if k.endswith(("_peak", "_mean"))}
        out.update(stats)
    if run.counters_end:
        out.update(counter_deltas(run.counters_start, run.counters_end))
    try:
        from pytest_rllm.accuracy.summary import accuracy_summary
    except ImportError:  # the accuracy package is optional for pure latency runs
        return out
    acc = accuracy_summary(records)
    overall = acc.get("overall", acc)
    for name in ("accuracy", "truncated_in_reasoning"):
        if name in overall:
            out[name] = float(overall[name])
    if "wilson_low" in overall:
        out["accuracy_low"], out["accuracy_high"] = float(overall["wilson_low"]), float(overall["wilson_high"])
    elif "interval" in overall:
        out["accuracy_low"], out["accuracy_high"] = (float(x) for x in overall["interval"])
    return out


# The metrics a combined run gives an interval over its trials: the regression
# gate's absolute serving metrics, whose run-to-run spread is what the interval
# measures. (Accuracy gets its interval from the pooled records instead.)
TRIAL_INTERVAL_PATTERNS = (
    "output_throughput", "request_throughput",
    *(f"{m}_p{p}" for m in LATENCY_METRICS for p in (50, 99)),
)


def combine_trials(trials: Sequence[RunResult], *, repeats: int = 1) -> RunResult:
    """One run from --rllm-trials runs of the same workload on the same engine.

    Its records are every trial's, with repeat numbers offset per trial (trial t's
    repeat r becomes t*repeats + r), so accuracy pools all answers and paired
    comparisons still pair the same (item, repeat) across configurations. Its
    timelines are the first trial's (plots show one run); its summary is the
    trials' (summarize_trials).
    """
    import dataclasses

    if not trials:
        raise ValueError("combine_trials needs at least one trial")
    first = trials[0]
    records = [dataclasses.replace(r, repeat=t.trial * repeats + r.repeat) for t in trials for r in t.records]
    return RunResult(
        label=first.label, workload=first.workload, records=records, timelines=first.timelines,
        t_start=first.t_start, t_end=trials[-1].t_end, counters_start=first.counters_start,
        counters_end=trials[-1].counters_end, engine=first.engine, workload_config=first.workload_config,
        slo=first.slo, host=_mean_host(trials), trials=list(trials),
    )


def _mean_host(trials: Sequence[RunResult]) -> dict[str, float]:
    keys = {k for t in trials for k in t.host}
    out = {}
    for key in sorted(keys):
        values = [t.host[key] for t in trials if key in t.host]
        # The worst trial decides whether the host was quiet, so load keeps its maximum.
        out[key] = max(values) if key.endswith("_share") else float(np.mean(values))
    return out


# A single batch's shape: one trial whose last reply ran on alone (checks.finding.lone_reply)
# moves these far (makespan/median E2E 1.5 -> 3.1 on the embedded model), so a combined run
# gives their median over the trials, not the mean.
BATCH_SHAPE_METRICS = (
    "makespan_over_median_e2e", "tail_share", "output_tokens_p99_over_p50",
    "kv_cache_usage_mean", "kv_cache_usage_cv",
)


def summarize_trials(run: RunResult) -> dict[str, float]:
    """Each metric's mean over the trials (the median for BATCH_SHAPE_METRICS); for the gate's serving metrics
    also a 95% t interval and the median; pooled accuracy."""
    from pytest_rllm.stats import mean_interval

    per_trial = [t.summary() for t in run.trials]
    out: dict[str, float] = {}
    for key in per_trial[0]:
        values = _values(s.get(key) for s in per_trial)
        average = np.median if key in BATCH_SHAPE_METRICS else np.mean
        out[key] = float(average(values)) if values else math.nan
    for key in TRIAL_INTERVAL_PATTERNS:
        values = _values(s.get(key) for s in per_trial)
        if len(values) >= 2:
            _, out[f"{key}_low"], out[f"{key}_high"] = mean_interval(values)
            # What the gate judges: one trial that a straggler request held open moves the mean, not the median.
            out[f"{key}_median"] = float(np.median(values))
    pooled = summarize(RunResult(label=run.label, workload=run.workload, records=run.records))
    for key in ("accuracy", "accuracy_low", "accuracy_high", "truncated_in_reasoning"):
        if key in pooled:
            out[key] = pooled[key]
    out["trials"] = float(len(per_trial))
    return out
