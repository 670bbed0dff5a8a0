"""PluginState: what one pytest run of the plugin holds, in one object on config.stash.

It is also registered as a plugin, so the hooks that gather results (test reports,
FindingFlag warnings) reach it without a module global; on the xdist controller
they see every worker's reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

Pair = tuple[str, str]


@dataclass
class PluginState:
    """The plan, the baseline-check outcomes, the findings rows, the flags and the merged result."""

    plan: list[Pair] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, str]] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)  # nodeid -> FindingFlag messages
    ab_rows: list[dict[str, Any]] = field(default_factory=list)  # candidate engine A/B rows, one per (run, metric)
    session: Any = None  # the RllmSession, once a test asked for one
    candidate: Any = None  # the candidate_engine.CandidateComparisons, once a test asked for it
    merged: dict[str, Any] | None = None  # runs, checks, findings, timings: set at session finish
    started: float = field(default_factory=time.perf_counter)

    def plan_runs(self, pairs: list[Pair]) -> None:
        self.plan.extend(pair for pair in pairs if pair not in self.plan)

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        from pytest_rllm import FindingFlag

        category = getattr(warning_message, "category", None)
        if isinstance(category, type) and issubclass(category, FindingFlag):
            self.flags.setdefault(nodeid, []).append(str(warning_message.message))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Runs on the xdist controller too: baseline outcomes and findings arrive in user_properties."""
        from pytest_rllm.baseline_outcome import outcomes_from_user_properties
        from pytest_rllm.properties import AB_PROPERTY
        from pytest_rllm.report import expected_failure, finding_from_report

        if not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        outcomes = outcomes_from_user_properties(report.user_properties)
        xfail = expected_failure(report)
        if xfail is not None:
            # An expected failure (a known engine issue): reported as such, not as a failed check.
            for outcome in outcomes:
                outcome["xfail"] = xfail or "expected failure"
        self.checks.extend(outcomes)
        # Flags are recorded after the report (the warnings plugin reports at the end
        # of the test's protocol): they are joined in by findings_with_flags().
        row = finding_from_report(report)
        if row is not None:
            self.findings.append(row)
        self.add_ab_rows(v for k, v in report.user_properties if k == AB_PROPERTY)

    def add_ab_rows(self, rows: Any) -> None:
        """A/B rows (dicts), from any test that read a comparison: the last one per (run, metric) is kept."""
        for row in rows:
            if not isinstance(row, dict):
                continue
            key = (row.get("run"), row.get("metric"))
            self.ab_rows = [r for r in self.ab_rows if (r.get("run"), r.get("metric")) != key] + [row]

    def findings_with_flags(self) -> list[dict[str, str]]:
        out = []
        for row in self.findings:
            messages = self.flags.get(row["nodeid"], [])
            if messages:
                row = dict(row)
                if row["verdict"] == "holds":
                    row["verdict"] = "flagged"
                row["evidence"] = "\n".join([row.get("evidence") or ""] + [f"flag: {m}" for m in messages]).strip()
            out.append(row)
        return out


STATE_KEY = pytest.StashKey[PluginState]()


def install(config: pytest.Config) -> PluginState:
    state = PluginState()
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "rllm-state")
    return state


def state_of(config: pytest.Config) -> PluginState | None:
    return config.stash.get(STATE_KEY, None)
