"""Pure comparison of measured metrics against stored baselines, and the table a failure shows.

No I/O and no pytest here: numbers in, verdicts out, so every rule is tested
with plain data. Tolerance text and the metric families' defaults are in
tolerance.py.

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

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pytest_rllm.stats import wilson_interval  # one Wilson interval for the package; report/plots.py imports it from here
from pytest_rllm.tolerance import BETTER, Tolerance, parse_tolerance

STATUSES = ("pass", "improved", "inconclusive", "fail", "missing", "extra", "nan")
FAILING = frozenset({"fail", "missing", "extra", "nan"})

UPDATE_FLAG = "--rllm-update-baselines"


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
