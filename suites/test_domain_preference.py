"""Pilot finding 4: domain preference — reasoning helps more in some domains than others."""

from __future__ import annotations

from itertools import combinations

import pytest

from pytest_rllm.checks.finding import fmt
from pytest_rllm.compare import Measurement
from pytest_rllm.stats import newcombe_interval, proportions_differ

METRICS = {"accuracy.*": None, "output_tokens_mean.*": "25%", "accuracy_gap.*": None}


def per_domain(run):
    """Accuracy cells by domain, and each domain's mean output length in tokens (NaN when none finished)."""
    cells = run.accuracy()["by_domain"]
    lengths = {}
    for r in run.records:
        if r.ok:
            lengths.setdefault(r.domain, []).append(float(r.output_tokens))
    return cells, {name: sum(v) / len(v) if (v := lengths.get(name)) else float("nan") for name in cells}


def cell_text(cell) -> str:
    return f"{fmt(cell.get('accuracy'), '.1%')} [{fmt(cell.get('wilson_low'), '.1%')}, {fmt(cell.get('wilson_high'), '.1%')}]"


def domain_metrics(run) -> dict[str, Measurement]:
    cells, mean_lengths = per_domain(run)
    metrics = {}
    for name, cell in cells.items():
        metrics[f"accuracy.{name}"] = Measurement.proportion(cell["correct"], cell["n"])
        metrics[f"output_tokens_mean.{name}"] = Measurement(mean_lengths[name])
    # The ranking as pairwise gaps with intervals, not as rank numbers: with ~25
    # items a domain, neighbours swap places by chance, while a gap whose interval
    # no longer overlaps the baseline's is a preference that really changed.
    for a, b in combinations(sorted(cells), 2):
        gap, low, high = newcombe_interval(cells[b]["correct"], cells[b]["n"], cells[a]["correct"], cells[a]["n"])
        metrics[f"accuracy_gap.{a}-{b}"] = Measurement(gap, n=cells[a]["n"] + cells[b]["n"], interval=(low, high))
    return metrics


def test_reasoning_beats_the_plain_reference_overall(rllm_reasoning_model, baseline_run, reference_run, rllm_finding):
    """With thinking, accuracy beats the plain reference by a margin (paired, 95%)."""
    plain = reference_run.accuracy()["by_domain"]
    for name, cell in baseline_run.accuracy()["by_domain"].items():
        rllm_finding.evidence(f"{name}: thinking {cell_text(cell)} vs plain {fmt(plain.get(name, {}).get('accuracy'), '.1%')}")
    rllm_finding.accuracy_gain(reference_run, baseline_run, "reasoning_gain_points")


def test_accuracy_differs_by_domain(baseline_run, rllm_finding):
    """Accuracy differs between domains (chi-square test of homogeneity, p < 0.05); inconclusive otherwise."""
    cells, mean_lengths = per_domain(baseline_run)
    for name, cell in cells.items():
        rllm_finding.evidence(f"{name}: accuracy {cell_text(cell)} n={cell['n']}, mean output {mean_lengths[name]:.0f} tokens")
    if len(cells) < 2:
        pytest.skip(f"the data set has one domain ({', '.join(cells)}): nothing to compare")
    p = proportions_differ([(c["correct"], c["n"]) for c in cells.values()])
    if p != p:
        # Every answer right (or every one wrong): the sample cannot tell, which is not a failure.
        pytest.skip("inconclusive: every answer was right (or every one wrong), so accuracy cannot differ by "
                    "domain in this sample; raise --rllm-num-prompts or --rllm-max-tokens")
    rllm_finding.evidence(f"chi-square p={p:.2g}")
    if p >= 0.05:
        # Not a pass: the sample cannot tell. More items (--rllm-num-prompts) or repeats decide it.
        pytest.skip(f"inconclusive: accuracy by domain does not differ significantly (chi-square p={p:.2g}); "
                    f"raise --rllm-num-prompts or --rllm-repeats")


def test_domain_accuracy_and_ranking_match_baseline(baseline_run, rllm_baseline, rllm_finding):
    """Per-domain accuracy and every pairwise accuracy gap between domains match the stored baseline (95% intervals)."""
    cells, _ = per_domain(baseline_run)
    ranked = sorted(cells, key=lambda name: -cells[name]["accuracy"])
    rllm_finding.evidence("ranking: " + " > ".join(f"{name} {fmt(cells[name]['accuracy'], '.0%')}" for name in ranked))
    rllm_baseline.check(domain_metrics(baseline_run), METRICS)
