"""Reports from plain data: terminal summary lines, the JSON report, the HTML report, JUnit properties.

Everything renders from dicts (a run is ``RunResult.to_dict()``: name, preset,
workload, records, timelines, summary; a check is ``CheckOutcome.to_dict()``),
so the xdist controller can render what its workers sent, and so can anyone
holding an old JSON report.

The HTML report is one self-contained file: inline CSS and hand-drawn SVG, no
script, no CDN, no network. Plots: accuracy with intervals per configuration,
KV-cache usage over time per configuration, latency CDFs (TTFT, TTFVT, E2E), and
output-length histograms by difficulty and by domain.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pytest_rllm.baselines import USER_PROPERTY, atomic_write_text, outcomes_from_user_properties
from pytest_rllm.properties import CLAIM_PROPERTY, EVIDENCE_PROPERTY, FINDING_PROPERTY

REPORT_SCHEMA_VERSION = 1
# The metrics that CI dashboards get (JUnit properties, one line per run).
KEY_METRICS = (
    "requests", "completed", "failed", "accuracy", "accuracy_low", "accuracy_high",
    "ttft_p50", "ttfvt_p50", "ttfvt_p90", "e2e_p50", "e2e_p90", "tpot_p50",
    "output_throughput", "request_throughput", "goodput",
    "kv_cache_usage_mean", "kv_cache_usage_peak", "num_requests_waiting_peak",
)
# Okabe-Ito, then two neutrals: distinguishable with the common colour blindnesses.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#7F7F7F")

__all__ = [
    "CLAIM_PROPERTY", "EVIDENCE_PROPERTY", "KEY_METRICS", "check_lines", "checks_from_user_properties",
    "export_benchmark_json", "finding", "finding_from_report",
    "junit_properties", "merge_reports", "read_json_report", "render_html", "run_line", "summary_lines",
    "write_html_report", "write_json_report",
]


# --------------------------------------------------------------------------- small helpers


def _num(value: Any) -> float | None:
    """A finite float, or None (JSON turns NaN into null)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any, fmt: str = "{:.3g}") -> str:
    v = _num(value)
    return "-" if v is None else fmt.format(v)


def _pct(value: Any) -> str:
    return _fmt(value, "{:.1%}")


def run_name(run: Mapping[str, Any]) -> str:
    return str(run.get("name") or f"{run.get('label', run.get('preset', '?'))}/{run.get('workload', '?')}")


def checks_from_user_properties(user_properties: Iterable[tuple[str, object]]) -> list[dict[str, Any]]:
    """Baseline check outcomes carried by a TestReport (on the xdist controller too)."""
    return outcomes_from_user_properties(user_properties)


# --------------------------------------------------------------------------- per-request values


def _latency(record: Mapping[str, Any], name: str) -> float | None:
    sent = _num(record.get("t_sent"))
    end = _num(record.get({"ttft": "t_first_token", "ttfvt": "t_first_visible", "e2e": "t_done"}[name]))
    if sent is None or end is None:
        return None
    return end - sent


def _ok(record: Mapping[str, Any]) -> bool:
    return record.get("error") is None and record.get("t_done") is not None


def latencies(run: Mapping[str, Any], name: str) -> list[float]:
    return sorted(v for r in run.get("records") or [] if _ok(r) for v in [_latency(r, name)] if v is not None)


# --------------------------------------------------------------------------- terminal


def run_line(run: Mapping[str, Any]) -> str:
    """One line per configuration: counts, accuracy, the user-end and service-end headline numbers."""
    s = run.get("summary") or {}
    acc = _pct(s.get("accuracy"))
    if _num(s.get("accuracy_low")) is not None:
        acc += f" [{_pct(s.get('accuracy_low'))}, {_pct(s.get('accuracy_high'))}]"
    error = run.get("error")
    tail = f" FAILED: {str(error).splitlines()[0]}" if error else ""
    return (
        f"{run_name(run):<28} n={_fmt(s.get('requests'), '{:.0f}')} ok={_fmt(s.get('completed'), '{:.0f}')} "
        f"acc={acc} ttfvt_p50={_fmt(s.get('ttfvt_p50'))}s e2e_p50={_fmt(s.get('e2e_p50'))}s "
        f"out_tok/s={_fmt(s.get('output_throughput'), '{:.0f}')} "
        f"kv_mean={_pct(s.get('kv_cache_usage_mean'))} kv_peak={_pct(s.get('kv_cache_usage_peak'))}{tail}"
    )


