"""KV-cache quantization (FP8 E4M3 / E5M2): accuracy roughly unchanged; a drop beyond T is flagged (small models degrade)."""

from __future__ import annotations

import pytest

from pytest_rllm.checks.finding import SPEED_RATIO_TOLERANCES, fmt, speed_ratios
from pytest_rllm.checks.serving import ratio_noise

PRESETS = ["kv-fp8-e4m3", "kv-fp8-e5m2"]
METRICS = {"accuracy": None, **SPEED_RATIO_TOLERANCES}
pytestmark = pytest.mark.parametrize("preset_run", PRESETS, indirect=True)


def test_kv_quantized_accuracy_within_tolerance(baseline_run, preset_run, rllm_finding):
    """FP8 KV-cache accuracy is within T points of baseline (paired); a drop is flagged. Skips where the engine cannot run it."""
    for key, value in speed_ratios(baseline_run.summary(), preset_run.summary()).items():
        rllm_finding.evidence(f"{key}: x{fmt(value)}")
    rllm_finding.accuracy_within(baseline_run, preset_run, "accuracy_points", flag_only=True)


def test_kv_quantization_matches_baseline(baseline_run, preset_run, rllm_baseline):
    """FP8 KV-cache accuracy and speed ratios match the stored baseline."""
    s = preset_run.summary()
    rllm_baseline.check({**s, **speed_ratios(baseline_run.summary(), s)}, METRICS,
                        speed_noise=ratio_noise(baseline_run, preset_run))
