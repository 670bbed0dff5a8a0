"""Pilot finding 4: domain preference — reasoning helps more in some domains than others."""

from __future__ import annotations

import pytest

from pytest_rllm.compare import Measurement
from pytest_rllm.findings import accuracy_check, evidence, fmt, threshold

NEEDS = pytest.mark.rllm_needs(("baseline", "main"), ("baseline", "no-thinking"))


def domain_table(run):
    return run.accuracy()["by_domain"]


@NEEDS
def test_reasoning_beats_the_plain_reference_overall(rllm_run, reference_run, rllm_settings, request):
    """With thinking, accuracy beats the plain reference by a margin (paired, 95%)."""
    thinking = rllm_run("baseline", "main")
    for name, cell in domain_table(thinking).items():
        ref = domain_table(reference_run).get(name, {})
        evidence(request, f"{name}: thinking {fmt(cell['accuracy'], '.1%')} [{fmt(cell['wilson_low'], '.1%')}, "
                          f"{fmt(cell['wilson_high'], '.1%')}] vs plain {fmt(ref.get('accuracy'), '.1%')}")
    # "B better than A by more than T" is "B within -T of A".
    accuracy_check(reference_run, thinking, -threshold(rllm_settings, "reasoning_gain_points"), flag_only=False, request=request)


@pytest.mark.rllm_needs(("baseline", "main"))
def test_accuracy_and_length_differ_by_domain(rllm_run, request):
    """Accuracy and output length differ between domains: at least two domains' Wilson intervals do not overlap."""
    run = rllm_run("baseline", "main")
    cells = domain_table(run)
    lengths = {}
    for r in run.records:
        if r.ok:
            lengths.setdefault(r.domain, []).append(r.output_tokens)
    for name, cell in cells.items():
        mean_len = sum(lengths.get(name, [0])) / max(len(lengths.get(name, [])), 1)
        evidence(request, f"{name}: accuracy {fmt(cell['accuracy'], '.1%')} [{fmt(cell['wilson_low'], '.1%')}, "
                          f"{fmt(cell['wilson_high'], '.1%')}] n={cell['n']}, mean output {mean_len:.0f} tokens")
    if len(cells) < 2:
        pytest.skip(f"the data set has one domain ({', '.join(cells)}): nothing to compare")
    best = max(cells.values(), key=lambda c: c["wilson_low"])
    worst = min(cells.values(), key=lambda c: c["wilson_high"])
    assert best["wilson_low"] > worst["wilson_high"], (
        "every pair of domains has overlapping accuracy intervals: no domain preference is visible"
    )


@pytest.mark.rllm_needs(("baseline", "main"))
def test_domain_accuracy_and_ranking_match_baseline(rllm_run, rllm_baseline):
    """Per-domain accuracy (by interval) and the domains' ranking match the stored baseline."""
    cells = domain_table(rllm_run("baseline", "main"))
    ranked = sorted(cells, key=lambda name: -cells[name]["accuracy"])
    metrics = {}
    tolerances = {}
    for name, cell in cells.items():
        metrics[f"accuracy.{name}"] = Measurement.proportion(cell["correct"], cell["n"])
        metrics[f"rank.{name}"] = Measurement(float(ranked.index(name) + 1), better="none")
        # Neighbours with close accuracy may swap; a jump of two places is a change in preference.
        tolerances[f"rank.{name}"] = "1"
    rllm_baseline.check(metrics, tolerances=tolerances)