def check_lines(check: Mapping[str, Any]) -> list[str]:
    """Lines for a failed or flagged check (nothing for a clean pass): the test, then each notable metric."""
    notable = [m for m in check.get("metrics") or [] if m.get("status") != "pass" or m.get("updated") or m.get("kept")]
    action = check.get("action", "compared")
    if not check.get("failed") and not check.get("flagged") and action == "compared":
        return []
    if check.get("failed") and check.get("xfail"):
        head = f"XFAIL ({check['xfail']})"
    elif check.get("failed"):
        head = "FAILED"
    elif action in ("created", "updated", "rewritten"):
        head = action.upper()
    else:
        head = "FLAGGED"
    lines = [f"{head} {check.get('nodeid', '?')} ({check.get('path', '?')})"]
    if action in ("no-baseline", "unreadable"):
        first = (check.get("message") or "").splitlines()[:1]
        lines.append(f"    {first[0] if first else action}")
        return lines
    for m in notable:
        suffix = " (updated)" if m.get("updated") else " (kept)" if m.get("kept") else ""
        lines.append(
            f"    {m.get('metric')}: {m.get('status')}{suffix} baseline={_fmt(m.get('baseline'), '{:.6g}')} "
            f"obtained={m.get('obtained_text') or _fmt(m.get('obtained'), '{:.6g}')} allowed={m.get('allowed', '-')}"
        )
    return lines


