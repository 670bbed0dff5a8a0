"""Tolerance text, and each metric family's default tolerance and better direction.

Pure: no I/O and no pytest. compare.py judges values with these; candidate.py
and the option parsers read tolerance text with parse_tolerance.

Tolerance text (``parse_tolerance``), one or more terms joined by ``+``:

    "10%"      relative: 10 % of |baseline|
    "2pt"      absolute, in percentage points of a 0..1 fraction: 2pt == 0.02.
               Accuracy, hit rates and KV-cache usage are stored as fractions,
               so "accuracy=2pt" reads the way people talk about accuracy.
    "0.5"      absolute, in the metric's own unit (seconds, tokens, ...)
    "2x"       a factor: anywhere from baseline/2 to baseline*2. Timing noise on
               shared machines is multiplicative, so a factor is the honest
               tolerance for absolute times and throughputs.
    "0"        exact (up to the rounding of stored values, see ROUNDING_SLACK)

Terms add up, as numpy.isclose's atol + rtol*|b| do: "10%+2pt" accepts
baseline ± (0.1*|baseline| + 0.02). A factor widens the window by
(f-1)*|b| above and (1-1/f)*|b| below.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

BETTER = ("higher", "lower", "none")
# The families whose absolute values move with how busy the host is.
HOST_SPEED_FAMILIES = frozenset({"throughput", "seconds"})

# Stored values keep this many significant digits (see baseline_store.py), so a value
# compared with its own stored copy differs by up to half a unit in the last
# kept digit. That much difference is always accepted, even by "0".
SIGNIFICANT_DIGITS = 6
ROUNDING_SLACK = 0.5 * 10.0 ** (1 - SIGNIFICANT_DIGITS)


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round to `digits` significant digits; ints and non-finite values pass through."""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if not math.isfinite(value) or value == 0:
        return float(value)
    return float(f"{value:.{digits}g}")


# --------------------------------------------------------------------------- tolerance

_TERM = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|pt|x)?$")


