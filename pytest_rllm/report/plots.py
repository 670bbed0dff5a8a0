"""The report's plots, drawn by matplotlib's SVG backend and inlined in the page as <svg> elements.

Plots: accuracy with intervals per configuration, KV-cache usage over time per
configuration, latency CDFs (TTFT, TTFVT, E2E), output-length histograms by
difficulty and by domain.

matplotlib is the `html` extra (pip install 'pytest-rllm[html]'). It is imported
only when a plot is drawn, so importing the report stays cheap; html.py checks
plotting_available() first and writes a page without plots when it is missing.
A Figure with its own FigureCanvasSVG is used, never pyplot, so no global
figure state is touched.
"""

from __future__ import annotations

import html
import importlib
import io
import math
import re
from typing import Any, Callable, Mapping, Sequence

from pytest_rllm.report.values import is_ok, latencies, num, run_name

# Okabe-Ito, then two neutrals: distinguishable with the common colour blindnesses.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#7F7F7F")
INSTALL_HINT = "pip install 'pytest-rllm[html]'"
WAITING_COLOR = "#444444"
NOTE_COLOR = "#6b7280"
# Pixels: matplotlib's SVG is 72 units per inch, so a figure of W/72 inches is W units wide.
PLOT_WIDTH, PLOT_HEIGHT = 520, 290
_STYLE = {
    "svg.fonttype": "none",  # text stays text: searchable, and the page stays small
    "text.parse_math": False,  # a "$" in a run name is not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#111827",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#eceff3",
    "xtick.color": "#374151",
    "ytick.color": "#374151",
    "lines.scale_dashes": False,  # dash lengths in pixels, whatever the line width
    "legend.frameon": False,
    "legend.fontsize": 8,
}
# None drops each default entry; with none left matplotlib writes no <metadata> (and none of its URLs).
_NO_METADATA = {"Format": None, "Type": None, "Creator": None, "Date": None}


def plotting_available() -> bool:
    """Whether matplotlib, the `html` extra, can be imported."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def run_colors(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each configuration's colour, the same in every plot and in the overview table."""
    return {run_name(r): PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chart(kind: str, title: str, draw: Callable[[Any], None], *, xlabel: str, ylabel: str = "",
           xpercent: bool = False, ypercent: bool = False, width: int = PLOT_WIDTH, height: int = PLOT_HEIGHT) -> str:
    """One chart as an inline <svg>: `draw(ax)` adds the marks (with labels for the legend) to a styled axes."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    # The salt makes element ids differ between the plots that share one page.
    with matplotlib.rc_context({**_STYLE, "svg.hashsalt": f"{kind}:{title}"}):
        fig = Figure(figsize=(width / 72, height / 72), dpi=72, layout="constrained")
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold", color="#111827")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        for axis, percent in ((ax.xaxis, xpercent), (ax.yaxis, ypercent)):
            if percent:
                axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        draw(ax)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # Above the axes, so no entry hides data; the layout makes room for it under the title.
            ax.legend(handles, [_short(label, 34) for label in labels], loc="lower left", bbox_to_anchor=(0.0, 1.0),
                      borderaxespad=0.2, ncols=max(1, min(len(handles), width // 170)))
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    return _inline_svg(buffer.getvalue(), kind, title)


def _inline_svg(document: str, kind: str, title: str) -> str:
    """matplotlib's SVG document as an element for the page: no XML prolog, no xlink namespace URL, our attributes."""
    root = re.search(r"<svg\b[^>]*>", document)
    box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', root.group(0)) if root else None
    if root is None or box is None:
        raise ValueError("matplotlib wrote no <svg> root with a viewBox")
    width, height = box.groups()
    # matplotlib's default style is a "*" rule: scoped, so it cannot restyle the rest of the page.
    body = document[root.end():].replace("*{stroke-linejoin", "svg.plot *{stroke-linejoin")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{html.escape(kind)}" role="img" '
        f'aria-label="{html.escape(title)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{html.escape(title)}</title>" + body.strip() + "\n"
    )


