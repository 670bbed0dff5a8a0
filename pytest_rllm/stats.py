"""Small, pure statistics for the suites: intervals, paired tests, rank correlation.

Everything here takes plain Python data (lists of bools or floats) and returns
plain numbers, so it is tested without any engine. numpy is used; scipy is
imported only inside the functions that call it, because pytest imports the
plugin (and so this module) on every run.

Conventions
- Proportions are fractions in [0, 1]; a tolerance given in "points" is
  percentage points (2.0 means 0.02).
- A paired difference is always ``B - A``: positive means B is better.
- Confidence is two-sided: 0.95 gives a 95% interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

VERDICTS = ("pass", "fail", "inconclusive")


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


# -- one proportion ----------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and
    keeps its coverage at the small n and the 0% / 100% accuracies that short
    CPU runs produce. With n == 0 nothing is known: (0.0, 1.0).
    The closed form, not scipy's binomtest(...).proportion_ci(method="wilson")
    (equal to 1e-15, tests/test_stats.py): it takes the fractional successes of
    a reported accuracy times n, and needs no scipy import.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp away rounding noise so 0/n gives exactly 0.0 and n/n exactly 1.0.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


# -- paired proportions --------------------------------------------------------
def _paired(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"paired data must have equal lengths, got {len(a)} and {len(b)}")
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on the discordant pairs of two paired bool lists."""

    n: int  # pairs
    a_only: int  # A correct, B wrong
    b_only: int  # B correct, A wrong
    p_value: float  # two-sided, exact binomial on the a_only + b_only discordant pairs

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's test for two configurations graded on the same items.

    Exact rather than chi-square because the discordant counts in a CPU-sized
    run are small, where the chi-square approximation is poor. The p-value is
    scipy's two-sided binomial test of min(a_only, b_only) in a_only + b_only at 1/2,
    ``min(1, 2 * P(X <= min(a_only, b_only)))``.
    """
    from scipy import stats as sps  # only here: scipy is slow to import

    a, b = _paired(a_correct, b_correct)
    a_only = int(np.sum((a > 0) & (b <= 0)))
    b_only = int(np.sum((b > 0) & (a <= 0)))
    m = a_only + b_only
    if m == 0:
        return McNemarResult(len(a), a_only, b_only, 1.0)
    p = float(sps.binomtest(min(a_only, b_only), m, 0.5).pvalue)
    return McNemarResult(len(a), a_only, b_only, p)


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of ``b - a`` with a percentile bootstrap interval over paired items.

    Items are resampled as pairs, which keeps the per-item correlation between
    A and B (the reason a paired comparison is tighter than two independent
    intervals). Seeded, so a test sees the same interval every run.
    Returns (diff, low, high).
    """
    x, y = _paired(a, b)
    n = len(x)
    if n == 0:
        raise ValueError("paired_bootstrap_diff needs at least one pair")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    _z(confidence)  # validates
    d = y - x
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Chunks bound memory at ~2M indices whatever n and n_resamples are.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(d.mean()), float(low), float(high))


