"""Pilot finding 1: an RLLM's KV-cache usage is large and swings widely, unlike a plain LLM's."""

from __future__ import annotations

from pytest_rllm.checks.finding import KV_CV_TOLERANCE, fmt, one_reply_shaped, ratio, skip_unless_kv_measured, too_few_kv_samples

METRICS = {
    "kv_area_ratio_vs_reference": "50%", "kv_mean_ratio_vs_reference": "50%", "kv_peak_ratio_vs_reference": "50%",
    "kv_cache_usage_cv": KV_CV_TOLERANCE, "kv_cache_usage_peak": "2x", "num_requests_running_peak": "50%",
    "gpu_memory_used_bytes_peak": None,  # only where NVML exists
}
# What each run's KV-usage samples give: noise where that run caught too few (too_few_kv_samples).
REFERENCE_RATIOS = [name for name in METRICS if name.endswith("_vs_reference")]
OF_THE_RUN = ["kv_cache_usage_cv", "kv_cache_usage_peak"]
# Time averages over the makespan: a last reply running on alone at low usage lowers the mean and lifts the CV.
TIME_AVERAGED = ["kv_mean_ratio_vs_reference", "kv_cache_usage_cv"]


def unmeasured(run, reference_run) -> dict[str, str]:
    """{metric: why} for the KV metrics resting on a run that caught too few samples, or whose shape one reply set."""
    out = {}
    for reason, names in ((one_reply_shaped(run, reference_run), TIME_AVERAGED),
                          (too_few_kv_samples(reference_run), REFERENCE_RATIOS),
                          (too_few_kv_samples(run), REFERENCE_RATIOS + OF_THE_RUN)):
        if reason:
            out.update(dict.fromkeys(names, reason))
    return out


def against_reference(run, reference_run) -> dict[str, float]:
    """The run's summary, with its KV usage over the plain reference's added."""
    s, ref = run.summary(), reference_run.summary()
    ratios = {f"kv_{name}_ratio_vs_reference": ratio(s.get(f"kv_cache_usage_{name}"), ref.get(f"kv_cache_usage_{name}"))
              for name in ("area", "mean", "peak")}
    return {**s, **ratios}


def test_reasoning_uses_more_kv_cache_than_the_plain_reference(rllm_reasoning_model, baseline_run, reference_run, rllm_finding):
    """The reasoning run holds far more KV-cache memory-time (usage x seconds) than the plain reference on the same items."""
    skip_unless_kv_measured(baseline_run, reference_run)
    s, ref = baseline_run.summary(), reference_run.summary()
    data = against_reference(baseline_run, reference_run)
    rllm_finding.evidence(f"KV memory-time {fmt(s.get('kv_cache_usage_area'))} vs reference "
                          f"{fmt(ref.get('kv_cache_usage_area'))} usage-seconds (x{fmt(data['kv_area_ratio_vs_reference'])})")
    rllm_finding.evidence(f"KV mean {fmt(s.get('kv_cache_usage_mean'), '.1%')} vs {fmt(ref.get('kv_cache_usage_mean'), '.1%')}; "
                          f"peak {fmt(s.get('kv_cache_usage_peak'), '.1%')} vs {fmt(ref.get('kv_cache_usage_peak'), '.1%')}")
    rllm_finding.at_least(data["kv_area_ratio_vs_reference"], "kv_area_ratio", "KV memory-time ratio reasoning/reference")


def test_reasoning_kv_cache_usage_fluctuates(rllm_reasoning_model, baseline_run, rllm_finding):
    """KV-cache usage swings widely during a reasoning run (high coefficient of variation)."""
    skip_unless_kv_measured(baseline_run)
    s = baseline_run.summary()
    rllm_finding.evidence(f"KV usage min {fmt(s.get('kv_cache_usage_min'), '.2%')}, "
                          f"peak {fmt(s.get('kv_cache_usage_peak'), '.2%')}, CV {fmt(s.get('kv_cache_usage_cv'))}")
    rllm_finding.evidence(f"peak running {fmt(s.get('num_requests_running_peak'))}, "
                          f"peak waiting {fmt(s.get('num_requests_waiting_peak'))}")
    rllm_finding.at_least(s.get("kv_cache_usage_cv"), "kv_cv", "KV usage CV")


def test_memory_metrics_match_baseline(baseline_run, reference_run, rllm_baseline):
    """Memory behaviour matches the stored baseline for this hardware and model."""
    rllm_baseline.check(against_reference(baseline_run, reference_run), METRICS,
                        inconclusive=unmeasured(baseline_run, reference_run))
