"""Pilot finding 3: running time and output length follow task difficulty."""

from __future__ import annotations

from collections import defaultdict

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import evidence, fmt, require, threshold
from pytest_rllm.stats import mean_interval, spearman

pytestmark = pytest.mark.rllm_needs(("baseline", "main"))


def by_level(records, value):
    levels = defaultdict(list)
    for r in records:
        if r.ok:
            levels[r.difficulty].append(value(r))
    return dict(sorted(levels.items()))


def level_table(levels) -> list[str]:
    rows = []
    for level, values in levels.items():
        mean, low, high = mean_interval(values, 0.95)
        rows.append(f"level {level:g}: mean {mean:.4g} [{low:.4g}, {high:.4g}] (n={len(values)})")
    return rows


@pytest.mark.parametrize("quantity", ["output_tokens", "e2e"])
def test_harder_tasks_run_longer(rllm_run, rllm_settings, request, quantity):
    """Output length and E2E time rise with difficulty (Spearman), and the hardest level's mean exceeds the easiest's."""
    records = [r for r in rllm_run("baseline", "main").records if r.ok]
    values = [float(getattr(r, quantity)) for r in records]
    rho, p = spearman([r.difficulty for r in records], values)
    levels = by_level(records, lambda r: float(getattr(r, quantity)))
    evidence(request, f"Spearman rho={fmt(rho)} p={fmt(p)} over {len(records)} requests")
    for row in level_table(levels):
        evidence(request, row)
    require(len(levels) >= 2, f"the data set has a single difficulty level ({list(levels)}): nothing to correlate")
    require(rho > 0 and p <= threshold(rllm_settings, "spearman_p"),
            f"{quantity} does not rise with difficulty: rho={fmt(rho)}, p={fmt(p)} (spearman_p={threshold(rllm_settings, 'spearman_p'):g})")
    easiest, hardest = levels[min(levels)], levels[max(levels)]
    _, _, easy_high = mean_interval(easiest, 0.95)
    _, hard_low, _ = mean_interval(hardest, 0.95)
    require(hard_low > easy_high,
            f"the hardest level's {quantity} interval [{hard_low:.4g}, ...] does not clear the easiest's [..., {easy_high:.4g}]")


def test_adaptive_runtime_matches_baseline(rllm_run, rllm_baseline):
    """Correlations and the hardest/easiest length ratio match the stored baseline."""
    records = [r for r in rllm_run("baseline", "main").records if r.ok]
    rho_len, _ = spearman([r.difficulty for r in records], [float(r.output_tokens) for r in records])
    rho_e2e, _ = spearman([r.difficulty for r in records], [r.e2e for r in records])
    levels = by_level(records, lambda r: float(r.output_tokens))
    hardest, easiest = levels[max(levels)], levels[min(levels)]
    length_ratio = (sum(hardest) / len(hardest)) / max(sum(easiest) / len(easiest), 1e-9)
    rllm_baseline.check({
        "spearman_difficulty_output_tokens": Measurement(rho_len, better="higher"),
        "spearman_difficulty_e2e": Measurement(rho_e2e, better="higher"),
        "hardest_over_easiest_output_tokens": Measurement(length_ratio, better="none"),
    }, tolerances={"spearman_difficulty_output_tokens": "0.2", "spearman_difficulty_e2e": "0.25",
                   "hardest_over_easiest_output_tokens": "40%"})
