"""Paired A/B verdicts: a reference run against a candidate run, metric by metric.

Rule: each metric's effect (candidate / reference, or candidate - reference for
accuracy and counts) gets a 95 % interval, and its tolerance a band around "no
change". improved: the whole interval lies beyond the band on the better side;
regressed: beyond it on the worse side (either side for a metric with no better
direction); same: the interval lies inside the band; inconclusive: otherwise.
A row without an interval is judged on its point value alone, and says so.

Intervals, from plain run dicts (``RunResult.to_dict()``, as a JSON report holds
them): latency percentiles and means by a bootstrap over requests (paired by
item and repeat where both runs answered the same items); any metric with
per-trial values (``run["trials"]``) from the trials, paired by trial index when
both have as many; accuracy from the per-item grades, paired (Newcombe), else
from the two summaries (independent Newcombe). Throughput without trials, counts
and the KV capacity have no interval. The resampling is in :mod:`pytest_rllm.resampling`.

The tolerances are the smallest change that matters, not a noise allowance: the
interval carries the noise. Metric families and better directions come from
:mod:`pytest_rllm.tolerance`; the families whose baseline tolerance is a noise
allowance (2x for throughput and seconds) get :data:`AB_TOLERANCES` instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pytest_rllm.tolerance import family_of, lookup, parse_tolerance
from pytest_rllm.resampling import bootstrap_ratio, trials_ratio

VERDICTS = ("improved", "same", "regressed", "inconclusive")
DEFAULT_METRICS = (
    "output_throughput", "request_throughput",
    "ttft_p50", "ttft_p99", "ttfvt_p50", "ttfvt_p99", "tpot_p50", "tpot_p99",
    "itl_p50", "itl_p99", "e2e_p50", "e2e_p99",
    "accuracy", "failed", "truncated", "kv_capacity_tokens",
)
# By tolerance.py family name; other families keep their baseline tolerance.
AB_TOLERANCES = {"throughput": "10%", "seconds": "10%"}
# Where the family's direction does not fit an A/B question.
AB_BETTER = {"kv_capacity_tokens": "higher"}
AB_TOLERANCE_OVERRIDES = {"kv_capacity_tokens": "0"}
# Metrics judged as a difference (points, counts) rather than a ratio.
DIFFERENCE_METRICS = ("accuracy", "failed", "truncated", "preemptions")
LATENCIES = ("ttft", "ttfvt", "tpot", "itl", "e2e")
CONFIDENCE = 0.95


@dataclass
class ABRow:
    """One metric of one paired run: both values, the effect with its interval, the verdict."""

    run: str
    metric: str
    reference: float
    candidate: float
    kind: str  # "ratio" (candidate / reference) or "diff" (candidate - reference)
    effect: float
    low: float | None  # interval of the effect; None: judged on the point value alone
    high: float | None
    band: tuple[float, float]  # the tolerance, as bounds on the effect
    tolerance: str
    better: str
    verdict: str
    method: str  # "bootstrap (paired)", "trials", "paired items", "no interval", ...
    note: str = ""

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the band as a list, and a non-finite number (a band with no end) as None."""
        data = asdict(self)
        data["band"] = [_finite(x) for x in self.band]
        return {k: _finite(v) if isinstance(v, float) else v for k, v in data.items()}


def row_from_dict(data: Mapping[str, Any]) -> ABRow:
    """An ABRow back from its to_dict() (a JSON report's "ab" rows, or a worker's user_properties); extra keys ignored."""
    def number(value: Any, missing: float = math.nan) -> float:
        found = _finite(value)
        return missing if found is None else found

    band = list(data.get("band") or [None, None]) + [None, None]
    return ABRow(
        run=str(data.get("run", "?")), metric=str(data.get("metric", "?")),
        reference=number(data.get("reference")), candidate=number(data.get("candidate")),
        kind=str(data.get("kind", "ratio")), effect=number(data.get("effect")),
        low=_finite(data.get("low")), high=_finite(data.get("high")),
        band=(number(band[0], -math.inf), number(band[1], math.inf)),
        tolerance=str(data.get("tolerance", "")), better=str(data.get("better", "none")),
        verdict=str(data.get("verdict", "inconclusive")), method=str(data.get("method", "")), note=str(data.get("note", "")),
    )


