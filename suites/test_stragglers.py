"""Pilot finding 2: in a closed batch, a few very long reasoning requests hold the batch open."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import evidence, fmt, require, threshold

pytestmark = pytest.mark.rllm_needs(("baseline", "main"))


def test_a_few_long_requests_dominate_the_batch(rllm_run, rllm_settings, request):
    """The batch makespan is well above the median request's E2E: stragglers hold it open."""
    s = rllm_run("baseline", "main").summary()
    evidence(request, f"makespan {fmt(s.get('makespan'))}s = x{fmt(s.get('makespan_over_median_e2e'))} the median E2E "
                      f"{fmt(s.get('e2e_p50'))}s; tail (<=10% still running) {fmt(s.get('tail_share'), '.0%')} of it")
    require(s.get("makespan_over_median_e2e", 0) >= threshold(rllm_settings, "makespan_over_median"),
            f"makespan/median E2E is {fmt(s.get('makespan_over_median_e2e'))}, below makespan_over_median="
            f"{threshold(rllm_settings, 'makespan_over_median'):g}")


def test_output_lengths_have_a_long_tail(rllm_run, rllm_settings, request):
    """Output length p99 is far above p50: a long tail of very long reasoning."""
    s = rllm_run("baseline", "main").summary()
    evidence(request, f"output tokens p50 {fmt(s.get('output_tokens_p50'))}, p99 {fmt(s.get('output_tokens_p99'))}")
    require(s.get("output_tokens_p99_over_p50", 0) >= threshold(rllm_settings, "length_tail_ratio"),
            f"output length p99/p50 is {fmt(s.get('output_tokens_p99_over_p50'))}, below length_tail_ratio="
            f"{threshold(rllm_settings, 'length_tail_ratio'):g}")


def test_straggler_metrics_match_baseline(rllm_run, rllm_baseline):
    """Straggler metrics match the stored baseline."""
    s = rllm_run("baseline", "main").summary()
    rllm_baseline.check({
        "makespan_over_median_e2e": Measurement(s["makespan_over_median_e2e"], better="none"),
        "tail_share": Measurement(s["tail_share"], better="none"),
        "output_tokens_p99_over_p50": Measurement(s["output_tokens_p99_over_p50"], better="none"),
    }, tolerances={"makespan_over_median_e2e": "50%", "tail_share": "25pt", "output_tokens_p99_over_p50": "50%"})