def summary_lines(runs: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The "rllm" terminal section: a line per configuration, a counting line, then failed or flagged checks."""
    lines = [run_line(r) for r in runs]
    if checks:
        counts: dict[str, int] = {}
        for c in checks:
            key = ("xfailed" if c.get("xfail") else "failed") if c.get("failed") else (
                c.get("action") if c.get("action") != "compared" else "flagged" if c.get("flagged") else "passed")
            counts[key] = counts.get(key, 0) + 1
        order = ("passed", "flagged", "created", "updated", "rewritten", "xfailed", "failed")
        parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
        lines.append("baseline checks: " + ", ".join(parts) + ".")
        for c in sorted(checks, key=lambda c: str(c.get("nodeid"))):
            lines.extend(check_lines(c))
        if counts.get("failed"):
            lines.append("If the new values are right: re-run with --rllm-update-baselines (or =all to rewrite every entry).")
    return lines


# --------------------------------------------------------------------------- JSON report and JUnit


def write_json_report(path: str | os.PathLike[str], runs: Sequence[Mapping[str, Any]],
                      checks: Sequence[Mapping[str, Any]] = (), meta: Mapping[str, Any] | None = None) -> Path:
    """Every run with its records and timelines, every baseline check, and `meta`; written atomically."""
    path = Path(path)
    data = {"schema_version": REPORT_SCHEMA_VERSION, "meta": dict(meta or {}), "runs": list(runs), "checks": list(checks)}
    atomic_write_text(path, json.dumps(_json_safe(data), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def read_json_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema_version") != REPORT_SCHEMA_VERSION:
        raise ValueError(f"{path} is not a pytest-rllm report (schema_version {REPORT_SCHEMA_VERSION})")
    return data


def merge_reports(parts: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge per-worker reports (xdist) into one: runs sorted by name, checks by node id."""
    runs: list[Any] = []
    checks: list[Any] = []
    for part in parts:
        runs.extend(part.get("runs") or [])
        checks.extend(part.get("checks") or [])
    runs.sort(key=run_name)
    checks.sort(key=lambda c: (str(c.get("nodeid")), str(c.get("name"))))
    return {"schema_version": REPORT_SCHEMA_VERSION, "meta": dict(meta or {}), "runs": runs, "checks": checks}


def junit_properties(name: str, summary: Mapping[str, Any], metrics: Sequence[str] = KEY_METRICS) -> list[tuple[str, float]]:
    """(f"rllm.{name}.{metric}", value) pairs for item.user_properties: JUnit XML carries them to CI dashboards."""
    out = []
    for metric in metrics:
        value = _num(summary.get(metric))
        if value is not None:
            out.append((f"rllm.{name}.{metric}", float(f"{value:.6g}")))
    return out


# --------------------------------------------------------------------------- pytest-benchmark export


def export_benchmark_json(path: str | os.PathLike[str], runs: Sequence[Mapping[str, Any]],
                          meta: Mapping[str, Any] | None = None,
                          metrics: Sequence[str] = ("ttft", "ttfvt", "e2e")) -> Path:
    """Per-request latencies in pytest-benchmark's JSON format, one benchmark per (run, metric).

    `pytest-benchmark compare FILE` and its dashboards read the result. Needs
    pytest-benchmark installed (its Stats class computes the fields).
    """
    try:
        import pytest_benchmark
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise RuntimeError("exporting in pytest-benchmark's format needs pytest-benchmark: pip install pytest-benchmark") from None
    import datetime
    import platform

    meta = dict(meta or {})
    benchmarks = []
    for run in runs:
        for metric in metrics:
            values = latencies(run, metric)
            if not values:
                continue
            stats = Stats()
            for v in values:
                stats.update(v)
            data = stats.as_dict()
            data["data"] = values
            data["iterations"] = 1
            benchmarks.append({
                "group": metric,
                "name": f"{metric}[{run_name(run)}]",
                "fullname": f"rllm::{metric}[{run_name(run)}]",
                "params": {"configuration": run_name(run)},
                "param": run_name(run),
                "extra_info": {k: v for k, v in (run.get("summary") or {}).items() if _num(v) is not None},
                "options": {"timer": "client wall clock", "unit": "seconds per request"},
                "stats": data,
            })
    doc = {
        "machine_info": {"node": meta.get("hardware_key", "unknown"), "machine": platform.machine(),
                         "python_version": platform.python_version(), **{k: v for k, v in meta.items() if isinstance(v, (str, int, float))}},
        "commit_info": dict(meta.get("commit_info") or {}),
        "benchmarks": benchmarks,
        "datetime": meta.get("datetime") or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": pytest_benchmark.__version__,
    }
    path = Path(path)
    atomic_write_text(path, json.dumps(_json_safe(doc), indent=2, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------- findings




def finding(claim: str, verdict: str, evidence: str = "", nodeid: str = "") -> dict[str, str]:
    """One row of the findings table. verdict: holds | flagged | fails | xfail | skipped | error."""
    return {"claim": claim, "verdict": verdict, "evidence": evidence, "nodeid": nodeid}


def expected_failure(report: Any) -> str | None:
    """The xfail reason ("" when none was given) of an xfailed test's report, else None."""
    xfail = getattr(report, "wasxfail", None)
    return None if xfail is None or not getattr(report, "skipped", False) else str(xfail)


def _assertion_message(report: Any) -> str:
    # The "E   " lines are the assertion message; the traceback above them is noise here.
    text = str(getattr(report, "longreprtext", "") or "")
    return "\n".join([line[1:].strip() for line in text.splitlines() if line.startswith("E ")][:12])


def finding_from_report(report: Any, flags: Sequence[str] = ()) -> dict[str, str] | None:
    """The findings-table row for a TestReport (duck-typed), or None when it is not a finding's verdict.

    A test is a finding when it carries a CLAIM_PROPERTY user property. The
    verdict comes from the call phase (or a setup phase that skipped or
    errored): passed -> "holds", or "flagged" when `flags` (the messages of
    FindingFlag warnings the test raised) is not empty; failed -> "fails";
    an xfailed test -> "xfail"; skipped -> "skipped"; a setup error -> "error". Evidence is the test's
    EVIDENCE_PROPERTY entries, then the flag messages, then the failure or skip reason.
    """
    props = list(getattr(report, "user_properties", None) or [])
    claims = [str(v) for k, v in props if k == CLAIM_PROPERTY]
    when = getattr(report, "when", "call")
    if not claims or (when != "call" and getattr(report, "passed", False)) or when == "teardown":
        return None
    evidence = [str(v) for k, v in props if k == EVIDENCE_PROPERTY]
    checks = [v for k, v in props if k == FINDING_PROPERTY and isinstance(v, dict)]
    evidence.extend(f"flag: {f}" for f in flags)
    xfail = expected_failure(report)
    if xfail is not None:
        # An expected failure (a known engine issue): the reason, then what failed.
        verdict = "xfail"
        evidence.append(f"expected failure ({xfail or 'no reason given'})")
        evidence.append(_assertion_message(report))
    elif getattr(report, "skipped", False):
        verdict = "skipped"
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
        evidence.append(reason.removeprefix("Skipped: "))
    elif getattr(report, "failed", False):
        verdict = "fails" if when == "call" else "error"
        # rllm_finding's typed verdicts say what failed; the failure text only for other checks.
        failed = [c for c in checks if c.get("verdict") in ("fails", "inconclusive")]
        if failed and when == "call":
            verdict = "inconclusive" if all(c["verdict"] == "inconclusive" for c in failed) else "fails"
            evidence.extend(str(c.get("message") or c.get("what")) for c in failed)
        else:
            text = str(getattr(report, "longreprtext", "") or "")
            evidence.append(_assertion_message(report) or (text.splitlines() or [""])[-1])
    else:
        verdict = "flagged" if flags else "holds"
    return finding(claims[-1], verdict, "\n".join(e for e in evidence if e), str(getattr(report, "nodeid", "")))


# --------------------------------------------------------------------------- SVG drawing


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_text(value: float, percent: bool = False) -> str:
    if percent:
        return f"{value * 100:.0f}%"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:.3g}"


class _Plot:
    """One SVG chart: a frame with linear axes, grid, labels, legend; marks are added in data units."""

    W, H = 520, 290
    LEFT, RIGHT, TOP, BOTTOM = 58, 14, 50, 44

    def __init__(self, kind: str, title: str, x: tuple[float, float], y: tuple[float, float], *,
                 xlabel: str, ylabel: str, ypercent: bool = False, xpercent: bool = False,
                 height: int | None = None, ycategories: Sequence[str] | None = None, left: int | None = None,
                 width: int | None = None, right: int | None = None) -> None:
        self.kind = kind
        self.H = height or self.H
        self.W = width or self.W
        self.LEFT = left or self.LEFT
        self.RIGHT = right or self.RIGHT
        self.x0, self.x1 = x
        self.y0, self.y1 = y
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.parts: list[str] = []
        self.legend: list[tuple[str, str]] = []
        self.title = title
        pw, ph = self.W - self.LEFT - self.RIGHT, self.H - self.TOP - self.BOTTOM
        self.pw, self.ph = pw, ph
        # Grid and ticks first, so the marks draw over them.
        for t in _nice_ticks(self.x0, self.x1):
            if self.x0 - 1e-12 <= t <= self.x1 + 1e-12:
                px = self.sx(t)
                self.parts.append(f'<line x1="{px:.1f}" y1="{self.TOP}" x2="{px:.1f}" y2="{self.TOP + ph}" class="grid"/>')
                self.parts.append(f'<text x="{px:.1f}" y="{self.TOP + ph + 16}" class="tick" text-anchor="middle">{_tick_text(t, xpercent)}</text>')
        if ycategories is None:
            for t in _nice_ticks(self.y0, self.y1):
                if self.y0 - 1e-12 <= t <= self.y1 + 1e-12:
                    py = self.sy(t)
                    self.parts.append(f'<line x1="{self.LEFT}" y1="{py:.1f}" x2="{self.LEFT + pw}" y2="{py:.1f}" class="grid"/>')
                    self.parts.append(f'<text x="{self.LEFT - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">{_tick_text(t, ypercent)}</text>')
        else:
            for i, label in enumerate(ycategories):
                py = self.sy(i)
                self.parts.append(f'<text x="{self.LEFT - 8}" y="{py + 4:.1f}" class="tick" text-anchor="end">{_esc(_short(label, 22))}</text>')
        self.parts.append(f'<rect x="{self.LEFT}" y="{self.TOP}" width="{pw}" height="{ph}" class="frame"/>')
        self.parts.append(f'<text x="{self.LEFT + pw / 2:.1f}" y="{self.H - 8}" class="axis" text-anchor="middle">{_esc(xlabel)}</text>')
        if ylabel:
            self.parts.append(
                f'<text transform="translate(14 {self.TOP + ph / 2:.1f}) rotate(-90)" class="axis" text-anchor="middle">{_esc(ylabel)}</text>'
            )

    def sx(self, x: float) -> float:
        return self.LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def sy(self, y: float) -> float:
        return self.TOP + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph

    def polyline(self, points: Sequence[tuple[float, float]], color: str, *, label: str | None = None,
                 width: float = 2.0, dash: str | None = None, fill: bool = False) -> None:
        if not points:
            return
        coords = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        if fill:
            base = self.sy(max(self.y0, 0.0))
            first, last = self.sx(points[0][0]), self.sx(points[-1][0])
            self.parts.append(f'<polygon points="{first:.1f},{base:.1f} {coords} {last:.1f},{base:.1f}" '
                              f'fill="{color}" fill-opacity="0.18" stroke="none"/>')
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width}"'
                          f' stroke-linejoin="round"{dash_attr} class="series"/>')
        if label is not None:
            self.legend.append((label, color))

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: str, opacity: float = 1.0) -> None:
        left, right = sorted((self.sx(x0), self.sx(x1)))
        top, bottom = sorted((self.sy(y0), self.sy(y1)))
        self.parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(right - left, 0.5):.1f}" '
                          f'height="{max(bottom - top, 0.5):.1f}" fill="{color}" fill-opacity="{opacity}"/>')

    def interval(self, row: int, value: float, low: float | None, high: float | None, color: str, text: str) -> None:
        py = self.sy(row)
        if low is not None and high is not None:
            self.parts.append(f'<line x1="{self.sx(low):.1f}" y1="{py:.1f}" x2="{self.sx(high):.1f}" y2="{py:.1f}" '
                              f'stroke="{color}" stroke-width="3"/>')
            for end in (low, high):
                self.parts.append(f'<line x1="{self.sx(end):.1f}" y1="{py - 7:.1f}" x2="{self.sx(end):.1f}" y2="{py + 7:.1f}" '
                                  f'stroke="{color}" stroke-width="2"/>')
        self.parts.append(f'<circle cx="{self.sx(value):.1f}" cy="{py:.1f}" r="6" fill="{color}" class="series"/>')
        anchor_x = self.sx(high if high is not None else value) + 10
        self.parts.append(f'<text x="{anchor_x:.1f}" y="{py + 4:.1f}" class="tick">{_esc(text)}</text>')

    def note(self, text: str) -> None:
        self.parts.append(f'<text x="{self.LEFT + self.pw / 2:.1f}" y="{self.TOP + self.ph / 2:.1f}" class="note" '
                          f'text-anchor="middle">{_esc(text)}</text>')

    def svg(self) -> str:
        legend = []
        x, y = self.LEFT, 38
        for label, color in self.legend:
            text = _short(label, 34)
            width = 18 + 6.4 * len(text) + 14
            if x + width > self.W - self.RIGHT and x > self.LEFT:
                x, y = self.LEFT, y + 16  # wrap: every entry stays readable
            legend.append(f'<rect x="{x}" y="{y - 9}" width="12" height="12" fill="{color}"/>'
                          f'<text x="{x + 17}" y="{y + 1}" class="legend">{_esc(text)}</text>')
            x += int(width)
        extra = y - 38  # extra legend rows push the chart down
        height = self.H + extra
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{_esc(self.kind)}" role="img" '
            f'aria-label="{_esc(self.title)}" width="{self.W}" height="{height}" viewBox="0 0 {self.W} {height}">'
            f'<title>{_esc(self.title)}</title>'
            f'<text x="{self.LEFT}" y="18" class="title">{_esc(self.title)}</text>'
            + "".join(legend) + f'<g transform="translate(0 {extra})">' + "".join(self.parts) + "</g></svg>"
        )


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- the plots