def _note(ax: Any, text: str) -> None:
    """A message in the middle of an empty chart."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color=NOTE_COLOR)


def _accuracy_rows(runs: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, float | None, float | None]]:
    """(name, accuracy, low, high) per run that measured accuracy; a Wilson interval where the run gave none."""
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        acc = num(s.get("accuracy"))
        if acc is None:
            continue
        low, high = num(s.get("accuracy_low")), num(s.get("accuracy_high"))
        if low is None or high is None:
            n = num(s.get("requests"))
            if n:
                from pytest_rllm.compare import wilson_interval

                low, high = wilson_interval(acc * n, int(n))
        rows.append((run_name(r), acc, low, high))
    return rows


def plot_accuracy(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = _accuracy_rows(runs)
    colors = run_colors(runs)

    def draw(ax: Any) -> None:
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.grid(False, axis="y")
        # Rows run top to bottom in the overview table's order: row i sits at y = len - 1 - i.
        ax.set_yticks(range(len(rows)), [_short(name, 22) for name, *_ in reversed(rows)])
        for i, (name, acc, low, high) in enumerate(rows):
            y, color = len(rows) - 1 - i, colors[name]
            if low is not None and high is not None:
                ax.errorbar([acc], [y], xerr=[[max(acc - low, 0.0)], [max(high - acc, 0.0)]], fmt="none",
                            ecolor=color, elinewidth=3, capsize=7, capthick=2)
            ax.plot([acc], [y], "o", color=color, markersize=12)
            text = f"{acc:.1%}" + (f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else "")
            ax.annotate(text, (high if high is not None else acc, y), xytext=(10, 0), textcoords="offset points",
                        va="center", color="#374151")
        if not rows:
            _note(ax, "no accuracy was measured")

    return _chart("accuracy", "Accuracy per configuration (dot: accuracy; bar: 95% Wilson interval)", draw,
                  xlabel="accuracy", xpercent=True, width=1050, height=100 + 34 * max(len(rows), 1))


def _points(series: Any) -> list[tuple[float, float]]:
    """(t, value) pairs of a timeline whose both coordinates are finite numbers."""
    return [(t, v) for t, v in ((num(t), num(v)) for t, v in series or []) if t is not None and v is not None]


def plot_kv_timeline(run: Mapping[str, Any], color: str) -> str:
    timelines = run.get("timelines") or {}
    kv = _points(timelines.get("kv_cache_usage"))
    waiting = _points(timelines.get("num_requests_waiting"))
    peak = max((v for _, v in waiting), default=0.0)

    def draw(ax: Any) -> None:
        ax.set_xlim(min([t for t, _ in kv] + [0.0]), max([t for t, _ in kv] + [num(run.get("duration")) or 0.0, 1e-3]))
        ax.set_ylim(0.0, 1.0)
        if not kv:
            _note(ax, "no KV-cache samples (the engine exposed no /metrics)")
            return
        times, usage = zip(*kv)
        ax.fill_between(times, usage, color=color, alpha=0.18, linewidth=0)
        ax.plot(times, usage, color=color, linewidth=2, label="KV-cache usage")
        if peak > 0:
            # Waiting requests share the chart, scaled so their peak touches the top.
            ax.plot([t for t, _ in waiting], [v / peak for _, v in waiting], color=WAITING_COLOR, linewidth=1.2,
                    linestyle=(0, (4, 3)), label=f"waiting requests (peak {peak:.0f})")

    return _chart("kv-timeline", f"KV-cache usage over time: {run_name(run)}", draw,
                  xlabel="time since run start (s)", ylabel="KV-cache usage", ypercent=True)


def plot_latency_cdf(runs: Sequence[Mapping[str, Any]], metric: str) -> str:
    labels = {"ttft": "TTFT: time to first token", "ttfvt": "TTFVT: time to first visible token", "e2e": "E2E latency"}
    series = [(run_name(r), latencies(r, metric)) for r in runs]
    xmax = max((v for _, vs in series for v in vs), default=0.0)
    colors = run_colors(runs)

    def draw(ax: Any) -> None:
        ax.set_xlim(0.0, xmax * 1.02 if xmax > 0 else 1.0)
        ax.set_ylim(0.0, 1.0)
        for name, vs in series:
            if not vs:
                continue
            n = len(vs)
            points = [(0.0, 0.0)] if vs[0] > 0 else []
            for i, v in enumerate(vs):  # a step per request
                points.extend([(v, i / n), (v, (i + 1) / n)])
            ax.plot(*zip(*points), color=colors[name], linewidth=2, label=name)
        if not any(vs for _, vs in series):
            _note(ax, f"no request reported a {metric.upper()}")

    return _chart(f"cdf-{metric}", f"CDF of {labels[metric]}", draw, xlabel="seconds", ylabel="fraction of requests",
                  ypercent=True)


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
    records = [r for r in run.get("records") or [] if is_ok(r)]
    if by == "difficulty":
        groups = _difficulty_groups(records)
    else:
        names = sorted({str(r.get("domain") or "?") for r in records})
        groups = [(name, [r for r in records if str(r.get("domain") or "?") == name]) for name in names]
    top = max((float(r.get("output_tokens") or 0) for r in records), default=1.0) or 1.0
    bins = 20
    width = top / bins
    counts_by_group = []
    for label, members in groups:
        counts = [0] * bins
        for r in members:
            counts[min(int(float(r.get("output_tokens") or 0) / width), bins - 1)] += 1
        counts_by_group.append((label, counts))
    ymax = max((c for _, cs in counts_by_group for c in cs), default=1)

    def draw(ax: Any) -> None:
        from matplotlib.ticker import MaxNLocator

        ax.set_xlim(0.0, top)
        ax.set_ylim(0.0, ymax * 1.1 or 1.0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of requests are whole
        edges = [b * width for b in range(bins + 1)]
        for i, (label, counts) in enumerate(counts_by_group):
            color = PALETTE[i % len(PALETTE)]
            # Outlined steps over a light fill overlay readably where filled bars would hide each other.
            ax.stairs(counts, edges, fill=True, color=color, alpha=0.18, linewidth=0)
            ax.stairs(counts, edges, color=color, linewidth=2, label=f"{label} (n={sum(counts)})")
        if not records:
            _note(ax, "no completed request")

    return _chart(f"length-by-{by}", f"Output length by {by}: {run_name(run)}", draw,
                  xlabel="output tokens (reasoning included)", ylabel="requests")
