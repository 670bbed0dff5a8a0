"""Prefix caching: it helps large models, but may add latency on small ones (< ~8B) — flagged, not failed."""

from __future__ import annotations

from pytest_rllm.checks.finding import SPEED_RATIO_TOLERANCES, fmt, speed_ratios
from pytest_rllm.fixtures import run_fixture

prefix_on_run = run_fixture("prefix-caching-on", "shared-prefix")
prefix_off_run = run_fixture("prefix-caching-off", "shared-prefix")
METRICS = {"accuracy": None, "prefix_cache_hit_rate": "20pt",
           **{k.replace("_vs_baseline", "_on_vs_off"): v for k, v in SPEED_RATIO_TOLERANCES.items()}}


def test_prefix_cache_hits_when_on(prefix_on_run, prefix_off_run, rllm_finding):
    """With prefix caching on and a shared prompt prefix, the cache hits (hit rate above 0)."""
    hit = prefix_on_run.summary().get("prefix_cache_hit_rate")
    rllm_finding.evidence(f"hit rate on {fmt(hit, '.1%')}, off {fmt(prefix_off_run.summary().get('prefix_cache_hit_rate', 0.0), '.1%')}")
    rllm_finding.above(hit, "prefix_hit_rate", "prefix-cache hit rate with caching on (0: the engine reused nothing)")


def test_prefix_caching_regression_is_flagged(prefix_on_run, prefix_off_run, rllm_finding):
    """A throughput or latency regression with prefix caching on is flagged (the study saw it below ~8B)."""
    ratios = speed_ratios(prefix_off_run.summary(), prefix_on_run.summary(), suffix="_on_vs_off")
    for key, value in ratios.items():
        rllm_finding.evidence(f"on/off {key.removesuffix('_on_vs_off')}: x{fmt(value)}")
    if ratios["output_throughput_on_vs_off"] < 1.0 or ratios["e2e_p50_on_vs_off"] > 1.0:
        rllm_finding.flag(f"prefix caching on is slower than off: throughput x{fmt(ratios['output_throughput_on_vs_off'])}, "
                          f"E2E p50 x{fmt(ratios['e2e_p50_on_vs_off'])} (possible on small models)")


def test_prefix_caching_accuracy_within_tolerance(prefix_on_run, prefix_off_run, rllm_finding):
    """Accuracy with prefix caching on is within T points of off (paired); a drop is flagged."""
    rllm_finding.accuracy_within(prefix_off_run, prefix_on_run, "accuracy_points", flag_only=True)


def test_prefix_caching_matches_baseline(prefix_on_run, prefix_off_run, rllm_baseline):
    """Hit rate, accuracy and on/off speed ratios match the stored baseline."""
    on = prefix_on_run.summary()
    data = {"prefix_cache_hit_rate": float("nan"), **on, **speed_ratios(prefix_off_run.summary(), on, suffix="_on_vs_off")}
    rllm_baseline.check(data, METRICS)
