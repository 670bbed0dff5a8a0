"""The report files a session writes at its end: --rllm-report (JSON) and --rllm-html, with the meta both carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pytest_rllm.hardware import hardware_key_for
from pytest_rllm.settings import RllmSettings


def report_meta(settings: RllmSettings, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the session measured with: model, engine, hardware and the workload knobs."""
    from pytest_rllm.engines.platform import engine_version_text

    model = settings.model
    if settings.endpoint:
        # The name the server served, as its runs recorded it (GET /v1/models).
        model = next((str(r["engine"]["model"]) for r in runs or () if (r.get("engine") or {}).get("model")), model)
    # No host name, URL credentials or API key: reports may be shared. Each run's
    # engine identity is in the run; the reports list the distinct ones (report/values.engine_identities).
    return {
        "model": model,
        "engine": "endpoint" if settings.endpoint else f"{settings.engine} ({engine_version_text()})",
        "hardware": hardware_key_for(settings),
        "dataset": ",".join(settings.dataset),
        "arrival": settings.arrival,
        "max_tokens": settings.max_tokens,
        "seed": settings.seed,
    }


def write_reports(settings: RllmSettings, merged: Mapping[str, Any]) -> None:
    """The JSON and HTML reports the options ask for, from the merged result; nothing when nothing ran or was checked."""
    runs, checks, findings, ab = merged["runs"], merged["checks"], merged["findings"], merged["ab"]
    if not (runs or checks or findings or ab):
        return
    meta = report_meta(settings, runs)
    from pytest_rllm.report.html import write_html_report
    from pytest_rllm.report.jsonio import write_json_report

    if settings.report:
        write_json_report(Path(settings.report), runs, checks, {**meta, "findings": findings, "timings": merged["timings"]}, ab=ab)
    if settings.html:
        write_html_report(Path(settings.html), runs, checks, meta, findings, ab=ab)
