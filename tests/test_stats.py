"""Statistics against published values, scipy / numpy, and constructed paired cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_rllm import stats
from pytest_rllm.stats import (
    accuracy_within,
    mcnemar,
    mean_interval,
    newcombe_interval,
    newcombe_paired_interval,
    paired_bootstrap_diff,
    percentile,
    spearman,
    wilson_interval,
)


# -- Wilson ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # Published 95% Wilson intervals (e.g. statsmodels proportion_confint(method="wilson")).
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 2, 0.0945, 0.9055),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998) single-proportion example
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_matches_scipy_and_is_the_one_compare_uses() -> None:
    from scipy.stats import binomtest

    from pytest_rllm import compare

    for k, n, confidence in ((0, 7, 0.95), (3, 7, 0.9), (62, 100, 0.95), (81, 263, 0.99), (40, 40, 0.95)):
        ci = binomtest(k, n).proportion_ci(confidence, method="wilson")
        assert wilson_interval(k, n, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert compare.wilson_interval is wilson_interval


def test_wilson_edges_and_confidence() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo95, hi95 = wilson_interval(8, 10, 0.95)
    lo99, hi99 = wilson_interval(8, 10, 0.99)
    assert lo99 < lo95 < 0.8 < hi95 < hi99
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=95)


# -- McNemar ----------------------------------------------------------------------
def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_mcnemar_textbook_table() -> None:
    # Airway reactivity before/after transplant (Fagerland, Lydersen & Laake 2014):
    # 1 both, 1 and 7 discordant, 12 neither; exact conditional p = 0.0703.
    a, b = _pairs(1, 1, 7, 12)
    r = mcnemar(a, b)
    assert (r.n, r.a_only, r.b_only, r.discordant) == (21, 1, 7, 8)
    assert r.p_value == pytest.approx(18 / 256)  # 2 * (C(8,0) + C(8,1)) / 2^8
    assert r.p_value == pytest.approx(0.0703, abs=1e-4)


def test_mcnemar_matches_scipy_binomtest_on_a_large_table() -> None:
    from scipy.stats import binomtest

    # Agresti's presidential approval table: 794 / 150 / 86 / 570.
    a, b = _pairs(794, 150, 86, 570)
    r = mcnemar(a, b)
    assert r.p_value == pytest.approx(binomtest(86, 236, 0.5).pvalue, rel=1e-9)
    assert r.p_value < 1e-4


def test_mcnemar_no_discordant_pairs() -> None:
    assert mcnemar([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


# -- bootstrap ---------------------------------------------------------------------
def test_paired_bootstrap_is_seeded_and_sensible() -> None:
    a, b = _pairs(60, 5, 15, 20)
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=4000, seed=7)
    assert diff == pytest.approx(0.10)
    assert low < 0.10 < high
    # Standard error of the paired difference: sqrt((b+c)/n - diff^2)/sqrt(n) = 0.04.
    assert (high - low) == pytest.approx(2 * 1.96 * 0.04, rel=0.15)
    assert paired_bootstrap_diff(a, b, n_resamples=4000, seed=7) == (diff, low, high)
    # Identical answers: no spread at all.
    assert paired_bootstrap_diff(a, a, n_resamples=100) == (0.0, 0.0, 0.0)


# -- Newcombe paired interval ---------------------------------------------------------
def test_newcombe_paired_interval_is_antisymmetric_and_contains_estimate() -> None:
    a, b = _pairs(1, 1, 7, 12)
    diff, low, high = newcombe_paired_interval(a, b)
    assert diff == pytest.approx(6 / 21)
    assert low < diff < high
    d2, l2, h2 = newcombe_paired_interval(b, a)
    assert (d2, l2, h2) == pytest.approx((-diff, -high, -low))


def test_newcombe_paired_interval_covers_at_the_nominal_rate() -> None:
    # Correlated pairs, as two configurations of one model give: coverage of the
    # true difference must be close to 95% (a wrong correlation term drifts to
    # ~99% or below 90% at this correlation).
    rng = np.random.default_rng(1)
    n, reps, true_diff = 60, 1500, -0.05
    p_both, p_a_only, p_b_only = 0.55, 0.15, 0.10  # P(A)=0.70, P(B)=0.65
    cover = 0
    for _ in range(reps):
        cells = rng.choice(4, size=n, p=[p_both, p_a_only, p_b_only, 1 - p_both - p_a_only - p_b_only])
        a = (cells == 0) | (cells == 1)
        b = (cells == 0) | (cells == 2)
        _, low, high = newcombe_paired_interval(a, b)
        cover += low <= true_diff <= high
    assert 0.93 <= cover / reps <= 0.975


# -- Newcombe interval, independent samples ----------------------------------------
def test_newcombe_interval_matches_the_published_example_and_is_antisymmetric() -> None:
    # Newcombe (1998), Table II example (56/70 vs 48/80): difference 0.2, method-10
    # interval 0.0524 to 0.3339 for p1 - p2; our B - A puts 56/70 as B.
    diff, low, high = newcombe_interval(48, 80, 56, 70)
    assert diff == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-4)
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((-diff, -high, -low))
    # At the edges it stays inside [-1, 1] and still has width.
    d, lo, hi = newcombe_interval(0, 25, 25, 25)
    assert d == 1.0 and 0.0 < lo < 1.0 and hi == 1.0
    with pytest.raises(ValueError, match="items on both sides"):
        newcombe_interval(0, 0, 1, 2)


def test_newcombe_interval_covers_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(3)
    n, reps, pa, pb = 25, 2000, 0.2, 0.35
    cover = 0
    for _ in range(reps):
        _, low, high = newcombe_interval(int(rng.binomial(n, pa)), n, int(rng.binomial(n, pb)), n)
        cover += low <= pb - pa <= high
    assert 0.93 <= cover / reps <= 0.98


# -- the verdict -------------------------------------------------------------------
def test_accuracy_within_passes_when_b_is_clearly_close() -> None:
    # 400 items, 2 discordant each way: B equals A within a tight interval.
    a, b = _pairs(300, 2, 2, 96)
    v = accuracy_within(a, b, points=3)
    assert v.verdict == "pass" and v.passed
    assert v.diff == pytest.approx(0.0)
    assert -0.03 < v.low < 0 < v.high
    assert v.n == 400 and (v.a_only, v.b_only) == (2, 2)
    assert v.explanation.startswith("pass:") and "400 paired items" in v.explanation


def test_accuracy_within_fails_when_b_is_clearly_worse() -> None:
    # B loses 40 of A's 300 right answers and gains none: -10 points.
    a, b = _pairs(260, 40, 0, 100)
    v = accuracy_within(a, b, points=3)
    assert v.verdict == "fail" and not v.passed
    assert v.diff == pytest.approx(-0.10)
    assert v.high < -0.03
    assert "worse than A by more than 3 pt" in v.explanation


def test_accuracy_within_is_inconclusive_when_the_interval_straddles() -> None:
    # Observed -2 points against a 3-point tolerance: 100 items cannot tell which side it is.
    a, b = _pairs(60, 4, 2, 34)
    v = accuracy_within(a, b, points=3)
    assert v.verdict == "inconclusive"
    assert v.low < -0.03 < v.high
    assert "straddles" in v.explanation


def test_accuracy_within_never_passes_on_too_few_items() -> None:
    # Ten identical answers with a huge tolerance: the interval alone would pass.
    a, b = _pairs(10, 0, 0, 0)
    assert accuracy_within(a, b, points=50, min_pairs=1).verdict == "pass"
    v = accuracy_within(a, b, points=50)
    assert v.verdict == "inconclusive"
    assert "fewer than min_pairs=20" in v.explanation
    empty = accuracy_within([], [], points=5)
    assert empty.verdict == "inconclusive" and empty.n == 0


def test_accuracy_within_derived_questions() -> None:
    a, b = _pairs(200, 5, 40, 155)  # B better by 8.75 points
    # points=0: "is B significantly better than A?"
    assert accuracy_within(a, b, points=0).verdict == "pass"
    # The mirror: is A within 3 points of B? No: A is worse by more.
    assert accuracy_within(b, a, points=3).verdict == "fail"
    # Negative points: "is B better by more than 2 points?" yes; "by more than 20?" no.
    assert accuracy_within(a, b, points=-2).verdict == "pass"
    assert accuracy_within(a, b, points=-20).verdict == "fail"


def test_accuracy_within_bootstrap_method_agrees_on_clear_cases() -> None:
    a, b = _pairs(300, 2, 2, 96)
    assert accuracy_within(a, b, points=3, method="bootstrap", n_resamples=2000).verdict == "pass"
    a, b = _pairs(260, 40, 0, 100)
    assert accuracy_within(a, b, points=3, method="bootstrap", n_resamples=2000).verdict == "fail"
    with pytest.raises(ValueError):
        accuracy_within(a, b, points=3, method="wald")


# -- Spearman, t intervals, percentiles ------------------------------------------------
@pytest.mark.parametrize(
    "x, y",
    [
        ([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]),
        ([1, 2, 2, 3, 3, 3, 4], [10, 20, 20, 15, 40, 40, 50]),  # ties on both sides
        ([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8], [5, 9, 1, 7, 3, 8, 2]),  # negative
    ],
)
def test_spearman_matches_scipy(x: list[float], y: list[float]) -> None:
    from scipy.stats import spearmanr

    rho, p = spearman(x, y)
    ref = spearmanr(x, y)
    assert rho == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_spearman_perfect_and_constant() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == (1.0, 0.0)
    rho, p = spearman([1, 1, 1, 1], [1, 2, 3, 4])
    assert math.isnan(rho) and math.isnan(p)


def test_mean_interval_known_value() -> None:
    # mean 5, sd 2.138..., n 8: t(0.975, 7) = 2.364624
    values = [2, 4, 4, 4, 5, 5, 7, 9]
    mean, low, high = mean_interval(values)
    sem = np.std(values, ddof=1) / math.sqrt(8)
    assert mean == 5.0
    assert (low, high) == pytest.approx((5 - 2.364624 * sem, 5 + 2.364624 * sem), abs=1e-5)
    assert mean_interval([3.0]) == (3.0, -math.inf, math.inf)
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("q", [0, 1, 25, 33.3, 50, 66.7, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 101):
        values = list(rng.lognormal(size=n))
        assert percentile(values, q) == np.percentile(values, q)


def test_percentile_errors() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_module_exports() -> None:
    assert set(stats.VERDICTS) == {"pass", "fail", "inconclusive"}
