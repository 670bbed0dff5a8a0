"""Workloads: what is sent (data sets) and when (arrival processes, the driver).

    from pytest_rllm.workloads import load_items, expand_repeats, parse_arrival, drive

    items = load_items(settings.dataset, num_prompts=settings.num_prompts, seed=settings.seed)
    jobs = expand_repeats(items, settings.repeats)
    spec = parse_arrival(settings.arrival)
    result = await drive(jobs, spec.offsets(len(jobs), settings.seed), send,
                         max_concurrency=spec.cap(settings.max_concurrency),
                         run_timeout=settings.run_timeout)

Names are resolved lazily: importing this package (as procedural.py's users
do) must not pull numpy or anything heavier.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArrivalSpec": "arrivals",
    "parse_arrival": "arrivals",
    "DriveResult": "driver",
    "drive": "driver",
    "DatasetError": "dataset_errors",
    "DatasetUnavailable": "dataset_errors",
    "expand_repeats": "datasets",
    "load_items": "datasets",
    "load_jsonl": "dataset_files",
    "shared_prefix": "datasets",
    "with_shared_prefix": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
