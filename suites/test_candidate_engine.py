"""A candidate engine against the reference, side by side in one session: same items, same sampling, trials interleaved.

Skipped unless a candidate is given: --rllm-candidate-python=PATH (another installation,
e.g. another vLLM release: tools/setup_candidate.sh VERSION), --rllm-candidate-endpoint=URL
(a running server) or --rllm-candidate-server-arg=ARG (this installation, other flags).
Each preset of --rllm-candidate-optimizations (default: baseline) runs max(--rllm-trials, 3)
trials on each engine, A B A B ...; every check below reads one row of the A/B table.
Verdicts: improved or same hold, inconclusive is flagged (strict mode,
-W error::pytest_rllm.FindingFlag, fails it), regressed fails.
"""

from __future__ import annotations

import pytest

from pytest_rllm.checks.finding import cpu_spec_decoding_bug, fmt


def pytest_generate_tests(metafunc):
    if "candidate_preset" in metafunc.fixturenames:
        from pytest_rllm.state import STATE_KEY

        settings = metafunc.config.stash[STATE_KEY].settings
        metafunc.parametrize("candidate_preset", list(settings.candidate_optimizations))


@pytest.fixture
def pair(rllm_ab, candidate_preset):
    """The preset's interleaved comparison (run once per session, whichever test asks first)."""
    return rllm_ab(candidate_preset)


def test_candidate_keeps_accuracy(pair, rllm_finding):
    """The candidate keeps accuracy within T points of the reference's, paired per item (95%)."""
    rllm_finding.ab(pair.row("accuracy"), f"{pair.label}: candidate accuracy", "accuracy_points")


def test_candidate_does_not_lower_throughput(pair, rllm_finding):
    """The candidate's output throughput is not below the reference's: the interval of the per-trial ratio."""
    for metric in ("output_throughput", "request_throughput"):
        row = pair.row(metric)
        if row is not None:
            rllm_finding.evidence(f"{metric}: x{fmt(row.effect)} [{fmt(row.low)}, {fmt(row.high)}] ({row.method})")
    rllm_finding.ab(pair.row("output_throughput"), f"{pair.label}: candidate output throughput", "candidate_throughput_pct")


@pytest.mark.parametrize("metric", ["ttfvt_p50", "ttfvt_p99", "e2e_p50", "e2e_p99"])
def test_candidate_does_not_raise_latency(pair, rllm_finding, metric):
    """The candidate does not raise TTFVT or E2E at p50 or p99 (ratio of interleaved trials, 95%)."""
    rllm_finding.ab(pair.row(metric), f"{pair.label}: candidate {metric}", "candidate_latency_pct")


def test_candidate_does_not_shrink_kv_capacity(pair, rllm_finding):
    """The candidate's KV cache holds at least as many tokens as the reference's (as each engine reports it)."""
    rllm_finding.ab(pair.row("kv_capacity_tokens"), f"{pair.label}: candidate KV capacity", "candidate_kv_capacity_pct")


def test_candidate_adds_no_failed_or_truncated_requests(pair, rllm_finding):
    """The candidate adds no failed requests, and no more requests cut at max_tokens (paired per request, 95%)."""
    rllm_finding.ab(pair.row("failed"), f"{pair.label}: candidate failed requests", "candidate_failed")
    rllm_finding.ab(pair.row("truncated_fraction"), f"{pair.label}: candidate truncated requests",
                    "candidate_truncated_points")


@cpu_spec_decoding_bug()
def test_candidate_spec_ngram_keeps_baseline_accuracy(rllm_ab, rllm_settings, rllm_finding):
    """Under n-gram speculative decoding the candidate keeps its own baseline's accuracy within T points (paired)."""
    if "spec-ngram" not in rllm_settings.candidate_optimizations:
        pytest.skip("spec-ngram is not in --rllm-candidate-optimizations (add it to check n-gram speculative decoding)")
    base, ngram = rllm_ab("baseline"), rllm_ab("spec-ngram")
    for side in ("reference", "candidate"):
        rllm_finding.evidence(
            f"{side}: accuracy {fmt(getattr(base, side).summary().get('accuracy'), '.1%')} baseline, "
            f"{fmt(getattr(ngram, side).summary().get('accuracy'), '.1%')} spec-ngram")
    rllm_finding.accuracy_within(base.candidate, ngram.candidate, "accuracy_points")
