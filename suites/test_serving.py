"""The regression gate: each configuration's absolute serving metrics against the baseline stored for this hardware.

Ratios between configurations (the other suites) stay green when the whole
engine gets slower; these do not. Tolerances come from the hardware class
(pytest_rllm/checks/serving.py); a slower speed on a busy host is inconclusive.
"""

from __future__ import annotations

import pytest

from pytest_rllm.checks.finding import cpu_spec_decoding_bug
from pytest_rllm.checks.serving import recorded_warm, speed_noise, serving_metrics, serving_tolerances
from pytest_rllm.compare import UPDATE_FLAG

# Speculative decoding corrupts outputs on vLLM's CPU build, so its accuracy is noise there.
CONFIGURATIONS = ["baseline", "quant-int8", "quant-fp8", "quant-awq", "quant-gptq",
                  pytest.param("spec-ngram", marks=cpu_spec_decoding_bug()),
                  pytest.param("spec-draft", marks=cpu_spec_decoding_bug()), "kv-fp8-e4m3", "kv-fp8-e5m2"]


@pytest.mark.parametrize("preset_run", CONFIGURATIONS, indirect=True)
def test_serving_metrics_match_baseline(preset_run, rllm_baseline, rllm_settings):
    """Throughput, latency percentiles, KV capacity and peak, GPU memory and accuracy match the stored baseline."""
    if rllm_settings.update_baselines == "none" and not rllm_baseline.read_path().exists():
        # Absolute numbers only compare with numbers measured on the same hardware class.
        pytest.skip(f"no serving baseline recorded on {rllm_baseline.hardware_key}; record one with {UPDATE_FLAG}")
    tolerances = serving_tolerances(rllm_baseline.hardware_key, rllm_settings.trials)
    metrics = serving_metrics(preset_run)
    noise = speed_noise(preset_run)
    if noise is None and rllm_settings.warm_up == 0 and recorded_warm(rllm_baseline.stored_configuration()):
        # A cold first batch pays the engine's first-batch costs (TTFT 2.4 s against 0.4 s
        # measured), which the baseline never saw.
        noise = "a cold run (--rllm-warm-up=0) against a baseline of warmed-up runs"
    rllm_baseline.check(metrics, tolerances={k: v for k, v in tolerances.items() if v is not None and k in metrics},
                        speed_noise=noise)
