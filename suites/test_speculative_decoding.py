"""Speculative decoding: E2E time goes down while accuracy barely moves; TTFVT may go up (the study saw it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import (
    SPEED_RATIO_TOLERANCES, accuracy_check, check_or_flag, cpu_spec_decoding_bug, evidence, flag, fmt, require,
    speed_measurements, speed_ratios, threshold,
)

PRESETS = ["spec-ngram", "spec-draft"]
CPU_SPEC_DECODING_BUG = cpu_spec_decoding_bug()
params = [pytest.param(p, marks=pytest.mark.rllm_needs(("baseline", "main"), (p, "main")), id=p) for p in PRESETS]


def self_drafting(run) -> bool:
    config = run.engine.get("spec", {}).get("engine_args", {}).get("speculative_config") or {}
    draft = config.get("model")
    return bool(draft) and Path(str(draft)) == Path(str(run.engine.get("spec", {}).get("model")))


@CPU_SPEC_DECODING_BUG
@pytest.mark.parametrize("preset", params)
def test_speculative_decoding_lowers_e2e(rllm_run, rllm_settings, request, preset):
    """Speculative decoding's median E2E is at most baseline's."""
    base, spec = rllm_run("baseline", "main"), rllm_run(preset, "main")
    ratios = speed_ratios(base.summary(), spec.summary())
    for key, value in ratios.items():
        evidence(request, f"{key}: x{fmt(value)}")
    limit = threshold(rllm_settings, "spec_e2e_ratio")
    # A model drafting for itself runs every token twice: it checks acceptance, not speed.
    check_or_flag(ratios["e2e_p50_vs_baseline"] <= limit,
                  f"{preset} median E2E is x{fmt(ratios['e2e_p50_vs_baseline'])} baseline's, above spec_e2e_ratio={limit:g}",
                  flag_only=self_drafting(spec))


@CPU_SPEC_DECODING_BUG
@pytest.mark.parametrize("preset", params)
def test_speculative_accuracy_within_tolerance(rllm_run, rllm_settings, request, preset):
    """Speculative decoding's accuracy is within T points of baseline's (paired, 95%)."""
    accuracy_check(rllm_run("baseline", "main"), rllm_run(preset, "main"),
                   threshold(rllm_settings, "accuracy_points"), flag_only=False, request=request)


@pytest.mark.parametrize("preset", params)
def test_speculative_acceptance_is_reported_and_ttfvt_rise_flagged(rllm_run, rllm_settings, request, preset):
    """The engine's acceptance rate is reported (and near 1 when the model drafts for itself); a TTFVT rise is flagged."""
    base, spec = rllm_run("baseline", "main"), rllm_run(preset, "main")
    s = spec.summary()
    acceptance = s.get("spec_acceptance_rate")
    evidence(request, f"acceptance rate {fmt(acceptance, '.1%')} (engine counters)")
    require(acceptance is not None, "the engine reported no speculative decoding counters (vllm:spec_decode_num_draft_tokens)")
    # Only greedy sampling makes a self-draft accept everything: vLLM drafts greedily,
    # so at temperature > 0 acceptance is the target's probability of the draft's token.
    if self_drafting(spec) and rllm_settings.temperature == 0:
        require(acceptance >= threshold(rllm_settings, "spec_acceptance_self_draft"),
                f"the model drafting for itself had acceptance {fmt(acceptance, '.1%')}, below spec_acceptance_self_draft")
    ttfvt = speed_ratios(base.summary(), s)["ttfvt_p50_vs_baseline"]
    if ttfvt > 1.0:
        flag(f"{preset} raised TTFVT p50 x{fmt(ttfvt)} against baseline (the study saw this too)")


# The corrupted outputs also make the speed ratios swing between runs on one
# host (e2e_p50_vs_baseline 0.91 stored, 1.62 in the next run): no stable
# baseline exists for a broken engine, so this is marked like the checks above.
@CPU_SPEC_DECODING_BUG
@pytest.mark.parametrize("preset", params)
def test_speculative_decoding_matches_baseline(rllm_run, rllm_baseline, preset):
    """Speculative decoding's accuracy, acceptance and speed ratios match the stored baseline."""
    base, spec = rllm_run("baseline", "main"), rllm_run(preset, "main")
    s = spec.summary()
    metrics = Measurement.from_summary(s, ["accuracy"])
    metrics["spec_acceptance_rate"] = Measurement(s.get("spec_acceptance_rate", float("nan")), better="higher")
    metrics.update(speed_measurements(speed_ratios(base.summary(), s)))
    rllm_baseline.check(metrics, tolerances={**SPEED_RATIO_TOLERANCES, "spec_acceptance_rate": "15pt"})
