"""Pure comparison of measured metrics against stored baselines.

No I/O and no pytest here: numbers in, verdicts out, so every rule is tested
with plain data.

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

The comparison rule (``compare_metric``):

* Scalars: the tolerance gives a window [low, high] around the baseline.
  Inside the window -> "pass". Outside, on the side that is better for the
  metric (``better`` = "higher" or "lower") -> "improved", which is reported but
  never fails. Outside on the worse side, or on either side when
  ``better == "none"`` -> "fail".
* Intervals: where both the baseline and the obtained value carry an interval
  (accuracy with its Wilson interval), the baseline's interval is widened by the
  same tolerance distances, and the verdict depends on whether the two
  intervals overlap. Overlap -> "pass"; the obtained interval lies wholly
  on the worse side -> "fail"; wholly on the better side -> "improved". With
  accuracy=2pt this fails only when the intervals are more than 2 points
  apart, so sampling noise alone does not fail the gate. Without an explicit
  tolerance the intervals just have to overlap (default 0): two 95 % intervals
  that do not overlap is already a difference significant at about p < 0.01.
* "inconclusive": an absolute speed metric (the throughput and seconds
  families) that would fail, measured on a run whose speed proves nothing
  (BaselineCheck.check's `speed_noise`: a busy host slows every engine, a
  runaway request holds a batch open), so it cannot prove a regression. Reported and flagged, never failing, never
  recorded by an update.
* NaN / infinite obtained value -> "nan"; a metric in the baseline that the
  test no longer produces -> "missing"; a metric the test produces that the
  baseline lacks -> "extra". All three fail.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pytest_rllm.stats import wilson_interval  # one Wilson interval for the package; report.py imports it from here

BETTER = ("higher", "lower", "none")
STATUSES = ("pass", "improved", "inconclusive", "fail", "missing", "extra", "nan")
# The families whose absolute values move with how busy the host is.
HOST_SPEED_FAMILIES = frozenset({"throughput", "seconds"})
FAILING = frozenset({"fail", "missing", "extra", "nan"})

# Stored values keep this many significant digits (see baselines.py), so a value
# compared with its own stored copy differs by up to half a unit in the last
# kept digit. That much difference is always accepted, even by "0".
SIGNIFICANT_DIGITS = 6
ROUNDING_SLACK = 0.5 * 10.0 ** (1 - SIGNIFICANT_DIGITS)

UPDATE_FLAG = "--rllm-update-baselines"


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


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Measurement:
    """One obtained metric value, with what the comparison needs to judge it."""

    value: float
    better: str | None = None  # "higher" | "lower" | "none"; None: the metric family's default
    n: int | None = None  # sample size behind the value
    interval: tuple[float, float] | None = None  # e.g. the Wilson interval of an accuracy
    tolerance: Tolerance | str | None = None
    # False: the interval is stored and shown, but the verdict compares the value
    # with the tolerance window (a mean over few trials, whose t interval is too
    # wide to resolve anything by overlap).
    judged_by_interval: bool = True

    def __post_init__(self) -> None:
        if self.better is not None and self.better not in BETTER:
            raise ValueError(f"better must be one of {BETTER}, got {self.better!r}")
        if self.interval is not None:
            low, high = (float(x) for x in self.interval)
            if not low <= high:
                raise ValueError(f"interval must be (low, high) with low <= high, got {self.interval!r}")
            object.__setattr__(self, "interval", (low, high))
        if isinstance(self.tolerance, str):
            object.__setattr__(self, "tolerance", parse_tolerance(self.tolerance))

    @classmethod
    def proportion(cls, successes: float, n: int, **kwargs: Any) -> Measurement:
        """An accuracy-like fraction with its Wilson interval: Measurement.proportion(62, 100)."""
        kwargs.setdefault("better", "higher")
        value = successes / n if n else math.nan
        return cls(value=value, n=n, interval=wilson_interval(successes, n), **kwargs)

    @classmethod
    def of(cls, value: Any) -> Measurement:
        """A Measurement from a Measurement, a number, or None (which becomes NaN)."""
        if isinstance(value, Measurement):
            return value
        if value is None:
            return cls(math.nan)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return cls(float(value))
            except (TypeError, ValueError):
                raise TypeError(f"metric values must be numbers or Measurement, got {value!r}") from None
        return cls(float(value))

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], names: Iterable[str]) -> dict[str, Measurement]:
        """Measurements for `names` from a RunResult summary; "accuracy" takes its
        interval from accuracy_low/accuracy_high and its n from "requests"."""
        out = {}
        for name in names:
            low, high = summary.get(f"{name}_low"), summary.get(f"{name}_high")
            has_interval = low is not None and high is not None and all(math.isfinite(float(x)) for x in (low, high))
            n = summary.get("requests")
            out[name] = cls(
                value=math.nan if summary.get(name) is None else float(summary[name]),
                n=int(n) if has_interval and n is not None and math.isfinite(float(n)) else None,
                interval=(float(low), float(high)) if has_interval else None,  # type: ignore[arg-type]
            )
        return out

    @property
    def finite(self) -> bool:
        return isinstance(self.value, (int, float)) and math.isfinite(self.value)


# --------------------------------------------------------------------------- result


@dataclass
class MetricCheck:
    """The verdict on one metric."""

    metric: str
    status: str  # one of STATUSES
    baseline: float | None = None
    obtained: float | None = None
    tolerance: Tolerance | None = None
    better: str = "none"
    low: float | None = None  # accepted window (scalar) or widened baseline interval
    high: float | None = None
    baseline_interval: tuple[float, float] | None = None
    obtained_interval: tuple[float, float] | None = None
    by_interval: bool = False
    updated: bool = False  # the baseline entry was (re)written by this check
    kept: bool = False  # an update run accepted it as it is (a stored entry the test did not produce)
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILING and not (self.updated or self.kept)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.obtained is None or not math.isfinite(self.obtained):
            return None
        return self.obtained - self.baseline

    def allowed_text(self) -> str:
        if self.tolerance is None:
            return "-"
        if self.low is None or self.high is None:
            return self.tolerance.text
        kind = "overlap " if self.by_interval else ""
        return f"{self.tolerance.text}: {kind}{_fmt(self.low)}..{_fmt(self.high)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "status": self.status,
            "baseline": self.baseline,
            "obtained": self.obtained if self.obtained is None or math.isfinite(self.obtained) else None,
            "obtained_text": None if self.obtained is None else _fmt(self.obtained),
            "delta": self.delta,
            "allowed": self.allowed_text(),
            "better": self.better,
            "baseline_interval": list(self.baseline_interval) if self.baseline_interval else None,
            "obtained_interval": list(self.obtained_interval) if self.obtained_interval else None,
            "by_interval": self.by_interval,
            "updated": self.updated,
            "kept": self.kept,
            "note": self.note,
        }


def compare_metric(
    metric: str,
    *,
    baseline: float,
    obtained: Measurement,
    tolerance: Tolerance,
    better: str,
    baseline_interval: tuple[float, float] | None = None,
) -> MetricCheck:
    """Judge one obtained value against its baseline by the rule in the module docstring."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    result = MetricCheck(
        metric=metric,
        status="pass",
        baseline=baseline,
        obtained=float(obtained.value) if obtained.value is not None else None,
        tolerance=tolerance,
        better=better,
        baseline_interval=tuple(baseline_interval) if baseline_interval else None,  # type: ignore[arg-type]
        obtained_interval=obtained.interval,
    )
    if not obtained.finite:
        result.status = "nan"
        result.note = f"obtained {obtained.value!r}: not a finite number"
        return result
    low, high = tolerance.window(baseline)
    shown_low, shown_high = tolerance.window(baseline, slack=False)  # the table shows the tolerance itself
    if baseline_interval is not None and obtained.interval is not None and obtained.judged_by_interval:
        # Widen the baseline interval by the same distances the scalar window uses.
        b_low, b_high = baseline_interval
        low, high = b_low - (baseline - low), b_high + (high - baseline)
        shown_low, shown_high = b_low - (baseline - shown_low), b_high + (shown_high - baseline)
        o_low, o_high = obtained.interval
        result.by_interval = True
        below, above = o_high < low, o_low > high
    else:
        value = float(obtained.value)
        below, above = value < low, value > high
    result.low, result.high = shown_low, shown_high
    if below or above:
        better_side = (above and better == "higher") or (below and better == "lower")
        result.status = "improved" if better_side else "fail"
    return result


