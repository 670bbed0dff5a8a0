"""Values every report form reads from run dicts: finite numbers, their text, run names, per-request latencies."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

# Where each latency ends; they all start when the request was sent.
_LATENCY_END = {"ttft": "t_first_token", "ttfvt": "t_first_visible", "e2e": "t_done"}


def num(value: Any) -> float | None:
    """A finite float, or None (JSON turns NaN into null)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(value: Any, spec: str = "{:.3g}") -> str:
    v = num(value)
    return "-" if v is None else spec.format(v)


def pct(value: Any) -> str:
    return fmt(value, "{:.1%}")


def accuracy_text(summary: Mapping[str, Any]) -> str:
    """Accuracy with its interval when there is one: "62.0% [50.0%, 73.0%]"."""
    text = pct(summary.get("accuracy"))
    if num(summary.get("accuracy_low")) is not None:
        text += f" [{pct(summary.get('accuracy_low'))}, {pct(summary.get('accuracy_high'))}]"
    return text


def run_name(run: Mapping[str, Any]) -> str:
    return str(run.get("name") or f"{run.get('label', run.get('preset', '?'))}/{run.get('workload', '?')}")


def is_ok(record: Mapping[str, Any]) -> bool:
    return record.get("error") is None and record.get("t_done") is not None


def latency(record: Mapping[str, Any], name: str) -> float | None:
    sent = num(record.get("t_sent"))
    end = num(record.get(_LATENCY_END[name]))
    if sent is None or end is None:
        return None
    return end - sent


def latencies(run: Mapping[str, Any], name: str) -> list[float]:
    """The run's `name` latencies (ttft, ttfvt or e2e) of completed requests, ascending."""
    return sorted(v for r in run.get("records") or [] if is_ok(r) for v in [latency(r, name)] if v is not None)


def engine_identities(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct engine identity among the runs, first-seen order: {"identity", "text", "runs"}.

    A run recorded before identities existed gives what its "engine" text says; one with neither is left out.
    """
    from pytest_rllm.engines.identity import identity_of

    groups: dict[Any, dict[str, Any]] = {}
    for run in runs:
        identity = identity_of(run.get("engine"))
        if not identity.known:
            continue
        group = groups.setdefault(identity, {"identity": identity.to_dict(), "text": identity.text, "runs": []})
        group["runs"].append(run_name(run))
    return list(groups.values())
