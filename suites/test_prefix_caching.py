"""Prefix caching: it helps large models, but may add latency on small ones (< ~8B) — flagged, not failed."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import SPEED_RATIO_TOLERANCES, accuracy_check, evidence, flag, fmt, require, speed_ratios, threshold

pytestmark = pytest.mark.rllm_needs(("prefix-caching-on", "shared-prefix"), ("prefix-caching-off", "shared-prefix"))


def test_prefix_cache_hits_when_on(rllm_run, rllm_settings, request):
    """With prefix caching on and a shared prompt prefix, the cache hits (hit rate above 0)."""
    on, off = rllm_run("prefix-caching-on", "shared-prefix").summary(), rllm_run("prefix-caching-off", "shared-prefix").summary()
    hit = on.get("prefix_cache_hit_rate")
    evidence(request, f"hit rate on {fmt(hit, '.1%')}, off {fmt(off.get('prefix_cache_hit_rate', 0.0), '.1%')}")
    require(hit is not None and hit > threshold(rllm_settings, "prefix_hit_rate"),
            f"prefix-cache hit rate with caching on is {fmt(hit, '.1%')}: the engine reused nothing")


def test_prefix_caching_regression_is_flagged(rllm_run, request):
    """A throughput or latency regression with prefix caching on is flagged (the study saw it below ~8B)."""
    on, off = rllm_run("prefix-caching-on", "shared-prefix").summary(), rllm_run("prefix-caching-off", "shared-prefix").summary()
    ratios = speed_ratios(off, on)
    for key, value in ratios.items():
        evidence(request, f"on/off {key.removesuffix('_vs_baseline')}: x{fmt(value)}")
    if ratios["output_throughput_vs_baseline"] < 1.0 or ratios["e2e_p50_vs_baseline"] > 1.0:
        flag(f"prefix caching on is slower than off: throughput x{fmt(ratios['output_throughput_vs_baseline'])}, "
             f"E2E p50 x{fmt(ratios['e2e_p50_vs_baseline'])} (possible on small models)")


def test_prefix_caching_accuracy_within_tolerance(rllm_run, rllm_settings, request):
    """Accuracy with prefix caching on is within T points of off (paired); a drop is flagged."""
    accuracy_check(rllm_run("prefix-caching-off", "shared-prefix"), rllm_run("prefix-caching-on", "shared-prefix"),
                   threshold(rllm_settings, "accuracy_points"), flag_only=True, request=request)


def test_prefix_caching_matches_baseline(rllm_run, rllm_baseline):
    """Hit rate, accuracy and on/off speed ratios match the stored baseline."""
    on, off = rllm_run("prefix-caching-on", "shared-prefix").summary(), rllm_run("prefix-caching-off", "shared-prefix").summary()
    metrics = Measurement.from_summary(on, ["accuracy"])
    metrics["prefix_cache_hit_rate"] = Measurement(on.get("prefix_cache_hit_rate", float("nan")), better="higher")
    for key, value in speed_ratios(off, on).items():
        metrics[key.replace("_vs_baseline", "_on_vs_off")] = Measurement(value, better="none")
    tolerances = {k.replace("_vs_baseline", "_on_vs_off"): v for k, v in SPEED_RATIO_TOLERANCES.items()}
    rllm_baseline.check(metrics, tolerances={**tolerances, "prefix_cache_hit_rate": "20pt"})
