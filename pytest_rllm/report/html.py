"""The HTML report: one self-contained file (inline CSS and SVG, no script, no CDN, no network).

Sections: findings, engines, configurations, baseline checks, then the plots (plots.py,
drawn with matplotlib, the `html` extra). Without matplotlib the page still has
every table, and says in place of the plots that they need
`pip install 'pytest-rllm[html]'`; write_html_report also warns.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from pytest_rllm.baseline_store import atomic_write_text
from pytest_rllm.report.plots import (
    INSTALL_HINT, plot_accuracy, plot_kv_timeline, plot_latency_cdf, plot_length_histogram, plotting_available, run_colors,
)
from pytest_rllm.report.values import accuracy_text, engine_identities, fmt as _fmt, pct as _pct, run_name

PLOTS_MISSING = f"No plots: drawing them needs matplotlib, which is not installed ({INSTALL_HINT})."


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


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
p.note{color:#6b7280}
pre{white-space:pre-wrap;font-size:11.5px;margin:0}
"""


def _preset_text(run: Mapping[str, Any]) -> str:
    """The run's preset, with the variant it ran as and its dtype where the run recorded them."""
    spec = (run.get("engine") or {}).get("spec") or {}
    text = str(run.get("preset", ""))
    if spec.get("variant"):
        text += f" ({spec['variant']})"
    return text + (f", {spec['dtype']}" if spec.get("dtype") else "")


