"""Local data set files (``--rllm-dataset NAME=PATH.jsonl``), one item per line.

    items = load_jsonl("my_set.jsonl", name="mine")
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from pytest_rllm.records import GRADERS, Item
from pytest_rllm.workloads.dataset_errors import DatasetError
from pytest_rllm.workloads.jsonl import json_object

JSONL_FIELDS = ("id", "prompt", "reference", "domain", "difficulty", "grader")
_LABELS = {"easy": 1.0, "medium": 2.0, "hard": 3.0, "expert": 4.0}


def load_jsonl(path: str | os.PathLike[str], *, name: str) -> list[Item]:
    """Items from a JSONL file: one object per non-blank line.

    Fields: ``prompt`` (text, required), ``reference`` (text or number,
    required), ``id`` (default NAME/LINE), ``domain`` (default "general"),
    ``difficulty`` (a number, "level N", or easy/medium/hard/expert; default 0),
    ``grader`` (one of GRADERS; default "math"). Other fields go to the item's
    metadata. Every error names the file, the line and the field.
    """
    shown = str(path)
    try:
        with open(os.path.expanduser(str(path)), encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise DatasetError(f"data set {name!r}: file {shown} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"data set {name!r}: file {shown} is not UTF-8 text ({exc.reason})") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            items.append(_jsonl_item(line, name=name, where=f"{shown}, line {number}", number=number))
    if not items:
        raise DatasetError(f"data set {name!r}: file {shown} has no items (expected one JSON object per line)")
    return items


def _jsonl_item(line: str, *, name: str, where: str, number: int) -> Item:
    row = json_object(line, where, "a JSON object with fields 'prompt' and 'reference'", DatasetError)

    def text(field: str, default: str | None = None, numbers: bool = False) -> str:
        if field not in row or row[field] is None:
            if default is None:
                raise DatasetError(f"{where}: field {field!r} is missing")
            return default
        value = row[field]
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            kind = "text or a number" if numbers else "non-empty text"
            raise DatasetError(f"{where}: field {field!r} must be {kind}, got {value!r}")
        return value

    prompt = text("prompt")
    reference = text("reference", numbers=True)
    item_id = text("id", default=f"{name}/{number}", numbers=True)
    domain = text("domain", default="general")
    grader = text("grader", default="math")
    if grader not in GRADERS:
        raise DatasetError(f"{where}: field 'grader' must be one of {', '.join(GRADERS)}, got {grader!r}")
    difficulty = _difficulty(row.get("difficulty"), where)
    extra = {k: _freeze(v) for k, v in row.items() if k not in JSONL_FIELDS}
    return Item(
        id=item_id,
        domain=domain,
        difficulty=difficulty,
        prompt=prompt,
        reference=reference,
        grader=grader,
        dataset=name,
        metadata=tuple(sorted(extra.items())),
    )


def _difficulty(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        label = value.strip().lower()
        if label in _LABELS:
            return _LABELS[label]
        match = re.fullmatch(r"(?:level\s*)?([0-9]+(?:\.[0-9]+)?)", label)
        if match:
            return float(match.group(1))
    raise DatasetError(
        f"{where}: field 'difficulty' must be a number, 'level N' or one of {', '.join(_LABELS)}, got {value!r}"
    )


def _freeze(value: Any) -> Any:
    # Item is frozen and hashed; JSON lists and objects become tuples.
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


__all__ = ["JSONL_FIELDS", "load_jsonl"]
