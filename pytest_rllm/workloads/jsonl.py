"""One JSON Lines row, read with an error that names the file and line (data sets and arrival traces)."""

from __future__ import annotations

import json
from typing import Any


def json_object(line: str, where: str, expected: str = "a JSON object", error: type[ValueError] = ValueError) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise error(f"{where}: expected {expected}")
    return row
