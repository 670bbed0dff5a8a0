"""Loaders for the shipped lm-eval tasks: JSONL next to this file, no hub, no cache writes.

lm-eval imports this file by path (``custom_dataset: !function rllm_data.<name>``)
and calls the loader with the task's metadata as keyword arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def rows(name: str) -> list[dict[str, Any]]:
    with open(HERE / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def procedural(**_: Any) -> dict[str, Any]:
    import datasets  # lm-eval's own dependency; only present when lm-eval is

    # from_list keeps everything in memory: nothing is written to the datasets cache.
    return {"test": datasets.Dataset.from_list(rows("rllm_procedural"))}