# --------------------------------------------------------------------------- verdict


def ab_verdict(low: float, high: float, band: tuple[float, float], better: str) -> str:
    """The module docstring's rule on an interval [low, high] of the effect and its tolerance band."""
    band_low, band_high = band
    if high < band_low or low > band_high:
        better_side = (low > band_high and better == "higher") or (high < band_low and better == "lower")
        return "improved" if better_side else "regressed"
    if band_low <= low and high <= band_high:
        return "same"
    return "inconclusive"


def ab_tolerance(metric: str, tolerances: Mapping[str, Any] | None = None) -> str:
    """The user's tolerance text (exact name or pattern) first, then the A/B default for the metric's family."""
    given = lookup(tolerances or {}, metric)
    if given is not None:
        return str(given)
    if metric in AB_TOLERANCE_OVERRIDES:
        return AB_TOLERANCE_OVERRIDES[metric]
    family = family_of(metric)
    return AB_TOLERANCES.get(family.name, family.tolerance)


def ab_better(metric: str) -> str:
    return AB_BETTER.get(metric) or family_of(metric).better


# --------------------------------------------------------------------------- values


def _finite(value: Any) -> float | None:
    try:
        number = float(value)  # None, text and lists raise
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_value(run: Mapping[str, Any], metric: str) -> float | None:
    """The run's value: its summary's, or the KV capacity (blocks x block size) its engine reported."""
    value = _finite((run.get("summary") or {}).get(metric))
    if value is None and metric == "kv_capacity_tokens":
        cache = (run.get("engine") or {}).get("cache_config") or {}
        blocks, size = _finite(cache.get("num_gpu_blocks")), _finite(cache.get("block_size"))
        value = blocks * size if blocks is not None and size is not None else None
    return value


class _Run:
    """A run dict and its records as RequestRecords, parsed once for every metric."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self._records: list[Any] | None = None

    @property
    def records(self) -> list[Any]:
        if self._records is None:
            from pytest_rllm.records import RequestRecord

            self._records = [RequestRecord.from_dict(r) for r in self.data.get("records") or [] if isinstance(r, Mapping)]
        return self._records


def _per_request(records: Sequence[Any], base: str) -> dict[tuple[str, int], np.ndarray]:
    """(item_id, repeat) -> the request's values of `base` (one value; every token gap for ITL)."""
    out = {}
    for r in records:
        if not r.ok:
            continue
        values = r.itls if base == "itl" else [getattr(r, base)]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if values:
            out[(r.item_id, r.repeat)] = np.asarray(values, dtype=float)
    return out


def _trial_values(run: Mapping[str, Any], metric: str) -> list[float]:
    values = []
    for trial in run.get("trials") or []:
        summary = trial.get("summary", trial) if isinstance(trial, Mapping) else {}
        value = _finite(summary.get(metric))
        if value is not None:
            values.append(value)
    return values


# --------------------------------------------------------------------------- intervals


def _latency_stat(metric: str) -> tuple[str, float | None] | None:
    """("e2e", 99.0) for e2e_p99, ("ttft", None) for ttft_mean; None for anything else."""
    base, _, tail = metric.rpartition("_")
    if base not in LATENCIES:
        return None
    if tail == "mean":
        return base, None
    if tail.startswith("p") and tail[1:].isdigit():
        return base, float(tail[1:])
    return None


