"""Pilot finding 1: an RLLM's KV-cache usage is large and swings widely, unlike a plain LLM's."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import KV_CV_TOLERANCE, evidence, fmt, ratio, require, threshold

NEEDS = pytest.mark.rllm_needs(("baseline", "main"), ("baseline", "no-thinking"))


@NEEDS
def test_reasoning_uses_more_kv_cache_than_the_plain_reference(rllm_run, reference_run, rllm_settings, request):
    """The reasoning run holds far more KV-cache memory-time (usage x seconds) than the plain reference on the same items."""
    s, ref = rllm_run("baseline", "main").summary(), reference_run.summary()
    area_ratio = ratio(s.get("kv_cache_usage_area"), ref.get("kv_cache_usage_area"))
    evidence(request, f"KV memory-time {fmt(s.get('kv_cache_usage_area'))} vs reference {fmt(ref.get('kv_cache_usage_area'))} usage-seconds (x{fmt(area_ratio)})")
    evidence(request, f"KV mean {fmt(s.get('kv_cache_usage_mean'), '.1%')} vs {fmt(ref.get('kv_cache_usage_mean'), '.1%')}; "
                      f"peak {fmt(s.get('kv_cache_usage_peak'), '.1%')} vs {fmt(ref.get('kv_cache_usage_peak'), '.1%')}")
    limit = threshold(rllm_settings, "kv_area_ratio")
    require(area_ratio >= limit, f"KV memory-time ratio reasoning/reference is {fmt(area_ratio)}, below kv_area_ratio={limit:g}")


@pytest.mark.rllm_needs(("baseline", "main"))
def test_reasoning_kv_cache_usage_fluctuates(rllm_run, rllm_settings, request):
    """KV-cache usage swings widely during a reasoning run (high coefficient of variation)."""
    s = rllm_run("baseline", "main").summary()
    cv = s.get("kv_cache_usage_cv", float("nan"))
    evidence(request, f"KV usage min {fmt(s.get('kv_cache_usage_min'), '.2%')}, peak {fmt(s.get('kv_cache_usage_peak'), '.2%')}, CV {fmt(cv)}")
    evidence(request, f"peak running {fmt(s.get('num_requests_running_peak'))}, peak waiting {fmt(s.get('num_requests_waiting_peak'))}")
    require(cv >= threshold(rllm_settings, "kv_cv"), f"KV usage CV {fmt(cv)} is below kv_cv={threshold(rllm_settings, 'kv_cv'):g}")


@NEEDS
def test_memory_metrics_match_baseline(rllm_run, reference_run, rllm_baseline):
    """Memory behaviour matches the stored baseline for this hardware and model."""
    s, ref = rllm_run("baseline", "main").summary(), reference_run.summary()
    metrics = {
        "kv_area_ratio_vs_reference": Measurement(ratio(s["kv_cache_usage_area"], ref["kv_cache_usage_area"]), better="none"),
        "kv_mean_ratio_vs_reference": Measurement(ratio(s["kv_cache_usage_mean"], ref["kv_cache_usage_mean"]), better="none"),
        "kv_peak_ratio_vs_reference": Measurement(ratio(s["kv_cache_usage_peak"], ref["kv_cache_usage_peak"]), better="none"),
        "kv_cache_usage_cv": Measurement(s["kv_cache_usage_cv"], better="none"),
        "kv_cache_usage_peak": Measurement(s["kv_cache_usage_peak"], better="none"),
        "num_requests_running_peak": Measurement(s["num_requests_running_peak"], better="none"),
    }
    if "gpu_memory_used_bytes_peak" in s:
        metrics["gpu_memory_used_bytes_peak"] = Measurement(s["gpu_memory_used_bytes_peak"], better="lower")
    rllm_baseline.check(metrics, tolerances={
        "kv_area_ratio_vs_reference": "50%", "kv_mean_ratio_vs_reference": "50%", "kv_peak_ratio_vs_reference": "50%",
        "kv_cache_usage_cv": KV_CV_TOLERANCE, "kv_cache_usage_peak": "2x", "num_requests_running_peak": "50%",
    })
