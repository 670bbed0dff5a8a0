"""Per-request latencies in pytest-benchmark's JSON format, so its `compare` command and dashboards read them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from pytest_rllm.baseline_store import atomic_write_text
from pytest_rllm.report.values import latencies, num, run_name
from pytest_rllm.results import json_safe


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
                "extra_info": {k: v for k, v in (run.get("summary") or {}).items() if num(v) is not None},
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
    atomic_write_text(path, json.dumps(json_safe(doc), indent=2, sort_keys=True) + "\n")
    return path
