"""Where a session's run comes from before an engine generates it: the run store, another xdist worker, or a saved report.

RunSources answers, for one (configuration, workload) and its RunKey: here is the
stored run (and where it came from), or generate it (None), or, re-checking from
a report, why it cannot be had (a skip reason). The session asks it before it
starts an engine, and hands it every run it generated.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pytest_rllm.run_store import RunKey, RunStore, StoredRun

if TYPE_CHECKING:
    from pytest_rllm.results import RunResult
    from pytest_rllm.settings import RllmSettings

# What a re-check from a report compares with the settings given now: what was generated.
# Not the engine, the hardware or the model's files, which are the report's facts (the
# machine that re-checks may have neither that engine nor that model).
REPORT_FIELDS_NOT_COMPARED = ("engine", "hardware", "spec.model")


class ReportUnreadable(Exception):
    """--rllm-from-report names a file that is not a pytest-rllm JSON report with runs."""


@dataclass
class Reused:
    """A run this session read instead of generating: its name, where from, and when it was generated."""

    name: str
    source: str  # "run store" | "report PATH" | "xdist worker"
    created: str  # "2026-12-03 18:50:12 UTC"


@dataclass
class RunSources:
    settings: RllmSettings
    store: RunStore | None = None  # None: --rllm-no-cache, an endpoint, or a candidate session
    shared_with_workers: bool = False  # xdist: runs that another worker of this session stored are read
    report_runs: dict[str, dict[str, Any]] | None = None  # --rllm-from-report: run name -> run dict
    report_path: str = ""
    reused: list[Reused] = field(default_factory=list)

    @classmethod
    def for_session(cls, settings: RllmSettings, cache_root: Path | None, *, session_id: str,
                    shared_with_workers: bool) -> RunSources:
        if settings.from_report:
            return cls(settings, report_runs=read_report_runs(settings.from_report), report_path=settings.from_report)
        if settings.no_cache or settings.endpoint or cache_root is None:
            # An endpoint's version is known only once it answers, so its runs cannot be keyed beforehand.
            return cls(settings)
        store = RunStore(cache_root, session_id=session_id)
        store.remove_stale_locks()
        return cls(settings, store=store, shared_with_workers=shared_with_workers)

    @property
    def generates(self) -> bool:
        """Whether a run that is not found may be generated (not when re-checking from a report)."""
        return self.report_runs is None

    @contextlib.contextmanager
    def claim(self, label: str) -> Iterator[None]:
        """Under xdist, hold the configuration's lock while its runs are looked up and generated: its engine starts in one worker."""
        if self.store is not None and self.shared_with_workers:
            with self.store.claim(label):
                yield
        else:
            yield

    @property
    def answers_without_engine(self) -> bool:
        """Whether find() may answer at all: a report, or a store read back (--rllm-reuse-runs, xdist workers)."""
        return self.report_runs is not None or (
            self.store is not None and (self.settings.reuse_runs or self.shared_with_workers))

    def _stored(self, key: RunKey) -> StoredRun | None:
        assert self.store is not None
        return self.store.load(key, this_session_only=not self.settings.reuse_runs)

    def find(self, key: RunKey, name: str) -> RunResult | str | None:
        """The run to use instead of generating one; a skip reason (from a report only); None: generate it."""
        if self.report_runs is not None:
            return self._from_report(key, name)
        if not self.answers_without_engine:
            return None
        stored = self._stored(key)
        if stored is None:
            return None
        same_session = self.shared_with_workers and stored.session_id == self.store.session_id
        return self._reused(stored.run, name, "xdist worker" if same_session else "run store", stored)

    def has(self, key: RunKey) -> bool:
        """Whether find() would answer without an engine (a stored run, or a report's run or skip), reading nothing back."""
        if self.report_runs is not None:
            return True
        return self.answers_without_engine and self._stored(key) is not None

    def keep(self, key: RunKey, run: RunResult) -> None:
        """A run this session generated: into the store (a failed run is not kept: it is generated again)."""
        import time

        run.store_key = {"digest": key.digest, "fields": dict(key.fields)}
        run.generated = run.generated or time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        if self.store is not None and not run.error:
            self.store.save(key, run)

    def _reused(self, run: RunResult, name: str, source: str, stored: StoredRun | None = None, created: str = "") -> RunResult:
        created = stored.created_text if stored is not None else created
        run.reused = f"{source}, generated {created}" if source != "xdist worker" else None
        self.reused.append(Reused(name, source, created))
        return run

    def _from_report(self, key: RunKey, name: str) -> RunResult | str:
        from pytest_rllm.results import RunResult

        data = (self.report_runs or {}).get(name)
        if data is None:
            return f"--rllm-from-report={self.report_path} has no run {name}: re-check with a report of a session that ran it"
        stored = (data.get("store_key") or {}).get("fields")
        if not isinstance(stored, dict):
            return f"--rllm-from-report: the report's {name} carries no run key (written before the run store): it cannot be matched"
        differs = [d for d in key.differences(stored) if not d.startswith(REPORT_FIELDS_NOT_COMPARED)]
        if differs:
            return (f"--rllm-from-report: the report's {name} was generated with other settings than this session's "
                    f"(differs in {', '.join(differs)}): pass the options it ran with")
        try:
            run = RunResult.from_dict(data)
        except ValueError as exc:
            return f"--rllm-from-report: the report's {name} does not read back ({exc})"
        return self._reused(run, name, f"report {self.report_path}", created=run.generated or "at an unknown time")


def read_report_runs(path: str) -> dict[str, dict[str, Any]]:
    """Run name ("baseline/main") -> run dict, from a JSON report; ReportUnreadable naming the file and the fix."""
    from pytest_rllm.report.jsonio import read_json_report

    try:
        data = read_json_report(path)
    except (OSError, ValueError) as exc:
        raise ReportUnreadable(f"--rllm-from-report={path}: {exc}; pass a JSON report written with --rllm-report") from None
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ReportUnreadable(f"--rllm-from-report={path}: the report holds no runs; pass the report of a session that generated some")
    return {str(r.get("name")): r for r in runs if isinstance(r, dict) and r.get("name")}
