"""Pilot finding 2: in a closed batch, a few very long reasoning requests hold the batch open.

Both findings are about reasoning (the study's plain LLMs showed neither), so they take
rllm_reasoning_model and skip, with the count measured, for a model that never thinks;
the baseline check runs on any model.
"""

from __future__ import annotations

from pytest_rllm.checks.finding import fmt, one_reply_shaped

METRICS = {"makespan_over_median_e2e": "50%", "tail_share": "25pt", "output_tokens_p99_over_p50": "50%"}


def test_a_few_long_requests_dominate_the_batch(rllm_reasoning_model, baseline_run, rllm_finding):
    """The batch makespan is well above the median request's E2E: stragglers hold it open."""
    s = baseline_run.summary()
    rllm_finding.evidence(f"makespan {fmt(s.get('makespan'))}s = x{fmt(s.get('makespan_over_median_e2e'))} the median "
                          f"E2E {fmt(s.get('e2e_p50'))}s; tail (<=10% still running) {fmt(s.get('tail_share'), '.0%')} of it")
    rllm_finding.at_least(s.get("makespan_over_median_e2e"), "makespan_over_median", "makespan/median E2E")


def test_output_lengths_have_a_long_tail(rllm_reasoning_model, baseline_run, rllm_finding):
    """Output length p99 is far above p50: a long tail of very long reasoning."""
    s = baseline_run.summary()
    rllm_finding.evidence(f"output tokens p50 {fmt(s.get('output_tokens_p50'))}, p99 {fmt(s.get('output_tokens_p99'))}")
    rllm_finding.at_least(s.get("output_tokens_p99_over_p50"), "length_tail_ratio", "output length p99/p50")


def test_straggler_metrics_match_baseline(baseline_run, rllm_baseline):
    """Straggler metrics match the stored baseline (inconclusive where one chance reply set the batch's shape)."""
    rllm_baseline.check(baseline_run.summary(), METRICS, inconclusive=dict.fromkeys(METRICS, one_reply_shaped(baseline_run)))