def accuracy_effect(reference: _Run, candidate: _Run) -> tuple[float, float, float, float, float, str] | None:
    """(reference accuracy, candidate accuracy, diff, low, high, method): paired per item where possible."""
    from pytest_rllm.stats import newcombe_interval, newcombe_paired_interval

    recs_a, recs_b = reference.records, candidate.records
    if recs_a and recs_b:
        from pytest_rllm.accuracy.summary import paired_outcomes

        a, b, keys = paired_outcomes(recs_a, recs_b)
        if keys:
            diff, low, high = newcombe_paired_interval(a, b, CONFIDENCE)
            return sum(a) / len(a), sum(b) / len(b), diff, low, high, f"{len(keys)} paired items"
    acc_a, acc_b = metric_value(reference.data, "accuracy"), metric_value(candidate.data, "accuracy")
    n_a, n_b = metric_value(reference.data, "requests"), metric_value(candidate.data, "requests")
    if acc_a is None or acc_b is None:
        return None
    if not n_a or not n_b:
        return acc_a, acc_b, acc_b - acc_a, math.nan, math.nan, "no interval"
    diff, low, high = newcombe_interval(round(acc_a * n_a), int(n_a), round(acc_b * n_b), int(n_b), CONFIDENCE)
    return acc_a, acc_b, diff, low, high, "unpaired items"


# --------------------------------------------------------------------------- rows


def compare_runs(reference: Mapping[str, Any], candidate: Mapping[str, Any], metrics: Sequence[str] = DEFAULT_METRICS,
                 tolerances: Mapping[str, Any] | None = None, *, name: str | None = None) -> tuple[list[ABRow], list[str]]:
    """Rows for the metrics both runs hold, and the names of the metrics skipped (missing on a side)."""
    from pytest_rllm.report import run_name

    name = name or run_name(candidate)
    rows, skipped = [], []
    ref_run, cand_run = _Run(reference), _Run(candidate)
    for metric in metrics:
        row = _row(name, metric, ref_run, cand_run, ab_tolerance(metric, tolerances), ab_better(metric))
        if row is None:
            skipped.append(metric)
        else:
            rows.append(row)
    return rows, skipped


def _row(name: str, metric: str, reference: _Run, candidate: _Run, tolerance_text: str, better: str) -> ABRow | None:
    tolerance = parse_tolerance(tolerance_text)
    ref, cand = metric_value(reference.data, metric), metric_value(candidate.data, metric)
    low = high = None
    method, note = "no interval", ""
    if metric == "accuracy":
        found = accuracy_effect(reference, candidate)
        if found is None:
            return None
        ref, cand, effect, lo, hi, method = found
        if math.isfinite(lo) and math.isfinite(hi):
            low, high = lo, hi
    if ref is None or cand is None:
        return None
    kind = "diff" if metric in DIFFERENCE_METRICS or ref == 0 else "ratio"
    window = tolerance.window(ref, slack=False)
    if kind == "diff":
        effect, band = cand - ref, (window[0] - ref, window[1] - ref)
    else:
        effect, band = cand / ref, (window[0] / ref, window[1] / ref)
        if ref < 0:
            return None  # a ratio of signed values has no direction to judge
        found_interval = _ratio_interval(metric, reference, candidate)
        if found_interval is not None:
            low, high, method = found_interval
    if low is None or high is None:
        verdict = ab_verdict(effect, effect, band, better)
        note = "judged on the point value alone"
    else:
        verdict = ab_verdict(low, high, band, better)
    return ABRow(name, metric, ref, cand, kind, effect, low, high, band, tolerance_text, better, verdict, method, note)


def _ratio_interval(metric: str, reference: _Run, candidate: _Run) -> tuple[float, float, str] | None:
    trials_a, trials_b = _trial_values(reference.data, metric), _trial_values(candidate.data, metric)
    if len(trials_a) >= 2 and len(trials_b) >= 2:
        return trials_ratio(trials_a, trials_b)
    latency = _latency_stat(metric)
    if latency is None:
        return None
    base, q = latency
    values_a, values_b = _per_request(reference.records, base), _per_request(candidate.records, base)
    return bootstrap_ratio(values_a, values_b, q)


# --------------------------------------------------------------------------- reports and the table