def compare(
    baseline: Mapping[str, Mapping[str, Any]],
    obtained: Mapping[str, Measurement],
    tolerances: Mapping[str, Tolerance],
    betters: Mapping[str, str],
) -> list[MetricCheck]:
    """All metrics, sorted by name: baseline entries ({value, interval?}) against obtained ones.

    `tolerances` and `betters` must hold every metric in either mapping (the
    caller resolves precedence: CLI, test, stored, default).
    """
    checks: list[MetricCheck] = []
    for metric in sorted(set(baseline) | set(obtained)):
        tol = tolerances[metric]
        better = betters[metric]
        if metric not in obtained:
            entry = baseline[metric]
            checks.append(MetricCheck(metric, "missing", baseline=float(entry["value"]), tolerance=tol, better=better,
                                      note="in the baseline but not produced by the test"))
        elif metric not in baseline:
            m = obtained[metric]
            status = "extra" if m.finite else "nan"
            checks.append(MetricCheck(metric, status, obtained=None if m.value is None else float(m.value),
                                      tolerance=tol, better=better, obtained_interval=m.interval,
                                      note="not in the baseline" if m.finite else f"obtained {m.value!r}: not a finite number"))
        else:
            entry = baseline[metric]
            interval = entry.get("interval")
            checks.append(compare_metric(
                metric, baseline=float(entry["value"]), obtained=obtained[metric], tolerance=tol, better=better,
                baseline_interval=tuple(interval) if interval else None,  # type: ignore[arg-type]
            ))
    return checks


