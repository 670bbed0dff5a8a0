"""The candidate engine, compared side by side with the reference in one session.

The candidate is another installation (--rllm-candidate-python), a server already
running (--rllm-candidate-endpoint), or this installation with other engine flags
(--rllm-candidate-server-arg; it may be combined with the python). It runs in a
second RllmSession (:class:`CandidateSession`) with the same items and the same
sampling; only its engines differ.

The two engines' trials are interleaved, A B A B ... (:func:`interleave`), at
least three each, so the host's drift reaches both sides alike; the ratio of each
adjacent pair of trials is what the throughput and latency verdicts judge
(pytest_rllm/candidate.py, :func:`pytest_rllm.resampling.trials_ratio`).

Both engines up at once, or one at a time (--rllm-candidate-engines):
- ``both``: each engine starts once and idles while the other one runs a trial.
  On a CPU host that saves an engine start per trial (~30-40 s). Measured
  (benchmarks/idle_engine.py; benchmarks/RESULTS.md, "Candidate engine"): an
  idle vLLM CPU server uses ~1% of a core, but for ~1 s after its last request
  it keeps a whole core busy. Interleaved trials follow each other at once, so
  the active engine's first second competed with it (foreign CPU 10-17% in such
  trials, under 1% otherwise): :func:`wait_quiet` waits, before each trial, until
  the idle engine is quiet. Beside a quiet idle server, output tok/s read x0.90
  of running alone (geometric mean of 4 rounds, x0.82-x1.03: not resolved from
  the host's swings). Both engines are up before the first trial, so every trial
  of either side has the same idle neighbour and that cost cancels in the ratio;
  the A/B runs' absolute figures are not for the serving baselines. What the
  idle engine uses counts as foreign load in each run's ``host`` record.
- ``one``: the other side's engine is stopped before each trial, so each trial
  pays a start and a warm-up batch. Two engines on one GPU may not fit in its
  memory (each takes --gpu-memory-utilization of it, 0.9 by default).
- ``auto`` (the default): ``both`` on a CPU host, ``one`` where GPUs are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from pytest_rllm.checks.serving import held_open_by, host_noise
from pytest_rllm.settings import RllmSettings

MIN_TRIALS = 3
# What the A/B table shows for each preset, in this order.
AB_METRICS = (
    "output_throughput", "request_throughput",
    "ttfvt_p50", "ttfvt_p99", "e2e_p50", "e2e_p99", "ttft_p50", "tpot_p50",
    "accuracy", "failed", "kv_capacity_tokens",
)
TRUNCATED = "truncated_fraction"


def candidate_settings(settings: RllmSettings) -> RllmSettings:
    """The reference's settings with the candidate's engine: same items, sampling, seed and budget."""
    changes: dict[str, Any] = {
        "optimizations": settings.candidate_optimizations,
        "server_arg": tuple(settings.server_arg) + tuple(settings.candidate_server_arg),
    }
    if settings.candidate_endpoint:
        # Its model is the name it serves; "": the first id of its /v1/models.
        changes.update(endpoint=settings.candidate_endpoint, api_key_env=settings.candidate_api_key_env,
                       model=settings.candidate_model or "", server_arg=())
    return settings.replace(**changes)


def keep_both_up(settings: RllmSettings, gpu_ids: Sequence[int] | None) -> bool:
    """--rllm-candidate-engines: both engines up together, or one at a time (restarted per trial)."""
    if settings.candidate_engines != "auto":
        return settings.candidate_engines == "both"
    return gpu_ids is None  # auto: a CPU host keeps both; on GPUs two engines may not fit


def _session_class() -> type:
    from pytest_rllm.session import RllmSession

    class CandidateSession(RllmSession):
        """An RllmSession whose engines are the candidate's: another python, more flags, or an endpoint."""

        def __init__(self, settings: RllmSettings, *, reference_model: str | None = None, **kwargs: Any) -> None:
            self.reference_settings = settings
            cand = candidate_settings(settings)
            super().__init__(cand, **kwargs)
            if not cand.endpoint and reference_model is not None:
                self.model = reference_model  # the same model folder the reference serves

        def reasoning_choice(self, spec: Any, label: str) -> Any:
            python = self.reference_settings.candidate_python
            if python is None or self.settings.endpoint or label == "reference":
                return super().reasoning_choice(spec, label)
            from pytest_rllm.reasoning import choose_reasoning_parser, registered_reasoning_parsers

            # The parser names the candidate's vLLM registers, not this installation's.
            return choose_reasoning_parser(self.settings.reasoning_parser, spec.model, self.settings,
                                           registry=lambda: registered_reasoning_parsers(python))

        def _make_engine(self, spec: Any, label: str) -> Any:
            python = self.reference_settings.candidate_python
            if self.settings.endpoint or python is None:
                return super()._make_engine(spec, label)
            from pytest_rllm.engines.factory import make_engine

            return make_engine(self.settings, spec, label, choice=lambda: self.reasoning_choice(spec, label),
                               gpu_ids=self.gpu_ids, log_dir=self.log_dir, python=python)

    return CandidateSession