@dataclass
class ABComparison:
    """Every paired run's rows, what was skipped, and the runs found on one side only."""

    rows: list[ABRow]
    skipped: dict[str, list[str]]  # run name -> metrics not held by both runs
    only_reference: list[str]
    only_candidate: list[str]

    @property
    def regressed(self) -> list[ABRow]:
        return [r for r in self.rows if r.verdict == "regressed"]

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "counts": self.counts(), "skipped": self.skipped,
                "regressed": [f"{r.run} {r.metric}" for r in self.regressed],
                "only_reference": self.only_reference, "only_candidate": self.only_candidate}


def compare_reports(reference_runs: Sequence[Mapping[str, Any]], candidate_runs: Sequence[Mapping[str, Any]],
                    metrics: Sequence[str] = DEFAULT_METRICS, tolerances: Mapping[str, Any] | None = None) -> ABComparison:
    """Runs paired by name (configuration label / workload), in the reference's order."""
    from pytest_rllm.report import run_name

    by_name = {run_name(r): r for r in candidate_runs}
    ref_names = [run_name(r) for r in reference_runs]
    rows: list[ABRow] = []
    skipped: dict[str, list[str]] = {}
    for name, ref in zip(ref_names, reference_runs):
        if name in by_name:
            run_rows, run_skipped = compare_runs(ref, by_name[name], metrics, tolerances, name=name)
            rows.extend(run_rows)
            if run_skipped:
                skipped[name] = run_skipped
    return ABComparison(rows, skipped, [n for n in ref_names if n not in by_name],
                        [n for n in by_name if n not in set(ref_names)])


def _value_text(metric: str, value: float) -> str:
    if metric == "accuracy" or family_of(metric).name in ("accuracy", "bad-fraction", "fraction"):
        return f"{100 * value:.1f}%"
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}"


def _effect_text(row: ABRow) -> str:
    if row.kind == "ratio":
        text = f"x{row.effect:.3f}"
        return text + (f" [{row.low:.3f}, {row.high:.3f}]" if row.has_interval else "")
    if row.metric == "accuracy" or family_of(row.metric).name in ("accuracy", "bad-fraction", "fraction"):
        text = f"{100 * row.effect:+.1f}pt"
        return text + (f" [{100 * row.low:+.1f}, {100 * row.high:+.1f}]" if row.has_interval else "")  # type: ignore[operator]
    return f"{row.effect:+.4g}" + (f" [{row.low:+.4g}, {row.high:+.4g}]" if row.has_interval else "")


def format_ab_table(rows: Sequence[ABRow]) -> str:
    """metric | reference | candidate | ratio [95% interval] | verdict, as aligned text, one block per run."""
    lines: list[str] = []
    for run in dict.fromkeys(r.run for r in rows):
        table = [("metric", "reference", "candidate", "ratio [95% interval]", "verdict")]
        for r in (r for r in rows if r.run == run):
            verdict = f"{r.verdict} (tol {r.tolerance}{', no interval' if not r.has_interval else ''})"
            table.append((r.metric, _value_text(r.metric, r.reference), _value_text(r.metric, r.candidate),
                          _effect_text(r), verdict))
        widths = [max(len(t[i]) for t in table) for i in range(4)]
        lines.append(f"{run}")
        for i, t in enumerate(table):
            lines.append("  " + " | ".join([c.ljust(w) for c, w in zip(t, widths)] + [t[4]]).rstrip())
            if i == 0:
                lines.append("  " + "-+-".join("-" * w for w in widths) + "-+-" + "-" * len("verdict"))
        lines.append("")
    return "\n".join(lines).rstrip()


def summary_line(comparison: ABComparison) -> str:
    counts = comparison.counts()
    text = f"{len(comparison.rows)} rows: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    n_skipped = sum(len(v) for v in comparison.skipped.values())
    if n_skipped:
        text += f"; {n_skipped} metric rows skipped (not in both runs)"
    if comparison.regressed:
        text += ". Regressed: " + ", ".join(f"{r.run} {r.metric}" for r in comparison.regressed)
    return text
