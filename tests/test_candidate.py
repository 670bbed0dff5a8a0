"""Paired A/B verdicts on plain run dicts: the rule, the intervals, the pairing."""

from __future__ import annotations

import re

import pytest
from ab_reports import run_dict

from pytest_rllm.candidate import ab_tolerance, ab_verdict, compare_reports, compare_runs, format_ab_table

LATENCY_ROWS = [f"{m}_{p}" for m in ("ttft", "ttfvt", "tpot", "itl", "e2e") for p in ("p50", "p99")]


@pytest.fixture(scope="module")
def reference() -> dict:
    return run_dict(n=100, wrong=10)


def rows_by_metric(reference: dict, candidate: dict, **kwargs) -> dict:
    rows, _ = compare_runs(reference, candidate, **kwargs)
    return {r.metric: r for r in rows}


@pytest.mark.parametrize(("low", "high", "better", "verdict"), [
    (1.2, 1.3, "higher", "improved"),
    (1.2, 1.3, "lower", "regressed"),
    (0.7, 0.8, "higher", "regressed"),
    (0.7, 0.8, "lower", "improved"),
    (0.95, 1.05, "higher", "same"),
    (0.85, 1.05, "lower", "inconclusive"),
    (1.05, 1.3, "higher", "inconclusive"),
    (1.2, 1.3, "none", "regressed"),
])
def test_the_verdict_rule_puts_the_interval_against_the_tolerance_band(low, high, better, verdict):
    assert ab_verdict(low, high, (0.9, 1.1), better) == verdict


def test_the_same_run_twice_is_the_same_on_every_metric(reference):
    rows = rows_by_metric(reference, reference)
    assert {r.verdict for r in rows.values()} == {"same"}
    assert set(LATENCY_ROWS) <= set(rows)
    assert rows["e2e_p50"].method == "bootstrap (paired)"
    assert rows["accuracy"].method == "100 paired items"


def test_a_candidate_1_5x_slower_regresses_on_every_latency_and_throughput(reference):
    rows = rows_by_metric(reference, run_dict(n=100, wrong=10, slow=1.5))
    for metric in LATENCY_ROWS:
        assert rows[metric].verdict == "regressed", metric
        assert rows[metric].low == pytest.approx(1.5, rel=0.01) and rows[metric].high == pytest.approx(1.5, rel=0.01)
    for metric in ("output_throughput", "request_throughput"):
        assert rows[metric].verdict == "regressed" and rows[metric].effect == pytest.approx(1 / 1.5)
        assert not rows[metric].has_interval and "point value alone" in rows[metric].note
    assert rows["accuracy"].verdict == "same" and rows["kv_capacity_tokens"].verdict == "same"


def test_a_faster_candidate_is_improved(reference):
    rows = rows_by_metric(reference, run_dict(n=100, wrong=10, slow=1 / 1.5))
    assert {rows[m].verdict for m in LATENCY_ROWS + ["output_throughput"]} == {"improved"}


def test_accuracy_is_paired_per_item_and_regresses_only_beyond_the_tolerance_with_confidence(reference):
    big_drop = rows_by_metric(reference, run_dict(n=100, wrong=40))["accuracy"]
    assert big_drop.verdict == "regressed" and big_drop.effect == pytest.approx(-0.30)
    assert big_drop.high < -0.05 and big_drop.method == "100 paired items"
    small_drop = rows_by_metric(reference, run_dict(n=100, wrong=16))["accuracy"]  # 6 points, within noise
    assert small_drop.verdict == "inconclusive" and small_drop.low < -0.05 < small_drop.high


def test_accuracy_without_records_uses_the_two_summaries_unpaired(reference):
    drop = run_dict(n=100, wrong=40)
    strip = lambda run: {**run, "records": []}  # noqa: E731
    row = rows_by_metric(strip(reference), strip(drop))["accuracy"]
    assert row.method == "unpaired items" and row.verdict == "regressed"
    # Unpaired intervals are wider than paired ones on the same grades.
    paired = rows_by_metric(reference, drop)["accuracy"]
    assert row.high - row.low > paired.high - paired.low