def make_candidate_session(settings: RllmSettings, *, reference: Any = None, log_dir: Path | None = None,
                           gpu_ids: list[int] | None = None) -> Any:
    """The candidate's RllmSession (engines start only when a trial needs them)."""
    cls = _session_class()
    model = getattr(reference, "model", None)
    return cls(settings, reference_model=model, log_dir=log_dir, gpu_ids=gpu_ids)


# --------------------------------------------------------------------------- interleaving


class _Session(Protocol):
    runs: list[Any]

    def measure(self, label: str, workload: str = "main", *, trials: int | None = None) -> Any: ...

    def stop_engine(self) -> None: ...

    def engine(self, label: str = "baseline") -> Any: ...


@dataclass
class ABPair:
    """One preset's interleaved trials on both engines, combined per side, and the A/B rows."""

    label: str
    workload: str
    reference: Any  # RunResult: the reference's trials combined
    candidate: Any
    order: list[tuple[str, int]]  # ("reference", 0), ("candidate", 0), ("reference", 1), ...
    keep_both: bool
    rows: list[Any] = field(default_factory=list)  # candidate.ABRow
    skipped: list[str] = field(default_factory=list)
    settled: float = 0.0  # seconds spent waiting for the idle engine to go quiet (wait_quiet)
    redone: list[str] = field(default_factory=list)  # pairs measured again, and why (a busy host)

    def row(self, metric: str) -> Any:
        return next((r for r in self.rows if r.metric == metric), None)


def group_cpu_seconds(pgid: int) -> float | None:
    """utime + stime of the live processes of a process group, from /proc; None where /proc cannot tell."""
    import os

    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in proc_root.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after the state: ppid, pgrp
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / tick


QUIET_CORES = 0.1  # an idle vLLM CPU server uses ~0.02 cores; one still spinning after a batch, ~1
QUIET_WINDOW = 0.25
QUIET_MAX_WAIT = 15.0


def wait_quiet(session: Any, *, cores: float = QUIET_CORES, window: float = QUIET_WINDOW,
               max_wait: float = QUIET_MAX_WAIT) -> float:
    """Wait until the session's running engine (a server we started) uses under `cores` CPUs; the seconds waited.

    Returns at once for an endpoint, an in-process engine or no engine. Gives up after `max_wait`.
    """
    import time

    engine = getattr(session, "_engine", None)
    proc = getattr(engine, "proc", None)
    if proc is None or getattr(getattr(session, "settings", None), "endpoint", None):
        return 0.0
    t0 = time.perf_counter()
    before = group_cpu_seconds(proc.pid)
    while before is not None and time.perf_counter() - t0 < max_wait:
        time.sleep(window)
        after = group_cpu_seconds(proc.pid)
        if after is None or after - before < cores * window:
            break
        before = after
    return time.perf_counter() - t0


