"""Real-world load: under Gamma-distributed arrivals, the memory, straggler and optimization findings keep their direction.

The memory, straggler and difficulty findings are about reasoning, as in their closed-batch
suites, so they take rllm_reasoning_model; the speculative finding and the baseline check run on any model.
"""

from __future__ import annotations

import pytest

from pytest_rllm.checks.finding import (KV_CV_TOLERANCE, cpu_spec_decoding_bug, fmt, skip_unless_kv_measured, speed_ratios,
                                        too_few_kv_samples)
from pytest_rllm.fixtures import run_fixture
from pytest_rllm.stats import spearman

METRICS = {"kv_cache_usage_cv": KV_CV_TOLERANCE, "output_tokens_p99_over_p50": "50%", "completed_fraction": "2pt"}
spec_ngram_gamma_run = run_fixture("spec-ngram", "gamma")


@pytest.fixture
def gamma_summary(gamma_run, rllm_finding):
    s = gamma_run.summary()
    rllm_finding.evidence(f"arrivals {gamma_run.workload_config.get('arrival')}, send lag p99 {fmt(s.get('send_lag_p99'))}s")
    return s


def test_kv_usage_fluctuates_under_gamma_arrivals(rllm_reasoning_model, gamma_run, gamma_summary, rllm_finding):
    """KV-cache usage still swings widely when requests arrive in Gamma-distributed bursts."""
    skip_unless_kv_measured(gamma_run)
    s = gamma_summary
    rllm_finding.evidence(f"KV usage CV {fmt(s.get('kv_cache_usage_cv'))}, peak {fmt(s.get('kv_cache_usage_peak'), '.2%')}")
    rllm_finding.at_least(s.get("kv_cache_usage_cv"), "kv_cv", "KV usage CV under Gamma arrivals")


def test_output_lengths_keep_a_long_tail_under_gamma_arrivals(rllm_reasoning_model, gamma_summary, rllm_finding):
    """Output lengths keep a long tail (p99 far above p50) under Gamma arrivals."""
    rllm_finding.at_least(gamma_summary.get("output_tokens_p99_over_p50"), "length_tail_ratio",
                          "output length p99/p50 under Gamma arrivals")


def test_runtime_follows_difficulty_under_gamma_arrivals(rllm_reasoning_model, gamma_run, gamma_summary, rllm_finding):
    """Output length still rises with difficulty (Spearman) under Gamma arrivals."""
    done = [r for r in gamma_run.records if r.ok]
    rho, p = spearman([r.difficulty for r in done], [float(r.output_tokens) for r in done])
    rllm_finding.evidence(f"Spearman(difficulty, output tokens) rho={fmt(rho)} p={fmt(p)}")
    rllm_finding.require(rho > 0, f"output length does not rise with difficulty under Gamma arrivals: rho={fmt(rho)}")
    rllm_finding.at_most(p, "spearman_p", "p-value of Spearman(difficulty, output tokens) under Gamma arrivals")


@cpu_spec_decoding_bug()
def test_spec_ngram_lowers_e2e_under_gamma_arrivals(gamma_summary, spec_ngram_gamma_run, rllm_finding):
    """n-gram speculative decoding keeps median E2E at most baseline's under the same Gamma arrivals."""
    e2e = speed_ratios(gamma_summary, spec_ngram_gamma_run.summary())["e2e_p50_vs_baseline"]
    rllm_finding.evidence(f"spec-ngram E2E p50 x{fmt(e2e)} baseline under the same arrivals")
    rllm_finding.at_most(e2e, "spec_e2e_ratio", "spec-ngram's E2E p50 over baseline's under Gamma arrivals")


def test_gamma_workload_matches_baseline(gamma_run, rllm_baseline):
    """Gamma-load memory and straggler metrics match the stored baseline."""
    s = gamma_run.summary()
    rllm_baseline.check({**s, "completed_fraction": s["completed"] / s["requests"]}, METRICS,
                        inconclusive={"kv_cache_usage_cv": too_few_kv_samples(gamma_run)})
