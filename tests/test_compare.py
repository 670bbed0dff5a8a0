"""Tolerance parsing and the comparison rule, on plain numbers."""

from __future__ import annotations

import math

import pytest

from pytest_rllm.compare import (
    UPDATE_FLAG,
    Measurement,
    MetricCheck,
    compare,
    compare_metric,
    failure_message,
    format_table,
    wilson_interval,
)
from pytest_rllm.tolerance import (
    DEFAULT_FAMILIES,
    Tolerance,
    default_better,
    default_tolerance,
    family_of,
    lookup,
    parse_tolerance,
    round_sig,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10%", Tolerance(relative=0.10)),
        ("2pt", Tolerance(absolute=0.02)),  # points of a 0..1 fraction
        ("0.5", Tolerance(absolute=0.5)),
        ("2x", Tolerance(factor=2.0)),
        ("10%+2pt", Tolerance(relative=0.10, absolute=0.02)),
        (" 2x + 0.05 ", Tolerance(absolute=0.05, factor=2.0)),
        ("1e-3", Tolerance(absolute=0.001)),
        ("0", Tolerance()),
    ],
)
def test_parse_tolerance_reads_every_documented_form(text: str, expected: Tolerance) -> None:
    got = parse_tolerance(text)
    assert got.relative == pytest.approx(expected.relative)
    assert got.absolute == pytest.approx(expected.absolute)
    assert got.factor == pytest.approx(expected.factor)


@pytest.mark.parametrize("text", ["", "ten percent", "10%%", "-5%", "0.5x", "10% 2pt", "2pt+", "nan", "inf"])
def test_parse_tolerance_rejects_bad_text_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="10%.*2pt"):
        parse_tolerance(text)


@pytest.mark.parametrize("text", ["10%", "2pt", "2x+0.05", "10%+2pt", "3x+25%+1", "0"])
def test_tolerance_text_round_trips(text: str) -> None:
    tol = parse_tolerance(text)
    assert parse_tolerance(tol.text) == tol
    assert Tolerance.from_dict(tol.to_dict()) == tol


def test_tolerance_terms_add_up_like_isclose() -> None:
    low, high = parse_tolerance("10%+2pt").window(0.5)
    assert low == pytest.approx(0.5 - 0.05 - 0.02, abs=1e-5)
    assert high == pytest.approx(0.5 + 0.05 + 0.02, abs=1e-5)


def test_factor_tolerance_is_multiplicative_both_ways() -> None:
    low, high = parse_tolerance("2x").window(4.0)
    assert low == pytest.approx(2.0, rel=1e-4) and high == pytest.approx(8.0, rel=1e-4)


def test_exact_tolerance_still_accepts_the_rounding_of_stored_values() -> None:
    value = 0.123456789
    check = compare_metric("x", baseline=round_sig(value), obtained=Measurement(value), tolerance=Tolerance(), better="none")
    assert check.status == "pass"
    # ...but not a change in the 5th significant digit.
    check = compare_metric("x", baseline=0.12345, obtained=Measurement(0.12350), tolerance=Tolerance(), better="none")
    assert check.status == "fail"


def _scalar(obtained: float, better: str, tol: str = "10%", baseline: float = 1.0) -> MetricCheck:
    return compare_metric("m", baseline=baseline, obtained=Measurement(obtained), tolerance=parse_tolerance(tol), better=better)


@pytest.mark.parametrize(
    ("obtained", "better", "status"),
    [
        (1.05, "lower", "pass"),
        (0.95, "higher", "pass"),
        (1.2, "lower", "fail"),  # slower
        (0.8, "lower", "improved"),  # faster: reported, never a failure
        (0.8, "higher", "fail"),  # less throughput
        (1.2, "higher", "improved"),
        (1.2, "none", "fail"),  # no better side: any big move fails
        (0.8, "none", "fail"),
    ],
)
def test_scalar_rule(obtained: float, better: str, status: str) -> None:
    check = _scalar(obtained, better)
    assert check.status == status
    assert check.failed is (status == "fail")


def test_interval_rule_passes_overlapping_intervals_that_a_raw_difference_would_fail() -> None:
    base = Measurement.proportion(62, 100)
    now = Measurement.proportion(52, 100)  # 10 points lower, but the intervals overlap
    scalar = compare_metric("accuracy", baseline=base.value, obtained=Measurement(now.value),
                            tolerance=parse_tolerance("2pt"), better="higher")
    by_interval = compare_metric("accuracy", baseline=base.value, obtained=now,
                                 tolerance=parse_tolerance("2pt"), better="higher", baseline_interval=base.interval)
    assert scalar.status == "fail"
    assert by_interval.status == "pass" and by_interval.by_interval


def test_interval_rule_fails_when_intervals_are_further_apart_than_the_tolerance() -> None:
    base = Measurement.proportion(620, 1000)
    worse = Measurement.proportion(500, 1000)
    better = Measurement.proportion(740, 1000)
    tol = parse_tolerance("2pt")
    assert compare_metric("accuracy", baseline=base.value, obtained=worse, tolerance=tol, better="higher",
                          baseline_interval=base.interval).status == "fail"
    assert compare_metric("accuracy", baseline=base.value, obtained=better, tolerance=tol, better="higher",
                          baseline_interval=base.interval).status == "improved"
    # A wider tolerance lets the same gap pass: the tolerance widens the baseline interval.
    assert compare_metric("accuracy", baseline=base.value, obtained=worse, tolerance=parse_tolerance("10pt"),
                          better="higher", baseline_interval=base.interval).status == "pass"


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_non_finite_values_are_their_own_failure(value: float | None) -> None:
    check = compare_metric("m", baseline=1.0, obtained=Measurement.of(value), tolerance=Tolerance(relative=10.0), better="none")
    assert check.status == "nan" and check.failed


