"""A RunResult as JSON and back, losing nothing a check reads: the JSON report's runs and the run store's entries.

Times are written relative to the run's start, so a run read back starts at 0;
every check reads differences of times, never the clock itself. The summary is
written for readers of the file and computed again from the records on reading,
so a re-check judges what was measured, not a number someone edited.
"""

from __future__ import annotations

from typing import Any, Mapping

from pytest_rllm.records import RequestRecord
from pytest_rllm.results import RunResult, json_safe

_RECORD_TIMES = ("t_scheduled", "t_sent", "t_first_token", "t_first_visible", "t_done")


def run_to_dict(run: RunResult, *, digits: int | None = None) -> dict[str, Any]:
    t0 = run.t_start

    def rel(x: float | None) -> float | None:
        if x is None:
            return None
        return x - t0 if digits is None else round(x - t0, digits)

    records = []
    for r in run.records:
        d = r.to_dict()
        for name in _RECORD_TIMES:
            d[name] = rel(d[name])
        d["token_times"] = [rel(t) for t in r.token_times]
        records.append(d)
    return {
        "label": run.label,
        "workload": run.workload,
        "name": run.key,
        "preset": run.engine.get("preset", run.label),
        "engine": run.engine,
        "workload_config": run.workload_config,
        "duration": run.t_end - run.t_start,
        "error": run.error,
        "engine_died": run.engine_died,
        "trial": run.trial,
        "reused": run.reused,
        "generated": run.generated,
        "store_key": run.store_key,
        "slo": dict(run.slo),
        "counters_start": json_safe(run.counters_start),
        "counters_end": json_safe(run.counters_end),
        "records": records,
        "timelines": {k: [[rel(t), v] for t, v in pts] for k, pts in run.timelines.items()},
        "host": json_safe(run.host),
        "summary": json_safe(run.summary()),
        # Each trial whole (its own summary and host load, so run-to-run spread can be read back: compare CLI).
        "trials": [run_to_dict(t, digits=digits) for t in run.trials],
    }


def run_from_dict(data: Mapping[str, Any]) -> RunResult:
    """The RunResult run_to_dict wrote; raises ValueError, naming the field, on anything else."""
    try:
        records = [RequestRecord.from_dict(dict(r)) for r in data["records"]]
        timelines = {str(k): [(float(t), float(v)) for t, v in pts] for k, pts in (data.get("timelines") or {}).items()}
        run = RunResult(
            label=str(data["label"]), workload=str(data["workload"]), records=records, timelines=timelines,
            t_start=0.0, t_end=float(data["duration"]),
            counters_start={str(k): float(v) for k, v in (data.get("counters_start") or {}).items() if v is not None},
            counters_end={str(k): float(v) for k, v in (data.get("counters_end") or {}).items() if v is not None},
            engine=dict(data.get("engine") or {}), workload_config=dict(data.get("workload_config") or {}),
            slo={str(k): float(v) for k, v in (data.get("slo") or {}).items()},
            error=data.get("error"), trial=int(data.get("trial") or 0),
            host={str(k): float(v) for k, v in (data.get("host") or {}).items() if v is not None},
            trials=[run_from_dict(t) for t in data.get("trials") or []],
            engine_died=bool(data.get("engine_died")), reused=data.get("reused"),
            generated=str(data.get("generated") or ""), store_key=dict(data.get("store_key") or {}),
        )
    except KeyError as exc:
        raise ValueError(f"a run without its {exc.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"a run whose fields do not read back: {type(exc).__name__}: {exc}") from None
    return run