def _overview_table(runs: Sequence[Mapping[str, Any]]) -> str:
    head = ["configuration", "preset", "workload", "requests", "ok", "accuracy [95% CI]", "TTFT p50", "TTFVT p50",
            "E2E p50", "E2E p90", "out tok/s", "KV mean", "KV peak", "peak waiting"]
    rows = []
    colors = run_colors(runs)
    for r in runs:
        s = r.get("summary") or {}
        name = run_name(r)
        swatch = f'<span style="display:inline-block;width:10px;height:10px;background:{colors[name]};margin-right:6px"></span>'
        cells = [swatch + _esc(name) + (' <span class="verdict failed">run failed</span>' if r.get("error") else ""),
                 _esc(_preset_text(r)), _esc(r.get("workload", ""))]
        nums = [_fmt(s.get("requests"), "{:.0f}"), _fmt(s.get("completed"), "{:.0f}"), accuracy_text(s),
                _fmt(s.get("ttft_p50")) + " s", _fmt(s.get("ttfvt_p50")) + " s", _fmt(s.get("e2e_p50")) + " s",
                _fmt(s.get("e2e_p90")) + " s", _fmt(s.get("output_throughput"), "{:.0f}"),
                _pct(s.get("kv_cache_usage_mean")), _pct(s.get("kv_cache_usage_peak")),
                _fmt(s.get("num_requests_waiting_peak"), "{:.0f}")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "".join(f'<td class="num">{_esc(c)}</td>' for c in nums) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>") if rows else "<p>No run.</p>"


def _engines_table(runs: Sequence[Mapping[str, Any]]) -> str:
    groups = engine_identities(runs)
    if not groups:
        return "<p>No run recorded its engine.</p>"
    head = ["engine", "version", "commit", "torch", "device", "driver", "configurations"]
    rows = []
    for g in groups:
        ident = g["identity"]
        cells = [ident.get("name"), ident.get("version"), ident.get("commit"), ident.get("torch"), ident.get("device"),
                 ident.get("driver") or "- (CPU)", ", ".join(g["runs"])]
        rows.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


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
        change = [str(c["engine_change"])] if c.get("engine_change") and status in ("failed", "flagged") else []
        detail = "\n".join(change + [
            f"{m.get('metric')}: {m.get('status')} baseline={_fmt(m.get('baseline'), '{:.6g}')} "
            f"obtained={m.get('obtained_text') or '-'} allowed={m.get('allowed', '-')}" for m in notable
        ]) or f"{len(c.get('metrics') or [])} metrics within tolerance"
        if c.get("action") in ("no-baseline", "unreadable"):
            detail = (c.get("message") or "").split("\n")[0]
        rows.append(f"<tr><td>{_esc(c.get('nodeid', ''))}<br><small>{_esc(c.get('path', ''))}</small></td>"
                    f'<td><span class="verdict {_esc(status)}">{_esc(status)}</span></td><td><pre>{_esc(detail)}</pre></td></tr>')
    return "<table><tr><th>test (baseline file)</th><th>result</th><th>metrics out of tolerance</th></tr>" + "".join(rows) + "</table>"


def _ab_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The candidate engine's A/B table: metric | reference | candidate | ratio [95% interval] | verdict."""
    from pytest_rllm.candidate import _effect_text, _value_text, row_from_dict

    first = rows[0]
    head = (f'<p class="meta">reference: {_esc(first.get("reference_engine", "?"))} · candidate: '
            f'{_esc(first.get("candidate_engine", "?"))} · {_esc(first.get("trials", "?"))} interleaved trials each</p>')
    body = []
    for data in rows:
        r = row_from_dict(data)
        verdict = {"same": "holds", "improved": "improved", "regressed": "fails", "inconclusive": "flagged"}.get(r.verdict, "skipped")
        tol = f"tol {r.tolerance}" + ("" if r.has_interval else ", no interval")
        body.append(f"<tr><td>{_esc(r.run)}</td><td>{_esc(r.metric)}</td>"
                    f'<td class="num">{_esc(_value_text(r.metric, r.reference))}</td>'
                    f'<td class="num">{_esc(_value_text(r.metric, r.candidate))}</td>'
                    f'<td class="num">{_esc(_effect_text(r))}</td>'
                    f'<td><span class="verdict {verdict}">{_esc(r.verdict)}</span> <small>{_esc(tol)}</small></td></tr>')
    return (head + "<table><tr><th>run</th><th>metric</th><th>reference</th><th>candidate</th>"
            "<th>ratio [95% interval]</th><th>verdict</th></tr>" + "".join(body) + "</table>")


def _plot_sections(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    colors = run_colors(runs)
    with_records = [r for r in runs if r.get("records")]
    return [
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
    ]


def render_html(runs: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]] = (),
                meta: Mapping[str, Any] | None = None, findings: Sequence[Mapping[str, Any]] = (),
                ab: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole report as one HTML string (no external resource of any kind)."""
    meta = dict(meta or {})
    meta_line = " · ".join(f"{_esc(k)}: {_esc(v)}" for k, v in sorted(meta.items()) if isinstance(v, (str, int, float)))
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>pytest-rllm report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pytest-rllm: reasoning-LLM serving report</h1>",
        f'<div class="meta">{meta_line}</div>',
        "<h2>Findings</h2>", _findings_table(findings),
        *(["<h2>Candidate engine: A/B</h2>", _ab_table(ab)] if ab else []),
        "<h2>Engines</h2>", _engines_table(runs),
        "<h2>Configurations</h2>", _overview_table(runs),
        "<h2>Baseline checks</h2>", _checks_table(checks),
        *(_plot_sections(runs) if plotting_available() else ["<h2>Plots</h2>", f'<p class="note">{_esc(PLOTS_MISSING)}</p>']),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_html_report(path: str | os.PathLike[str], runs: Sequence[Mapping[str, Any]],
                      checks: Sequence[Mapping[str, Any]] = (), meta: Mapping[str, Any] | None = None,
                      findings: Sequence[Mapping[str, Any]] = (), ab: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Render and write the HTML report atomically; returns its path. Warns when matplotlib is missing."""
    path = Path(path)
    if not plotting_available():
        warnings.warn(f"{PLOTS_MISSING} {path} has the tables only.", UserWarning, stacklevel=2)
    atomic_write_text(path, render_html(runs, checks, meta, findings, ab))
    return path