# --------------------------------------------------------------------------- table


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _cell_value(value: float | None, interval: tuple[float, float] | None) -> str:
    text = _fmt(value)
    if interval is not None:
        text += f" [{_fmt(interval[0])}, {_fmt(interval[1])}]"
    return text


def format_table(checks: Iterable[MetricCheck], *, only_failed: bool = False) -> str:
    """metric | baseline | obtained | delta | allowed | status, as aligned text."""
    rows = [("metric", "baseline", "obtained", "delta", "allowed", "status")]
    for c in checks:
        if only_failed and c.status == "pass":
            continue
        delta = c.delta
        delta_text = "-" if delta is None else (("+" if delta >= 0 else "") + _fmt(delta))
        status = c.status + (" (updated)" if c.updated else " (kept)" if c.kept else "")
        if c.note and c.status in ("nan", "missing", "extra", "inconclusive"):
            status += f": {c.note}"
        rows.append((c.metric, _cell_value(c.baseline, c.baseline_interval),
                     _cell_value(c.obtained, c.obtained_interval), delta_text, c.allowed_text(), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        lines.append(" | ".join(cells).rstrip())
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * len("status"))
    return "\n".join(lines)


def failure_message(checks: list[MetricCheck], path: str, *, notes: Iterable[str] = (), engine_change: str = "") -> str:
    """The text pytest.fail shows: a headline, the table, notes, and (last) the update flag.

    `engine_change` ("baseline recorded on vllm 0.31.0, this run used vllm 0.32.0") goes on the
    headline: a new engine release is the first suspect for every metric that moved.
    """
    failed = [c for c in checks if c.failed]
    cause = f"{engine_change}: " if engine_change else ""
    lines = [f"rllm baseline check failed: {cause}{len(failed)} of {len(checks)} metrics differ from {path}", ""]
    lines.append(format_table(checks))
    lines.extend(["", *notes] if notes else [])
    lines.append("")
    lines.append(f"If the new values are right, update the baseline with: {UPDATE_FLAG}")
    return "\n".join(lines)
