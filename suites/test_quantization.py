"""Weight quantization keeps accuracy within bounds while it changes speed (the study: AWQ and 4-bit got slower)."""

from __future__ import annotations

import pytest

from pytest_rllm.checks.finding import SPEED_RATIO_TOLERANCES, fmt, speed_ratios
from pytest_rllm.checks.serving import ratio_noise

PRESETS = ["quant-int8", "quant-fp8", "quant-awq", "quant-gptq"]
METRICS = {"accuracy": None, **SPEED_RATIO_TOLERANCES}
pytestmark = pytest.mark.parametrize("preset_run", PRESETS, indirect=True)


def test_quantized_accuracy_within_tolerance(baseline_run, preset_run, rllm_finding):
    """Quantized accuracy is within T points of baseline accuracy (paired, 95%)."""
    # The study measured 7B models. The embedded ~1M-parameter model is far below
    # that, and small models degrade, so on it a miss is flagged; on a real model it fails.
    rllm_finding.accuracy_within(baseline_run, preset_run, "accuracy_points",
                                 flag_only=rllm_finding.settings.uses_embedded_model)


def test_quantization_speed_is_reported_and_slowdown_flagged(baseline_run, preset_run, rllm_finding):
    """Quantization's throughput, TTFVT and E2E are reported; a slower quantized model is flagged (as AWQ was)."""
    base, quant = baseline_run.summary(), preset_run.summary()
    ratios = speed_ratios(base, quant)
    for key, value in ratios.items():
        rllm_finding.evidence(f"{key}: x{fmt(value)}")
    if preset_run.engine_info.variant:
        rllm_finding.evidence(f"{preset_run.label} ran as {preset_run.engine_info.variant}")
    for run in (baseline_run, preset_run):
        info = run.engine_info
        if info.kv_capacity_tokens:
            rllm_finding.evidence(f"{run.label}: KV capacity {info.kv_capacity_tokens} tokens (cache dtype {info.cache_dtype or '?'})")
    rllm_finding.at_least(ratios["output_throughput_vs_baseline"], "slowdown_ratio",
                          f"{preset_run.label}'s output throughput over baseline's ({fmt(quant.get('output_throughput'), '.0f')} "
                          f"vs {fmt(base.get('output_throughput'), '.0f')} tok/s)", flag_only=True)


def test_quantization_matches_baseline(baseline_run, preset_run, rllm_baseline):
    """Quantized accuracy, speed ratios and KV capacity match the stored baseline."""
    s = preset_run.summary()
    rllm_baseline.check({**s, **speed_ratios(baseline_run.summary(), s)}, METRICS,
                        speed_noise=ratio_noise(baseline_run, preset_run))
