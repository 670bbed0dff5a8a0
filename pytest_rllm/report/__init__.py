"""Reports from plain data: terminal summary lines, the JSON report, the HTML report, JUnit properties.

Everything renders from dicts (a run is ``RunResult.to_dict()``: name, preset,
workload, records, timelines, summary; a check is ``CheckOutcome.to_dict()``),
so the xdist controller can render what its workers sent, and so can anyone
holding an old JSON report.

Modules: ``terminal`` (summary lines), ``header`` (report header lines),
``jsonio`` (JSON write, read, merge, xdist parts), ``files`` (the report files
written at session end), ``junit`` (JUnit properties), ``html`` and ``plots``
(the HTML page), ``findings`` (rows read from test reports), ``benchmark``
(pytest-benchmark export), ``values`` (shared helpers).

Names are re-exported lazily: pytest imports the plugin on every run, and
baseline_outcome imports pytest_rllm.properties while the report modules import baseline_outcome,
so loading them all here would be slow and circular.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it.
_HOME = {
    "CHECK_PROPERTY": "pytest_rllm.properties", "CLAIM_PROPERTY": "pytest_rllm.properties",
    "EVIDENCE_PROPERTY": "pytest_rllm.properties", "FINDING_PROPERTY": "pytest_rllm.properties",
    "latencies": "values", "run_name": "values",
    "check_lines": "terminal", "run_line": "terminal", "summary_lines": "terminal", "section_lines": "terminal",
    "header_lines": "header",
    "REPORT_SCHEMA_VERSION": "jsonio", "merge_reports": "jsonio", "read_json_report": "jsonio",
    "write_json_report": "jsonio", "merge_worker_parts": "jsonio", "write_worker_part": "jsonio",
    "report_meta": "files", "write_reports": "files",
    "KEY_METRICS": "junit", "junit_properties": "junit",
    "export_benchmark_json": "benchmark",
    "checks_from_user_properties": "findings", "expected_failure": "findings", "finding": "findings",
    "finding_from_report": "findings",
    "PALETTE": "plots", "plot_accuracy": "plots", "plot_kv_timeline": "plots", "plot_latency_cdf": "plots",
    "plot_length_histogram": "plots",
    "render_html": "html", "write_html_report": "html",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))

