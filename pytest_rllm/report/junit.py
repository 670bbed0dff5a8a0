"""Key metrics as JUnit XML properties, for CI dashboards."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pytest_rllm.report.values import num

# The metrics that CI dashboards get (JUnit properties, one line per run).
KEY_METRICS = (
    "requests", "completed", "failed", "accuracy", "accuracy_low", "accuracy_high",
    "ttft_p50", "ttfvt_p50", "ttfvt_p90", "e2e_p50", "e2e_p90", "tpot_p50",
    "output_throughput", "request_throughput", "goodput",
    "kv_cache_usage_mean", "kv_cache_usage_peak", "num_requests_waiting_peak",
)


def junit_properties(name: str, summary: Mapping[str, Any], metrics: Sequence[str] = KEY_METRICS) -> list[tuple[str, float]]:
    """(f"rllm.{name}.{metric}", value) pairs for item.user_properties: JUnit XML carries them to CI dashboards."""
    out = []
    for metric in metrics:
        value = num(summary.get(metric))
        if value is not None:
            out.append((f"rllm.{name}.{metric}", float(f"{value:.6g}")))
    return out