@dataclass(frozen=True)
class Tolerance:
    """How far an obtained value may sit from its baseline; see the module docstring."""

    relative: float = 0.0  # fraction of |baseline|: "10%" -> 0.1
    absolute: float = 0.0  # metric units; "2pt" -> 0.02
    factor: float = 1.0  # "2x" -> 2.0; 1.0 means no factor term

    def __post_init__(self) -> None:
        for name in ("relative", "absolute"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} tolerance must be a finite number >= 0, got {value}")
        if not math.isfinite(self.factor) or self.factor < 1:
            raise ValueError(f"factor tolerance must be a finite number >= 1 (e.g. 2x), got {self.factor}")

    def window(self, baseline: float, *, slack: bool = True) -> tuple[float, float]:
        """[low, high] accepted around `baseline`; `slack` adds the rounding slack of stored values."""
        b = abs(baseline)
        above = self.absolute + self.relative * b + (self.factor - 1.0) * b
        below = self.absolute + self.relative * b + (1.0 - 1.0 / self.factor) * b
        extra = ROUNDING_SLACK * b + 1e-12 if slack else 0.0
        return baseline - below - extra, baseline + above + extra

    @property
    def text(self) -> str:
        """Canonical text that parse_tolerance reads back to an equal Tolerance."""
        terms = []
        if self.factor != 1.0:
            terms.append(f"{_num(self.factor)}x")
        if self.relative:
            terms.append(f"{_num(self.relative * 100)}%")
        if self.absolute:
            terms.append(_num(self.absolute))
        return "+".join(terms) or "0"

    def to_dict(self) -> dict[str, float]:
        return {"relative": self.relative, "absolute": self.absolute, "factor": self.factor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tolerance:
        return cls(
            relative=float(data.get("relative", 0.0)),
            absolute=float(data.get("absolute", 0.0)),
            factor=float(data.get("factor", 1.0)),
        )

    def __str__(self) -> str:
        return self.text


def _num(value: float) -> str:
    return f"{value:.6g}"


def parse_tolerance(text: str | float | Tolerance) -> Tolerance:
    """'10%', '2pt', '0.5', '2x', '10%+2pt' -> Tolerance; ValueError naming the accepted forms."""
    if isinstance(text, Tolerance):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Tolerance(absolute=float(text))
    raw = str(text).strip()
    hint = "use e.g. 10% (relative), 2pt (0.02, points of a 0..1 fraction), 0.5 (absolute), 2x (factor) or 10%+2pt"
    if not raw:
        raise ValueError(f"empty tolerance; {hint}")
    relative = absolute = 0.0
    factor = 1.0
    for term in raw.split("+"):
        match = _TERM.match(term.strip())
        if not match:
            raise ValueError(f"cannot read tolerance {raw!r} (term {term.strip()!r}); {hint}")
        value, unit = float(match.group(1)), match.group(2)
        if unit == "%":
            relative += value / 100.0
        elif unit == "pt":
            absolute += value / 100.0
        elif unit == "x":
            if value < 1:
                raise ValueError(f"a factor tolerance must be at least 1x, got {term.strip()!r}; {hint}")
            factor *= value
        else:
            absolute += value
    return Tolerance(relative=relative, absolute=absolute, factor=factor)


# --------------------------------------------------------------------------- defaults
# First match wins. Absolute times and throughputs must survive 2x noise on a
# shared CI machine, so they get "2x" plus a floor for tiny times. Fractions
# (accuracy, usage, rates) get points. Counts of requests are exact-ish.


@dataclass(frozen=True)
class MetricFamily:
    name: str
    patterns: tuple[str, ...]  # fnmatch patterns on the metric name
    tolerance: str
    better: str
    why: str


DEFAULT_FAMILIES: tuple[MetricFamily, ...] = (
    # First match wins: the specific families come before the broad ones they overlap.
    MetricFamily("on-off-ratio", ("*_on_vs_off",), "2x", "none",
                 "a feature on over off, two engines of one session: either way can be the finding"),
    MetricFamily("accuracy-gap", ("*_gap.*", "*_gap"), "5pt", "none",
                 "differences between two accuracies: a change either way is a changed preference"),
    MetricFamily("accuracy", ("accuracy", "accuracy.*", "accuracy_*", "*_accuracy", "goodput_fraction"), "5pt", "higher",
                 "fraction 0..1; compared by interval when one is given, else 5 points covers ~300 samples"),
    MetricFamily("bad-fraction", ("truncated_in_reasoning", "*error_rate", "*failure_rate"), "5pt", "lower",
                 "fractions 0..1 of bad outcomes"),
    MetricFamily("error-count", ("failed", "truncated", "preemptions"), "10%+2", "lower",
                 "counts of bad outcomes; a couple more is noise, many more is a regression"),
    MetricFamily("good-fraction", ("*hit_rate", "*acceptance_rate", "completed_fraction"), "10pt", "higher",
                 "fractions 0..1 of good outcomes: cache hits, accepted drafts, finished requests"),
    MetricFamily("correlation", ("spearman_*", "pearson_*"), "0.2", "higher",
                 "rank correlations -1..1: an absolute band, as a ratio is meaningless near 0"),
    MetricFamily("fraction", ("*_rate", "*_fraction", "kv_cache_usage_*", "tail_share"), "10pt", "none",
                 "fractions 0..1 that move with scheduling"),
    MetricFamily("timing-ratio", ("*_over_*", "*_ratio", "*speedup*", "*_cv"), "50%", "none",
                 "ratios of times measured in one run cancel most machine noise"),
    MetricFamily("throughput", ("*throughput*", "goodput", "*_per_s", "*_tok_s"), "2x", "higher",
                 "absolute rates: 2x noise on shared machines"),
    MetricFamily("seconds", ("ttft*", "ttfvt*", "tpot*", "itl*", "e2e*", "duration", "makespan", "send_lag*",
                             "*_s", "*_seconds", "*_time"), "2x+0.05", "lower",
                 "absolute times: 2x noise on shared machines, plus 50 ms for tiny times"),
    MetricFamily("memory", ("*_bytes*", "*memory*"), "25%", "lower", "allocator and cache sizing jitter"),
    MetricFamily("count", ("requests", "completed", "num_requests_*", "*tokens*", "*_count", "n_*"), "20%+1", "none",
                 "token and request counts vary with sampling"),
)
FALLBACK_FAMILY = MetricFamily("other", ("*",), "10%", "none", "anything else")


def family_of(metric: str) -> MetricFamily:
    for family in DEFAULT_FAMILIES:
        if any(fnmatch.fnmatchcase(metric, p) for p in family.patterns):
            return family
    return FALLBACK_FAMILY


def default_tolerance(metric: str) -> Tolerance:
    return parse_tolerance(family_of(metric).tolerance)


def default_better(metric: str) -> str:
    return family_of(metric).better


def lookup(mapping: Mapping[str, Any], metric: str) -> Any:
    """Exact key first, then the longest fnmatch pattern that matches; None otherwise."""
    if metric in mapping:
        return mapping[metric]
    # The most specific pattern (the longest) wins, so "ttft_*" beats "*".
    for key in sorted(mapping, key=lambda k: (-len(k), k)):
        if any(c in key for c in "*?[") and fnmatch.fnmatchcase(metric, key):
            return mapping[key]
    return None