def _colors(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {run_name(r): PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}


def plot_accuracy(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        acc = _num(s.get("accuracy"))
        if acc is None:
            continue
        low, high = _num(s.get("accuracy_low")), _num(s.get("accuracy_high"))
        if low is None or high is None:
            n = _num(s.get("requests"))
            if n:
                from pytest_rllm.compare import wilson_interval

                low, high = wilson_interval(acc * n, int(n))
        rows.append((run_name(r), acc, low, high))
    height = 100 + 34 * max(len(rows), 1)
    # Rows run top to bottom in the overview table's order: row i sits at y = len - 1 - i.
    plot = _Plot("accuracy", "Accuracy per configuration (dot: accuracy; bar: 95% Wilson interval)",
                 (0.0, 1.0), (-0.7, max(len(rows), 1) - 0.3), xlabel="accuracy", ylabel="", xpercent=True,
                 height=height, ycategories=[row[0] for row in reversed(rows)], left=180, width=1050, right=60)
    colors = _colors(runs)
    for i, (name, acc, low, high) in enumerate(rows):
        text = f"{acc:.1%}" + (f" [{low:.1%}, {high:.1%}]" if low is not None else "")
        plot.interval(len(rows) - 1 - i, acc, low, high, colors[name], text)
    if not rows:
        plot.note("no accuracy was measured")
    return plot.svg()


def plot_kv_timeline(run: Mapping[str, Any], color: str) -> str:
    timelines = run.get("timelines") or {}
    kv = [(float(t), float(v)) for t, v in timelines.get("kv_cache_usage") or [] if _num(t) is not None and _num(v) is not None]
    xmax = max([t for t, _ in kv] + [_num(run.get("duration")) or 0.0, 1e-3])
    xmin = min([t for t, _ in kv] + [0.0])
    plot = _Plot("kv-timeline", f"KV-cache usage over time: {run_name(run)}", (xmin, xmax), (0.0, 1.0),
                 xlabel="time since run start (s)", ylabel="KV-cache usage", ypercent=True)
    if kv:
        plot.polyline(kv, color, label="KV-cache usage", fill=True)
        waiting = [(float(t), float(v)) for t, v in timelines.get("num_requests_waiting") or [] if _num(v) is not None]
        peak = max((v for _, v in waiting), default=0.0)
        if peak > 0:
            # Waiting requests share the chart, scaled so their peak touches the top.
            plot.polyline([(t, v / peak) for t, v in waiting], "#444444", width=1.2, dash="4 3",
                          label=f"waiting requests (peak {peak:.0f})")
    else:
        plot.note("no KV-cache samples (the engine exposed no /metrics)")
    return plot.svg()


def plot_latency_cdf(runs: Sequence[Mapping[str, Any]], metric: str) -> str:
    labels = {"ttft": "TTFT: time to first token", "ttfvt": "TTFVT: time to first visible token", "e2e": "E2E latency"}
    series = [(run_name(r), latencies(r, metric)) for r in runs]
    values = [v for _, vs in series for v in vs]
    xmax = max(values, default=1.0)
    plot = _Plot(f"cdf-{metric}", f"CDF of {labels[metric]}", (0.0, xmax * 1.02 if xmax > 0 else 1.0), (0.0, 1.0),
                 xlabel="seconds", ylabel="fraction of requests", ypercent=True)
    colors = _colors(runs)
    for name, vs in series:
        if not vs:
            continue
        n = len(vs)
        points = [(0.0, 0.0)] if vs[0] > 0 else []
        for i, v in enumerate(vs):  # a step per request
            points.append((v, i / n))
            points.append((v, (i + 1) / n))
        plot.polyline(points, colors[name], label=name)
    if not values:
        plot.note(f"no request reported a {metric.upper()}")
    return plot.svg()


def _difficulty_groups(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    values = sorted({float(r.get("difficulty") or 0.0) for r in records})
    if len(values) <= 6:
        return [(f"difficulty {v:g}", [r for r in records if float(r.get("difficulty") or 0.0) == v]) for v in values]
    # Many levels: four groups with roughly equal numbers of distinct levels.
    cuts = [values[int(len(values) * q / 4)] for q in range(1, 4)]
    bounds = [-math.inf, *cuts, math.inf]
    groups = []
    for lo, hi in zip(bounds, bounds[1:]):
        members = [r for r in records if lo <= float(r.get("difficulty") or 0.0) < hi]
        if members:
            lo_text = f"{min(float(r.get('difficulty') or 0) for r in members):g}"
            hi_text = f"{max(float(r.get('difficulty') or 0) for r in members):g}"
            groups.append((f"difficulty {lo_text}-{hi_text}", members))
    return groups


def plot_length_histogram(run: Mapping[str, Any], by: str) -> str:
    records = [r for r in run.get("records") or [] if _ok(r)]
    if by == "difficulty":
        groups = _difficulty_groups(records)
    else:
        names = sorted({str(r.get("domain") or "?") for r in records})
        groups = [(name, [r for r in records if str(r.get("domain") or "?") == name]) for name in names]
    lengths = [float(r.get("output_tokens") or 0) for r in records]
    top = max(lengths, default=1.0) or 1.0
    bins = 20
    width = top / bins
    counts_by_group = []
    for label, members in groups:
        counts = [0] * bins
        for r in members:
            counts[min(int(float(r.get("output_tokens") or 0) / width), bins - 1)] += 1
        counts_by_group.append((label, counts))
    ymax = max((c for _, cs in counts_by_group for c in cs), default=1)
    plot = _Plot(f"length-by-{by}", f"Output length by {by}: {run_name(run)}", (0.0, top), (0.0, ymax * 1.1 or 1.0),
                 xlabel="output tokens (reasoning included)", ylabel="requests")
    for i, (label, counts) in enumerate(counts_by_group):
        color = PALETTE[i % len(PALETTE)]
        # Outlined steps overlay readably where filled bars would hide each other.
        points: list[tuple[float, float]] = [(0.0, 0.0)]
        for b, c in enumerate(counts):
            points.extend([(b * width, c), ((b + 1) * width, c)])
        points.append((top, 0.0))
        plot.polyline(points, color, label=f"{label} (n={sum(counts)})", fill=True)
    if not records:
        plot.note("no completed request")
    return plot.svg()


# --------------------------------------------------------------------------- the HTML page

_CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff;max-width:1140px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px;margin-bottom:8px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:bold;border-radius:3px;padding:1px 6px;color:#fff}
.holds,.passed,.compared{background:#1b7f3b}.fails,.failed,.error{background:#b42318}
.flagged,.improved,.kept{background:#b26b00}.skipped,.xfail{background:#6b7280}
.created,.updated,.rewritten{background:#0072B2}
.grid-plots{display:flex;flex-wrap:wrap;gap:10px}
svg.plot{border:1px solid #e5e7eb;background:#fff}
svg .grid{stroke:#eceff3;stroke-width:1} svg .frame{fill:none;stroke:#9ca3af;stroke-width:1}
svg .tick{font-size:11px;fill:#374151} svg .axis{font-size:12px;fill:#111827}
svg .title{font-size:13px;font-weight:bold;fill:#111827} svg .legend{font-size:11px;fill:#111827}
svg .note{font-size:13px;fill:#6b7280}
pre{white-space:pre-wrap;font-size:11.5px;margin:0}
"""


def _overview_table(runs: Sequence[Mapping[str, Any]]) -> str:
    head = ["configuration", "preset", "workload", "requests", "ok", "accuracy [95% CI]", "TTFT p50", "TTFVT p50",
            "E2E p50", "E2E p90", "out tok/s", "KV mean", "KV peak", "peak waiting"]
    rows = []
    colors = _colors(runs)
    for r in runs:
        s = r.get("summary") or {}
        acc = _pct(s.get("accuracy"))
        if _num(s.get("accuracy_low")) is not None:
            acc += f" [{_pct(s.get('accuracy_low'))}, {_pct(s.get('accuracy_high'))}]"
        name = run_name(r)
        swatch = f'<span style="display:inline-block;width:10px;height:10px;background:{colors[name]};margin-right:6px"></span>'
        cells = [swatch + _esc(name) + (' <span class="verdict failed">run failed</span>' if r.get("error") else ""),
                 _esc(r.get("preset", "")), _esc(r.get("workload", ""))]
        nums = [_fmt(s.get("requests"), "{:.0f}"), _fmt(s.get("completed"), "{:.0f}"), acc,
                _fmt(s.get("ttft_p50")) + " s", _fmt(s.get("ttfvt_p50")) + " s", _fmt(s.get("e2e_p50")) + " s",
                _fmt(s.get("e2e_p90")) + " s", _fmt(s.get("output_throughput"), "{:.0f}"),
                _pct(s.get("kv_cache_usage_mean")), _pct(s.get("kv_cache_usage_peak")),
                _fmt(s.get("num_requests_waiting_peak"), "{:.0f}")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "".join(f'<td class="num">{_esc(c)}</td>' for c in nums) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>") if rows else "<p>No run.</p>"


def _findings_table(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return "<p>No finding was checked in this session.</p>"
    rows = []
    for f in findings:
        verdict = str(f.get("verdict", "?"))
        rows.append(
            f"<tr><td>{_esc(f.get('claim', ''))}<br><small>{_esc(f.get('nodeid', ''))}</small></td>"
            f'<td><span class="verdict {_esc(verdict)}">{_esc(verdict)}</span></td>'
            f"<td><pre>{_esc(f.get('evidence', ''))}</pre></td></tr>"
        )
    return "<table><tr><th>claim</th><th>verdict</th><th>evidence</th></tr>" + "".join(rows) + "</table>"


def _checks_table(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return "<p>No baseline check ran.</p>"
    rows = []
    for c in checks:
        action = c.get("action", "compared")
        status = "failed" if c.get("failed") else "flagged" if c.get("flagged") else "passed" if action == "compared" else action
        notable = [m for m in c.get("metrics") or [] if m.get("status") != "pass" or m.get("updated")]
        detail = "\n".join(
            f"{m.get('metric')}: {m.get('status')} baseline={_fmt(m.get('baseline'), '{:.6g}')} "
            f"obtained={m.get('obtained_text') or '-'} allowed={m.get('allowed', '-')}" for m in notable
        ) or f"{len(c.get('metrics') or [])} metrics within tolerance"
        if c.get("action") in ("no-baseline", "unreadable"):
            detail = (c.get("message") or "").split("\n")[0]
        rows.append(f"<tr><td>{_esc(c.get('nodeid', ''))}<br><small>{_esc(c.get('path', ''))}</small></td>"
                    f'<td><span class="verdict {_esc(status)}">{_esc(status)}</span></td><td><pre>{_esc(detail)}</pre></td></tr>')
    return "<table><tr><th>test (baseline file)</th><th>result</th><th>metrics out of tolerance</th></tr>" + "".join(rows) + "</table>"


def render_html(runs: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]] = (),
                meta: Mapping[str, Any] | None = None, findings: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole report as one HTML string (no external resource of any kind)."""
    meta = dict(meta or {})
    colors = _colors(runs)
    meta_line = " · ".join(f"{_esc(k)}: {_esc(v)}" for k, v in sorted(meta.items()) if isinstance(v, (str, int, float)))
    with_records = [r for r in runs if r.get("records")]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>pytest-rllm report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pytest-rllm: reasoning-LLM serving report</h1>",
        f'<div class="meta">{meta_line}</div>',
        "<h2>Findings</h2>", _findings_table(findings),
        "<h2>Configurations</h2>", _overview_table(runs),
        "<h2>Baseline checks</h2>", _checks_table(checks),
        "<h2>Accuracy</h2>", '<div class="grid-plots">', plot_accuracy(runs), "</div>",
        "<h2>KV-cache usage over time</h2>", '<div class="grid-plots">',
        *[plot_kv_timeline(r, colors[run_name(r)]) for r in runs],
        "</div>",
        "<h2>Latency distributions</h2>", '<div class="grid-plots">',
        *[plot_latency_cdf(with_records, m) for m in ("ttft", "ttfvt", "e2e")],
        "</div>",
        "<h2>Output length by difficulty and by domain</h2>", '<div class="grid-plots">',
        *[plot_length_histogram(r, by) for r in with_records for by in ("difficulty", "domain")],
        "</div>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_html_report(path: str | os.PathLike[str], runs: Sequence[Mapping[str, Any]],
                      checks: Sequence[Mapping[str, Any]] = (), meta: Mapping[str, Any] | None = None,
                      findings: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Render and write the HTML report atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_html(runs, checks, meta, findings))
    return path


# Re-exported so the plugin needs one import for the user-property key.
CHECK_PROPERTY = USER_PROPERTY  # the same key: properties.CHECK_PROPERTY