def newcombe_paired_interval(
    a_correct: Sequence[bool], b_correct: Sequence[bool], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Interval for the paired difference of proportions ``p_B - p_A``.

    Newcombe's hybrid score interval for paired data (Newcombe 1998, method
    10): Wilson intervals of the two marginals, combined with the estimated
    correlation between A and B. Unlike a bootstrap it is deterministic and
    does not collapse to zero width when few items disagree, so a small sample
    gives an honestly wide interval. Returns (diff, low, high).
    """
    x, y = _paired(a_correct, b_correct)
    n = len(x)
    if n == 0:
        raise ValueError("newcombe_paired_interval needs at least one pair")
    xa, yb = x > 0, y > 0
    both = int(np.sum(xa & yb))
    a_only = int(np.sum(xa & ~yb))
    b_only = int(np.sum(~xa & yb))
    neither = n - both - a_only - b_only
    pa, pb = (both + a_only) / n, (both + b_only) / n
    la, ua = wilson_interval(both + a_only, n, confidence)
    lb, ub = wilson_interval(both + b_only, n, confidence)
    margins = (both + a_only) * (neither + b_only) * (both + b_only) * (neither + a_only)
    phi = 0.0 if margins == 0 else (both * neither - a_only * b_only) / math.sqrt(margins)
    diff = pb - pa
    # Lower end: B could be as low as lb while A could be as high as ua.
    dl = math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    du = math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return (diff, max(-1.0, diff - dl), min(1.0, diff + du))


# -- two independent proportions ----------------------------------------------
def newcombe_interval(
    a_successes: int, a_n: int, b_successes: int, b_n: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Interval for ``p_B - p_A`` when A and B are different items (e.g. two domains).

    Newcombe's hybrid score interval for independent proportions (Newcombe
    1998, method 10): the two Wilson intervals combined. Like the paired form it
    stays honest at small n and at 0% / 100%. Returns (diff, low, high).
    """
    if a_n <= 0 or b_n <= 0:
        raise ValueError(f"newcombe_interval needs items on both sides, got a_n={a_n}, b_n={b_n}")
    pa, pb = a_successes / a_n, b_successes / b_n
    la, ua = wilson_interval(a_successes, a_n, confidence)
    lb, ub = wilson_interval(b_successes, b_n, confidence)
    diff = pb - pa
    return (
        diff,
        max(-1.0, diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)),
        min(1.0, diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)),
    )