def interleave(reference: _Session, candidate: _Session, label: str, workload: str = "main", *,
               trials: int, keep_both: bool, repeats: int = 1, settle: Any = wait_quiet,
               redo_busy: bool = True) -> ABPair:
    """`trials` runs on each engine, A B A B ..., each a fresh session.measure(label, workload, trials=1).

    Trial i of each side is numbered i (its records' repeats are offset by it, so
    both sides pair the same (item, repeat)), and each side's trials are combined
    into one run whose report lists its trials. keep_both=False stops the other
    side's engine before each trial; keep_both=True waits, with `settle(other)`,
    until the other side's engine is quiet. A pair during which other processes
    used the host (foreign CPU above 10%, steal above 5%: the serving gate's
    bounds) is measured again, at most `trials` times in all (redo_busy); the pairs
    dropped are named in ABPair.redone. The candidate's engine is stopped at
    the end: the runs that follow must not share the host with an idle engine.
    """
    from pytest_rllm.results import combine_trials

    trials = max(int(trials), MIN_TRIALS)
    sides = (("reference", reference, candidate), ("candidate", candidate, reference))
    done: dict[str, list[Any]] = {"reference": [], "candidate": []}
    order: list[tuple[str, int]] = []
    redone: list[str] = []
    settled = 0.0
    extra = trials if redo_busy else 0  # pairs that may be measured again
    try:
        if keep_both:
            # Both up before the first trial: every trial of either side then has the other
            # engine idle beside it (benchmarks/idle_engine.py), so what that costs cancels in the ratio.
            candidate.engine(label)
            reference.engine(label)
        while len(done["reference"]) < trials:
            index = len(done["reference"])
            measured = {}
            for side, session, other in sides:
                if not keep_both:
                    other.stop_engine()
                else:
                    settled += settle(other)
                run = session.measure(label, workload, trials=1)
                run.trial = index
                measured[side] = run
                order.append((side, index))
            noise = [f"{side}: {why}" for side, run in measured.items() if (why := host_noise(run) or held_open_by(run))]
            if noise and extra > 0:
                # Something else used the machine during this pair: measure the pair again.
                extra -= 1
                redone.append(f"pair {index}: " + "; ".join(noise))
                for side, session, _ in sides:
                    session.runs[:] = [r for r in session.runs if r is not measured[side]]
                continue
            for side in done:
                done[side].append(measured[side])
    finally:
        candidate.stop_engine()
    combined = {}
    for side, session, _ in sides:
        run = combine_trials(done[side], repeats=repeats)
        run.label = f"{label}@{side}"
        # The report lists the pair's runs once each, their trials inside them.
        session.runs[:] = [r for r in session.runs if not any(r is t for t in done[side])] + [run]
        combined[side] = run
    return ABPair(label, workload, combined["reference"], combined["candidate"], order, keep_both, settled=settled,
                  redone=redone)


# --------------------------------------------------------------------------- verdicts


def ab_tolerances(thresholds: Any) -> dict[str, str]:
    """The A/B tolerances from the --rllm-threshold names (choices.THRESHOLDS)."""
    speed, latency = thresholds("candidate_throughput_pct"), thresholds("candidate_latency_pct")
    return {
        "output_throughput": f"{speed:g}%", "request_throughput": f"{speed:g}%",
        **{f"{m}_{p}": f"{latency:g}%" for m in ("ttft", "ttfvt", "tpot", "itl", "e2e") for p in ("p50", "p90", "p99")},
        "accuracy": f"{thresholds('accuracy_points'):g}pt",
        "kv_capacity_tokens": f"{thresholds('candidate_kv_capacity_pct'):g}%",
        "failed": f"{thresholds('candidate_failed'):g}",
    }


