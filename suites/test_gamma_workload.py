"""Real-world load: under Gamma-distributed arrivals, the memory, straggler and optimization findings keep their direction."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import KV_CV_TOLERANCE, cpu_spec_decoding_bug, evidence, fmt, require, speed_ratios, threshold
from pytest_rllm.stats import spearman

FINDINGS = ["kv-usage-fluctuates", "output-length-tail", "runtime-follows-difficulty", "spec-ngram-lowers-e2e"]


def needs(finding: str):
    pairs = [("baseline", "gamma")]
    marks = []
    if finding == "spec-ngram-lowers-e2e":
        pairs.append(("spec-ngram", "gamma"))
        marks.append(cpu_spec_decoding_bug())
    return [pytest.mark.rllm_needs(*pairs), *marks]


@pytest.mark.parametrize("finding", [pytest.param(f, marks=needs(f), id=f) for f in FINDINGS])
def test_finding_holds_under_gamma_arrivals(rllm_run, rllm_settings, request, finding):
    """The finding keeps its direction when requests arrive in Gamma-distributed bursts."""
    run = rllm_run("baseline", "gamma")
    s = run.summary()
    evidence(request, f"arrivals {run.workload_config.get('arrival')}, send lag p99 {fmt(s.get('send_lag_p99'))}s")
    if finding == "kv-usage-fluctuates":
        evidence(request, f"KV usage CV {fmt(s.get('kv_cache_usage_cv'))}, peak {fmt(s.get('kv_cache_usage_peak'), '.2%')}")
        require(s.get("kv_cache_usage_cv", 0) >= threshold(rllm_settings, "kv_cv"), "KV usage does not fluctuate under Gamma arrivals")
    elif finding == "output-length-tail":
        evidence(request, f"output length p99/p50 {fmt(s.get('output_tokens_p99_over_p50'))}")
        require(s.get("output_tokens_p99_over_p50", 0) >= threshold(rllm_settings, "length_tail_ratio"),
                "output lengths have no long tail under Gamma arrivals")
    elif finding == "runtime-follows-difficulty":
        done = [r for r in run.records if r.ok]
        rho, p = spearman([r.difficulty for r in done], [float(r.output_tokens) for r in done])
        evidence(request, f"Spearman(difficulty, output tokens) rho={fmt(rho)} p={fmt(p)}")
        require(rho > 0 and p <= threshold(rllm_settings, "spearman_p"), "output length does not follow difficulty under Gamma arrivals")
    else:
        ratio = speed_ratios(s, rllm_run("spec-ngram", "gamma").summary())["e2e_p50_vs_baseline"]
        evidence(request, f"spec-ngram E2E p50 x{fmt(ratio)} baseline under the same arrivals")
        require(ratio <= threshold(rllm_settings, "spec_e2e_ratio"), f"spec-ngram E2E is x{fmt(ratio)} baseline's under Gamma arrivals")


@pytest.mark.rllm_needs(("baseline", "gamma"))
def test_gamma_workload_matches_baseline(rllm_run, rllm_baseline):
    """Gamma-load memory and straggler metrics match the stored baseline."""
    s = rllm_run("baseline", "gamma").summary()
    rllm_baseline.check({
        "kv_cache_usage_cv": Measurement(s["kv_cache_usage_cv"], better="none"),
        "output_tokens_p99_over_p50": Measurement(s["output_tokens_p99_over_p50"], better="none"),
        "completed_fraction": Measurement(s["completed"] / s["requests"], better="higher"),
    }, tolerances={"kv_cache_usage_cv": KV_CV_TOLERANCE, "output_tokens_p99_over_p50": "50%", "completed_fraction": "2pt"})