@dataclass(frozen=True)
class Verdict:
    """The answer to "is B's accuracy within T points of A's?", with its numbers."""

    verdict: str  # "pass" | "fail" | "inconclusive"
    diff: float  # accuracy of B minus accuracy of A, as a fraction
    low: float  # interval for diff
    high: float
    n: int  # paired items
    points: float  # the tolerance T, in percentage points
    confidence: float
    method: str  # "newcombe" | "bootstrap"
    a_accuracy: float
    b_accuracy: float
    a_only: int  # items A got right and B wrong
    b_only: int
    explanation: str

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_within(
    a_correct: Sequence[bool],
    b_correct: Sequence[bool],
    points: float,
    confidence: float = 0.95,
    min_pairs: int = 20,
    method: str = "newcombe",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Verdict:
    """Is B's accuracy within ``points`` percentage points of A's (B not worse by more)?

    ``a_correct[i]`` and ``b_correct[i]`` grade the same item (and repeat) under
    configurations A (the reference) and B (the one under test). With
    ``diff = acc(B) - acc(A)``, ``t = points / 100`` and its two-sided interval
    ``[low, high]`` at ``confidence``:

    - ``pass``: ``low > -t``: B is not worse than A by more than T points;
    - ``fail``: ``high < -t``: B is worse than A by more than T points;
    - ``inconclusive``: the interval straddles ``-t``, or there are fewer than
      ``min_pairs`` pairs. A small sample is never a pass.

    Derived questions, with no extra API: ``accuracy_within(a, b, 0)`` passes
    when B is significantly better than A; ``accuracy_within(b, a, T)`` asks the
    mirror question about A; a negative ``points`` asks "is B better by more
    than |T| points?".

    ``method="newcombe"`` (default) uses :func:`newcombe_paired_interval`;
    ``"bootstrap"`` uses :func:`paired_bootstrap_diff` with ``seed``.
    """
    if not math.isfinite(points):
        raise ValueError(f"points must be a finite number of percentage points, got {points!r}")
    x, y = _paired(a_correct, b_correct)
    n = len(x)
    t = points / 100.0
    xa, yb = x > 0, y > 0
    a_only, b_only = int(np.sum(xa & ~yb)), int(np.sum(~xa & yb))
    if n == 0:
        return Verdict(
            "inconclusive", math.nan, -1.0, 1.0, 0, points, confidence, method, math.nan, math.nan, 0, 0,
            f"inconclusive: no paired items (need at least {min_pairs})",
        )
    if method == "newcombe":
        diff, low, high = newcombe_paired_interval(xa, yb, confidence)
    elif method == "bootstrap":
        diff, low, high = paired_bootstrap_diff(xa, yb, n_resamples=n_resamples, seed=seed, confidence=confidence)
    else:
        raise ValueError(f"method must be 'newcombe' or 'bootstrap', got {method!r}")
    acc_a, acc_b = float(xa.mean()), float(yb.mean())
    shown = (
        f"B-A = {100 * diff:+.1f} pt, {100 * confidence:g}% CI [{100 * low:+.1f}, {100 * high:+.1f}] pt "
        f"on {n} paired items (A {100 * acc_a:.1f}%, B {100 * acc_b:.1f}%; "
        f"{a_only} only A right, {b_only} only B right)"
    )
    if n < min_pairs:
        verdict = "inconclusive"
        why = f"only {n} paired items, fewer than min_pairs={min_pairs}"
    elif low > -t:
        verdict = "pass"
        why = f"B is not worse than A by more than {points:g} pt (CI low {100 * low:+.1f} > {-points:+g})"
    elif high < -t:
        verdict = "fail"
        why = f"B is worse than A by more than {points:g} pt (CI high {100 * high:+.1f} < {-points:+g})"
    else:
        verdict = "inconclusive"
        why = f"the interval straddles -{points:g} pt; more items are needed to tell"
    return Verdict(
        verdict, diff, low, high, n, points, confidence, method, acc_a, acc_b, a_only, b_only,
        f"{verdict}: {why}; {shown}",
    )


# -- correlation and means -----------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (scipy.stats.spearmanr).

    Ties get average ranks; the p-value uses the t approximation with n - 2
    degrees of freedom. A constant input has no defined correlation: (nan, nan).
    """
    import warnings

    from scipy import stats as sps  # only here: scipy is slow to import

    xs, ys = _paired(x, y)
    n = len(xs)
    if n < 3:
        raise ValueError(f"spearman needs at least 3 pairs, got {n}")
    with warnings.catch_warnings():
        # A constant input is answered (nan, nan) with a ConstantInputWarning: nan is the answer here.
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        result = sps.spearmanr(xs, ys)
    return (float(result.statistic), float(result.pvalue))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean with a Student-t interval: (mean, low, high).

    One value says nothing about spread: the interval is (-inf, inf), so a
    comparison against it can never pass by accident.
    """
    from scipy import stats as sps  # only here: scipy is slow to import

    arr = np.asarray(values, dtype=float)
    n = len(arr)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    _z(confidence)  # validates
    mean = float(arr.mean())
    if n == 1:
        return (mean, -math.inf, math.inf)
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return (mean, mean - half, mean + half)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), numpy's default 'linear' method, in pure Python.

    Written out so callers need not build arrays for short lists, and so that
    the rule is visible: the value at rank ``(n - 1) * q / 100`` of the sorted
    data, interpolated linearly between its neighbours (numpy's lerp, which
    interpolates from the nearer end).
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100], got {q!r}")
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of no values")
    h = (q / 100.0) * (len(data) - 1)
    lo = math.floor(h)
    hi = min(lo + 1, len(data) - 1)
    g = h - lo
    a, b = data[lo], data[hi]
    if a == b:
        return a
    diff = b - a
    # numpy interpolates from b when g >= 0.5; matching it keeps results bitwise equal.
    return b - diff * (1.0 - g) if g >= 0.5 else a + diff * g


__all__ = [
    "VERDICTS",
    "McNemarResult",
    "Verdict",
    "accuracy_within",
    "mcnemar",
    "mean_interval",
    "newcombe_paired_interval",
    "paired_bootstrap_diff",
    "percentile",
    "proportions_differ",
    "spearman",
    "wilson_interval",
]


def proportions_differ(cells: Sequence[tuple[int, int]]) -> float:
    """p-value of a chi-square test that groups of (successes, n) share one proportion.

    NaN when it cannot be asked: fewer than two groups, or every answer right (or every one wrong).
    """
    from scipy.stats import chi2_contingency  # only here: scipy is slow to import

    table = [[correct, n - correct] for correct, n in cells]
    if len(table) < 2 or sum(row[0] for row in table) == 0 or sum(row[1] for row in table) == 0:
        return math.nan
    return float(chi2_contingency(table)[1])
