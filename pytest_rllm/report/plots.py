"""The report's plots as inline SVG: accuracy with intervals, KV-cache usage over time, latency CDFs, output lengths."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

from pytest_rllm.report.values import is_ok as _ok
from pytest_rllm.report.values import latencies, num as _num, run_name

# Okabe-Ito, then two neutrals: distinguishable with the common colour blindnesses.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#7F7F7F")


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