def truncated_row(name: str, reference: Any, candidate: Any, points: float) -> Any:
    """The share of requests cut at max_tokens, paired per (item, repeat): candidate - reference, 95% Newcombe."""
    from pytest_rllm.candidate import ABRow, ab_verdict
    from pytest_rllm.stats import newcombe_paired_interval

    a = {(r.item_id, r.repeat): r for r in reference.records if r.ok}
    b = {(r.item_id, r.repeat): r for r in candidate.records if r.ok}
    keys = sorted(a.keys() & b.keys())
    if not keys:
        return None
    cut_a = [a[k].finish_reason == "length" for k in keys]
    cut_b = [b[k].finish_reason == "length" for k in keys]
    diff, low, high = newcombe_paired_interval(cut_a, cut_b, 0.95)
    band = (-points / 100.0, points / 100.0)
    ok = math.isfinite(low) and math.isfinite(high)
    verdict = ab_verdict(low, high, band, "lower") if ok else ab_verdict(diff, diff, band, "lower")
    return ABRow(name, TRUNCATED, sum(cut_a) / len(keys), sum(cut_b) / len(keys), "diff", diff,
                 low if ok else None, high if ok else None, band, f"{points:g}pt", "lower", verdict,
                 f"{len(keys)} paired requests", "" if ok else "judged on the point value alone")


def judge(pair: ABPair, thresholds: Any) -> ABPair:
    """Fill `pair.rows`: candidate.compare_runs on the two combined runs, plus the truncated share."""
    from pytest_rllm.candidate import compare_runs

    name = f"{pair.label}/{pair.workload}"
    rows, skipped = compare_runs(pair.reference.to_dict(), pair.candidate.to_dict(), AB_METRICS,
                                 ab_tolerances(thresholds), name=name)
    cut = truncated_row(name, pair.reference, pair.candidate, thresholds("candidate_truncated_points"))
    if cut is not None:
        rows.append(cut)
    pair.rows, pair.skipped = rows, skipped
    return pair


def engine_texts(pair: ABPair) -> tuple[str, str]:
    """Each side's engine in words (name, version, torch, device), from what its runs recorded."""
    from pytest_rllm.engines.identity import identity_of

    return identity_of(pair.reference.engine).text, identity_of(pair.candidate.engine).text


# --------------------------------------------------------------------------- the session's comparisons


class CandidateComparisons:
    """The rllm_candidate fixture: each preset's ABPair, run once per session, failures cached too."""

    def __init__(self, settings: RllmSettings, reference: Any, *, log_dir: Path | None = None,
                 gpu_ids: list[int] | None = None) -> None:
        from pytest_rllm.checks.finding import threshold

        self.settings = settings
        self.reference = reference
        self.session = make_candidate_session(settings, reference=reference, log_dir=log_dir, gpu_ids=gpu_ids)
        self.keep_both = keep_both_up(settings, gpu_ids)
        self.trials = max(settings.trials, MIN_TRIALS)
        self._pairs: dict[tuple[str, str], ABPair | BaseException] = {}
        self._threshold = lambda name: threshold(settings, name)

    def pair(self, label: str, workload: str = "main") -> ABPair:
        """The interleaved comparison of `label` (run now if not yet); RunUnavailable / RunFailed as the session raises them."""
        from pytest_rllm.session import RunUnavailable

        key = (label, workload)
        if key not in self._pairs:
            try:
                if label not in self.settings.candidate_optimizations:
                    raise RunUnavailable(f"{label} is not in --rllm-candidate-optimizations="
                                         f"{','.join(self.settings.candidate_optimizations)}")
                pair = interleave(self.reference, self.session, label, workload, trials=self.trials,
                                  keep_both=self.keep_both, repeats=self.settings.repeats)
                self._pairs[key] = judge(pair, self._threshold)
            except Exception as exc:  # RunUnavailable / RunFailed, cached: every test of the preset reads the same
                self._pairs[key] = exc
        found = self._pairs[key]
        if isinstance(found, BaseException):
            raise found
        return found

    @property
    def pairs(self) -> list[ABPair]:
        return [p for p in self._pairs.values() if isinstance(p, ABPair)]

    def close(self) -> None:
        self.session.close()
