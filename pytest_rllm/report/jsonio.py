"""The JSON report: every run with its records and timelines, every baseline check, the engines, and the session's meta.

xdist workers each write a part with write_json_report; the controller reads
them back with read_json_report and joins them with merge_reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pytest_rllm.baseline_store import atomic_write_text
from pytest_rllm.report.values import engine_identities, run_name
from pytest_rllm.results import json_safe

REPORT_SCHEMA_VERSION = 1


def write_json_report(path: str | os.PathLike[str], runs: Sequence[Mapping[str, Any]],
                      checks: Sequence[Mapping[str, Any]] = (), meta: Mapping[str, Any] | None = None,
                      ab: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Every run with its records and timelines, every baseline check, and `meta`; written atomically.

    "engines" lists each distinct engine identity with the runs it served (each run carries its own too).
    "ab": the candidate engine's A/B rows (candidate.ABRow.to_dict() with both engines' names), when one was compared.
    """
    path = Path(path)
    data = {"schema_version": REPORT_SCHEMA_VERSION, "meta": dict(meta or {}), "runs": list(runs), "checks": list(checks),
            "engines": engine_identities(runs)}
    if ab:
        data["ab"] = [dict(row) for row in ab]
    atomic_write_text(path, json.dumps(json_safe(data), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


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
    return {"schema_version": REPORT_SCHEMA_VERSION, "meta": dict(meta or {}), "runs": runs, "checks": checks,
            "engines": engine_identities(runs)}


def write_worker_part(parts_dir: str | os.PathLike[str], worker: str, runs: Sequence[Mapping[str, Any]],
                      timings: Mapping[str, Any]) -> Path:
    """xdist worker: its runs and engine timings, as <worker>.json in the controller's parts folder."""
    return write_json_report(Path(parts_dir) / f"{worker}.json", runs, [], {"timings": timings})


def merge_worker_parts(runs: list[dict[str, Any]], timings: list[dict[str, Any]],
                       parts_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """xdist controller: the runs of every worker's part joined to `runs` by merge_reports, and each part's timings."""
    parts = [read_json_report(part) for part in sorted(parts_dir.glob("*.json"))]
    merged = merge_reports([{"runs": runs}, *parts])
    return merged["runs"], [*timings, *[(part.get("meta") or {}).get("timings") or {} for part in parts]]