def test_other_items_are_resampled_independently(reference):
    other = run_dict(n=100, wrong=10, seed=1, slow=1.5)
    for r in other["records"]:
        r["item_id"] = "other-" + r["item_id"]
    row = rows_by_metric(reference, other)["e2e_p50"]
    assert row.method == "bootstrap" and row.low < row.effect < row.high


def test_per_trial_values_give_throughput_an_interval():
    rows = rows_by_metric(run_dict(trials=3), run_dict(trials=3, seed=0, slow=1.5))
    row = rows["output_throughput"]
    assert row.method == "3 paired trials" and row.has_interval and row.verdict == "regressed"
    assert rows_by_metric(run_dict(trials=3), run_dict(trials=3))["output_throughput"].verdict == "same"


def test_tolerances_are_read_by_name_or_pattern_before_the_family_default(reference):
    assert ab_tolerance("output_throughput") == "10%" and ab_tolerance("accuracy") == "5pt"
    assert ab_tolerance("ttft_p99", {"ttft_*": "60%"}) == "60%"
    rows = rows_by_metric(reference, run_dict(n=100, wrong=10, slow=1.5), tolerances={"ttft_*": "60%"})
    assert rows["ttft_p50"].verdict == "same" and rows["e2e_p50"].verdict == "regressed"


def test_a_smaller_kv_capacity_regresses(reference):
    smaller = run_dict(n=100, wrong=10)
    smaller["engine"]["cache_config"]["num_gpu_blocks"] = "256"
    row = rows_by_metric(reference, smaller)["kv_capacity_tokens"]
    assert (row.reference, row.candidate, row.verdict) == (16384, 8192, "regressed")


def test_metrics_missing_on_a_side_are_skipped_and_named(reference):
    partial = run_dict(n=100, wrong=10)
    del partial["summary"]["ttft_p99"]
    rows, skipped = compare_runs(reference, partial, ["ttft_p50", "ttft_p99", "goodput"])
    assert [r.metric for r in rows] == ["ttft_p50"] and skipped == ["ttft_p99", "goodput"]


def test_reports_pair_runs_by_name_and_the_table_has_a_block_per_run(reference):
    spec = run_dict("spec-ngram", n=100, wrong=10)
    comparison = compare_reports([reference, spec], [spec, run_dict("gamma-only", workload="gamma")], ["e2e_p50"])
    assert [r.run for r in comparison.rows] == ["spec-ngram/main"]
    assert comparison.only_reference == ["baseline/main"] and comparison.only_candidate == ["gamma-only/gamma"]
    table = format_ab_table(comparison.rows)
    assert table.splitlines()[0] == "spec-ngram/main"
    assert "metric | reference | candidate | ratio [95% interval] | verdict" in re.sub(" +", " ", table)


def test_pooled_percentiles_of_a_resample_match_numpy_on_the_concatenated_values():
    """ITL pools every token gap: the histogram shortcut must read the same percentile as concatenating."""
    import numpy as np

    from pytest_rllm.resampling import _stat

    rng = np.random.default_rng(3)
    arrays = [rng.gamma(2.0, 0.003, size=rng.integers(50, 400)) for _ in range(60)]
    idx = rng.integers(0, len(arrays), size=(10, len(arrays)))
    for q in (50.0, 99.0):
        exact = [np.percentile(np.concatenate([arrays[i] for i in row]), q) for row in idx]
        assert _stat(arrays, idx, q) == pytest.approx(exact, rel=5e-3)  # tail bins are wide: 0.2 % seen at p99
    exact_means = [np.concatenate([arrays[i] for i in row]).mean() for row in idx]
    assert _stat(arrays, idx, None) == pytest.approx(exact_means, rel=1e-9)