def test_compare_reports_missing_and_extra_metrics() -> None:
    checks = compare(
        {"a": {"value": 1.0}, "gone": {"value": 2.0}},
        {"a": Measurement(1.0), "new": Measurement(3.0)},
        {k: Tolerance(relative=0.1) for k in ("a", "gone", "new")},
        {k: "none" for k in ("a", "gone", "new")},
    )
    assert [(c.metric, c.status) for c in checks] == [("a", "pass"), ("gone", "missing"), ("new", "extra")]
    assert [c.failed for c in checks] == [False, True, True]


def test_wilson_interval_matches_known_values() -> None:
    # 62/100 at 95 %: (0.5221, 0.7091), as statsmodels' proportion_confint(method="wilson") gives.
    low, high = wilson_interval(62, 100)
    assert low == pytest.approx(0.5221, abs=1e-4) and high == pytest.approx(0.7091, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("metric", "family", "better"),
    [
        ("ttft_p50", "seconds", "lower"),
        ("ttfvt_p99", "seconds", "lower"),
        ("e2e_mean", "seconds", "lower"),
        ("output_throughput", "throughput", "higher"),
        ("goodput", "throughput", "higher"),
        ("accuracy", "accuracy", "higher"),
        ("makespan_over_median_e2e", "timing-ratio", "none"),
        ("kv_cache_usage_mean", "fraction", "none"),
        ("failed", "error-count", "lower"),
        ("output_tokens_mean", "count", "none"),
        ("gpu_memory_used_bytes_peak", "memory", "lower"),
        ("something_new", "other", "none"),
    ],
)
def test_default_families(metric: str, family: str, better: str) -> None:
    assert family_of(metric).name == family
    assert default_better(metric) == better


def test_default_tolerances_for_absolute_times_and_rates_absorb_2x_noise() -> None:
    for metric in ("ttft_p50", "e2e_p90", "tpot_mean", "itl_p50", "duration"):
        assert _scalar_with_default(metric, 1.0, 1.95) == "pass", metric  # twice as slow: noise
        assert _scalar_with_default(metric, 1.0, 3.0) == "fail", metric
    for metric in ("output_throughput", "request_throughput"):
        assert _scalar_with_default(metric, 100.0, 51.0) == "pass", metric
        assert _scalar_with_default(metric, 100.0, 30.0) == "fail", metric
    for family in DEFAULT_FAMILIES:
        parse_tolerance(family.tolerance)  # every documented default parses


def _scalar_with_default(metric: str, baseline: float, obtained: float) -> str:
    return compare_metric(metric, baseline=baseline, obtained=Measurement(obtained),
                          tolerance=default_tolerance(metric), better=default_better(metric)).status


def test_lookup_prefers_exact_keys_over_patterns() -> None:
    table = {"ttft_*": "a", "ttft_p50": "b", "*": "c"}
    assert lookup(table, "ttft_p50") == "b"
    assert lookup(table, "ttft_p99") == "a"
    assert lookup(table, "e2e_p50") == "c"
    assert lookup({"x": 1}, "y") is None


def test_measurement_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="better"):
        Measurement(1.0, better="faster")
    with pytest.raises(ValueError, match="low <= high"):
        Measurement(0.5, interval=(0.6, 0.4))
    with pytest.raises(TypeError, match="numbers or Measurement"):
        Measurement.of("fast")
    assert Measurement(1.0, tolerance="10%").tolerance == Tolerance(relative=0.1)


def test_failure_table_has_the_columns_and_ends_with_the_update_flag() -> None:
    checks = compare(
        {"ttft_p50": {"value": 0.5}, "accuracy": {"value": 0.62, "interval": [0.52, 0.71]}},
        {"ttft_p50": Measurement(2.0), "accuracy": Measurement.proportion(30, 100), "extra": Measurement(1.0)},
        {"ttft_p50": parse_tolerance("2x"), "accuracy": parse_tolerance("2pt"), "extra": Tolerance()},
        {"ttft_p50": "lower", "accuracy": "higher", "extra": "none"},
    )
    text = failure_message(checks, "baselines/x.json")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert [c.strip() for c in header.split("|")][:5] == ["metric", "baseline", "obtained", "delta", "allowed"]
    assert "3 of 3 metrics differ from baselines/x.json" in lines[0]
    ttft = next(line for line in lines if line.startswith("ttft_p50"))
    assert "+1.5" in ttft and "fail" in ttft and "2x: 0.25" in ttft
    acc = next(line for line in lines if line.startswith("accuracy"))
    assert "[0.52, 0.71]" in acc and "overlap" in acc
    assert lines[-1].endswith(UPDATE_FLAG)
    # Passing rows can be left out.
    assert "ttft" not in format_table([c for c in checks if c.metric != "ttft_p50"], only_failed=True)


def test_measurements_from_a_run_summary_carry_the_accuracy_interval() -> None:
    summary = {"accuracy": 0.62, "accuracy_low": 0.52, "accuracy_high": 0.71, "requests": 100.0, "ttft_p50": 0.4,
               "goodput": None}
    got = Measurement.from_summary(summary, ["accuracy", "ttft_p50", "goodput"])
    assert got["accuracy"] == Measurement(0.62, n=100, interval=(0.52, 0.71))
    assert got["ttft_p50"] == Measurement(0.4)
    assert math.isnan(got["goodput"].value)  # a NaN summary value is kept, so the check fails on it
