"""KV-cache quantization (FP8 E4M3 / E5M2): accuracy roughly unchanged; a drop beyond T is flagged (small models degrade)."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import (
    SPEED_RATIO_TOLERANCES, accuracy_check, evidence, fmt, speed_measurements, speed_ratios, threshold,
)

PRESETS = ["kv-fp8-e4m3", "kv-fp8-e5m2"]
params = [pytest.param(p, marks=pytest.mark.rllm_needs(("baseline", "main"), (p, "main")), id=p) for p in PRESETS]


@pytest.mark.parametrize("preset", params)
def test_kv_quantized_accuracy_within_tolerance(rllm_run, rllm_settings, request, preset):
    """FP8 KV-cache accuracy is within T points of baseline (paired); a drop is flagged. Skips where the engine cannot run it."""
    base, quant = rllm_run("baseline", "main"), rllm_run(preset, "main")
    for key, value in speed_ratios(base.summary(), quant.summary()).items():
        evidence(request, f"{key}: x{fmt(value)}")
    accuracy_check(base, quant, threshold(rllm_settings, "accuracy_points"), flag_only=True, request=request)


@pytest.mark.parametrize("preset", params)
def test_kv_quantization_matches_baseline(rllm_run, rllm_baseline, preset):
    """FP8 KV-cache accuracy and speed ratios match the stored baseline."""
    base, quant = rllm_run("baseline", "main"), rllm_run(preset, "main")
    metrics = Measurement.from_summary(quant.summary(), ["accuracy"])
    metrics.update(speed_measurements(speed_ratios(base.summary(), quant.summary())))
    rllm_baseline.check(metrics, tolerances=SPEED_RATIO_TOLERANCES)
