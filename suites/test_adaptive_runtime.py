"""Pilot finding 3: running time and output length follow task difficulty."""

from __future__ import annotations

from collections import defaultdict

import pytest

from pytest_rllm.checks.finding import fmt
from pytest_rllm.stats import mean_interval, spearman

METRICS = {"spearman_difficulty_output_tokens": "0.2", "spearman_difficulty_e2e": "0.25",
           "hardest_over_easiest_output_tokens": "40%"}


def by_level(run, quantity: str) -> dict[float, list[float]]:
    """Finished requests' `quantity` (output_tokens, e2e) grouped by difficulty level, easiest first."""
    levels = defaultdict(list)
    for r in run.records:
        if r.ok:
            levels[r.difficulty].append(float(getattr(r, quantity)))
    return dict(sorted(levels.items()))


def difficulty_metrics(run) -> dict[str, float]:
    done = [r for r in run.records if r.ok]
    difficulty = [r.difficulty for r in done]
    lengths = by_level(run, "output_tokens")
    hardest, easiest = lengths[max(lengths)], lengths[min(lengths)]
    return {
        "spearman_difficulty_output_tokens": spearman(difficulty, [float(r.output_tokens) for r in done])[0],
        "spearman_difficulty_e2e": spearman(difficulty, [r.e2e for r in done])[0],
        "hardest_over_easiest_output_tokens": (sum(hardest) / len(hardest)) / max(sum(easiest) / len(easiest), 1e-9),
    }


@pytest.mark.parametrize("quantity", ["output_tokens", "e2e"])
def test_harder_tasks_run_longer(rllm_reasoning_model, baseline_run, rllm_finding, quantity):
    """Output length and E2E time rise with difficulty (Spearman), and the hardest level's mean exceeds the easiest's."""
    done = [r for r in baseline_run.records if r.ok]
    rho, p = spearman([r.difficulty for r in done], [float(getattr(r, quantity)) for r in done])
    levels = by_level(baseline_run, quantity)
    rllm_finding.evidence(f"Spearman rho={fmt(rho)} p={fmt(p)} over {len(done)} requests")
    intervals = {level: mean_interval(values, 0.95) for level, values in levels.items()}
    for level, (mean, low, high) in intervals.items():
        rllm_finding.evidence(f"level {level:g}: mean {mean:.4g} [{low:.4g}, {high:.4g}] (n={len(levels[level])})")
    rllm_finding.require(len(levels) >= 2, f"the data set has a single difficulty level ({list(levels)}): nothing to correlate")
    rllm_finding.require(rho > 0, f"{quantity} does not rise with difficulty: rho={fmt(rho)}, p={fmt(p)}")
    rllm_finding.at_most(p, "spearman_p", f"p-value of Spearman(difficulty, {quantity})")
    easy_high, hard_low = intervals[min(levels)][2], intervals[max(levels)][1]
    rllm_finding.require(hard_low > easy_high, f"the hardest level's {quantity} interval [{hard_low:.4g}, ...] "
                                               f"does not clear the easiest's [..., {easy_high:.4g}]")


def test_adaptive_runtime_matches_baseline(baseline_run, rllm_baseline):
    """Correlations and the hardest/easiest length ratio match the stored baseline."""
    rllm_baseline.check(difficulty_metrics(baseline_run), METRICS)
