"""PluginState: what one pytest run of the plugin holds, in one object on config.stash.

It is also registered as a plugin, so the hooks that gather results (test reports,
FindingFlag warnings) reach it without a module global; on the xdist controller
they see every worker's reports. At the session's end it merges the workers'
parts and hands the merged result to the report package.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_rllm.fixtures import needs_of
from pytest_rllm.parsers import SettingError
from pytest_rllm.properties import CLAIM_PROPERTY
from pytest_rllm.settings import RllmSettings

Pair = tuple[str, str]


@dataclass
class PluginState:
    """The settings, the plan, the baseline-check outcomes, the findings rows, the flags and the merged result."""

    settings: RllmSettings = field(default_factory=RllmSettings)  # the resolved --rllm-* options (install)
    plan: list[Pair] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, str]] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)  # nodeid -> FindingFlag messages
    ab_rows: list[dict[str, Any]] = field(default_factory=list)  # candidate engine A/B rows, one per (run, metric)
    session: Any = None  # the RllmSession, once a test asked for one
    candidate: Any = None  # the candidate_engine.CandidateComparisons, once a test asked for it
    merged: dict[str, Any] | None = None  # runs, checks, findings, timings: set at session finish
    parts_dir: str | None = None  # xdist controller: the folder its workers leave their runs in
    started: float = field(default_factory=time.perf_counter)
    # Names this pytest run in the run store: its xdist workers read each other's runs, not older sessions' (unless reused).
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def plan_runs(self, pairs: list[Pair]) -> None:
        self.plan.extend(pair for pair in pairs if pair not in self.plan)

    def plan_items(self, items: list[pytest.Item]) -> None:
        """The plan from what the items ask for: run fixtures (with their indirect parameters) and rllm_needs markers.

        Finding and baseline tests also get their claim, the first line of their docstring.
        """
        group_for_xdist = bool(items) and items[0].config.pluginmanager.hasplugin("xdist")
        for item in items:
            needs = needs_of(item, self.settings)
            self.plan_runs(needs)
            if group_for_xdist and needs and item.get_closest_marker("xdist_group") is None:
                # With --dist loadgroup, a configuration's tests go to one worker, which starts its engine;
                # a test that also reads baseline's runs gets them from the run store.
                item.add_marker(pytest.mark.xdist_group(configuration_group(needs)))
            if needs or "rllm_finding" in getattr(item, "fixturenames", ()):
                doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip()
                if doc:
                    item.user_properties.append((CLAIM_PROPERTY, doc.splitlines()[0]))

    def engine_identity(self) -> Any:
        """The EngineIdentity baselines record: what the session's baseline engine reported, else what is installed.

        An external server's version is known only once it answered; before that, and
        without a session, the local installation (or "unknown", for an endpoint) stands in.
        """
        from pytest_rllm.engines.identity import endpoint_identity, identity_of, local_identity

        infos = getattr(self.session, "engine_infos", None) or {}
        if "identity" in (infos.get("baseline") or {}):
            return identity_of(infos["baseline"])
        return endpoint_identity() if self.settings.endpoint else local_identity()

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

    # ----------------------------------------------------------------------- session end: xdist parts, merge, reports
    def worker_parts_dir(self) -> str:
        """xdist controller: the folder each worker leaves its runs in (made on first use, removed by merge)."""
        import tempfile

        if self.parts_dir is None:
            self.parts_dir = tempfile.mkdtemp(prefix="rllm-parts-")
        return self.parts_dir

    def local_runs(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """This process's runs (as dicts) and engine timings: the session's, and the candidate engine's."""
        if self.session is None:
            return [], {}
        timings = vars(self.session.timings).copy()
        runs = list(self.session.runs)
        if self.candidate is not None:
            # The candidate's runs are named <preset>@candidate/<workload>; its engine time joins the session's.
            runs += self.candidate.session.runs
            for name in ("engine_start", "generation", "engine_stop", "warm_up", "engines_started", "engines_started_ahead"):
                timings[name] = timings.get(name, 0) + getattr(self.candidate.session.timings, name, 0)
        return [run.to_dict() for run in runs], timings

    def merge(self, runs: list[dict[str, Any]], timings: list[dict[str, Any]]) -> dict[str, Any]:
        """xdist controller (or no xdist): its runs joined with every worker's part, and every outcome gathered."""
        if self.parts_dir:
            import shutil
            from pathlib import Path

            from pytest_rllm.report.jsonio import merge_worker_parts

            runs, timings = merge_worker_parts(runs, timings, Path(self.parts_dir))
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        return {"runs": runs, "checks": self.checks, "findings": self.findings_with_flags(), "timings": timings,
                "ab": list(self.ab_rows)}

    def finish(self, workerinput: dict[str, Any] | None) -> None:
        """Session end: an xdist worker leaves its runs for the controller; the controller merges and writes the reports."""
        runs, timings = self.local_runs()
        if workerinput is not None:
            parts = workerinput.get("rllm_parts_dir")
            if parts and runs:
                from pytest_rllm.report.jsonio import write_worker_part

                write_worker_part(parts, workerinput.get("workerid", "worker"), runs, timings)
            return
        self.merged = self.merge(runs, [timings] if runs else [])
        from pytest_rllm.report.files import write_reports

        write_reports(self.settings, self.merged)

    def summary_lines(self) -> list[str]:
        """The "rllm" terminal section; none before the merge (and so none on xdist workers)."""
        if self.merged is None:
            return []
        from pytest_rllm.report.terminal import section_lines

        return section_lines(self.merged, time.perf_counter() - self.started)


def configuration_group(needs: list[Pair]) -> str:
    """The xdist group of a test: the first configuration it reads other than baseline, else baseline."""
    others = [label for label, _ in needs if label != "baseline"]
    return f"rllm-{others[0] if others else 'baseline'}"


STATE_KEY = pytest.StashKey[PluginState]()


def install(config: pytest.Config) -> PluginState:
    """This run's state, from its options (a bad value is a usage error naming the fix), on config.stash and as a plugin."""
    try:
        settings = RllmSettings.from_config(config)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = PluginState(settings=settings)
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "rllm-state")
    return state


def state_of(config: pytest.Config) -> PluginState | None:
    return config.stash.get(STATE_KEY, None)
