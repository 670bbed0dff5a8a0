"""The check behind `rllm_baseline`: a test's metrics against its stored baseline file.

Files, their layout and their locked, atomic writes are in baseline_store.py;
the comparison rule and the failure table in compare.py.

The bare update flag only adds and replaces entries; only =all deletes entries
(those the test no longer produces), since it makes the file equal to what the
test measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from pytest_rllm.baseline_outcome import CheckOutcome
from pytest_rllm.baseline_store import (
    BaselineError,
    BaselineStore,
    baseline_root,
    module_and_test_id,
    rounded,
    stored_tolerance,
)
from pytest_rllm.compare import FAILING, UPDATE_FLAG, Measurement, compare, failure_message, format_table
from pytest_rllm.engines.identity import EngineIdentity
from pytest_rllm.engines.spec import dtype_for
from pytest_rllm.hardware import slug
from pytest_rllm.settings import RllmSettings
from pytest_rllm.tolerance import (
    HOST_SPEED_FAMILIES, Tolerance, default_better, default_tolerance, family_of, lookup, parse_tolerance,
)

# Settings that change what a metric means; recorded with the baseline, so a
# failure can say "the baseline was measured with max_tokens=4096". "dtype" is the
# one engines served in (engines.spec.dtype_for), not the option's text: "auto" differs by CPU.
# Engine kinds whose figures differ from a server's by design, so their baselines have files of
# their own (<test>@inprocess.json): an in-process run has no HTTP and no API server in its
# E2E, and the prefix-caching on/off E2E ratio read 0.38 in process against 0.80 served
# (benchmarks/RESULTS.md, 2026-12-04). An endpoint is a server: it shares the server's files.
ENGINE_KIND_FILES = ("inprocess",)

CONFIGURATION_KEYS = (
    "dataset", "num_prompts", "repeats", "trials", "warm_up", "max_tokens", "temperature", "top_p", "seed",
    "arrival", "max_concurrency", "slo", "accuracy", "engine", "reasoning_parser", "dtype",
)


# What BaselineCheck is told about the engine: the header dict (EngineIdentity.to_dict()), or a
# function giving it when a check runs, because an external server's version is known only once it answered.
EngineHeader = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None]


class BaselineCheck:
    """The object behind the `rllm_baseline` fixture: compares a test's metrics with its stored baseline.

    Tolerance precedence, first found wins: --rllm-tolerance (CLI/ini), the
    Measurement's own tolerance, the `tolerances` argument, the tolerance stored
    in the baseline file, then the default: 0 for a value with an interval (the
    intervals must overlap), else the metric family's (tolerance.DEFAULT_FAMILIES).
    The CLI override is a run-time knob, so it is never written into a file.
    """

    def __init__(
        self,
        store: BaselineStore,
        *,
        hardware_key: str,
        model: str | Callable[[], str],
        module: str,
        test_id: str,
        nodeid: str = "",
        update: str = "none",
        cli_tolerances: Mapping[str, str | Tolerance] | Iterable[tuple[str, str]] = (),
        engine: EngineHeader = None,
        configuration: Mapping[str, Any] | None = None,
        user_properties: list[tuple[str, object]] | None = None,
        display_root: str | os.PathLike[str] | None = None,
        engine_kind: str | None = None,
    ) -> None:
        # An engine kind with its own files (ENGINE_KIND_FILES) compares with the server's file until it has one.
        self.engine_kind = engine_kind if engine_kind in ENGINE_KIND_FILES else None
        if update not in ("none", "changed", "all"):
            raise ValueError(f"update must be 'none', 'changed' or 'all', got {update!r}")
        self.store = store
        self.hardware_key = hardware_key
        self._model = model
        self.module = module
        self.test_id = test_id
        self.nodeid = nodeid or f"{module}::{test_id}"
        self.update = update
        pairs = cli_tolerances.items() if isinstance(cli_tolerances, Mapping) else cli_tolerances
        self.cli_tolerances = {k: parse_tolerance(v) for k, v in pairs}
        self._engine = engine
        self.configuration = dict(configuration or {})
        self.user_properties = user_properties
        self.display_root = Path(display_root) if display_root is not None else None
        self.outcomes: list[CheckOutcome] = []
        self._names_seen: set[str | None] = set()

    @property
    def engine(self) -> dict[str, Any]:
        """The engine header this check records and compares: EngineIdentity.to_dict() as the plugin gives it."""
        source = self._engine() if callable(self._engine) else self._engine
        return dict(source or {})

    @property
    def model(self) -> str:
        """The model part of the baseline path; a callable is asked once, at the first check.

        An endpoint's model is known only once the server was asked (GET /v1/models),
        so the fixture passes a callable and the check resolves it when it needs a path.
        """
        if callable(self._model):
            self._model = self._model()
        return self._model

    @model.setter
    def model(self, value: str | Callable[[], str]) -> None:
        self._model = value

    def stored_configuration(self, name: str | None = None) -> dict[str, Any]:
        """The settings the stored baseline was recorded with ({} when there is no readable file)."""
        try:
            stored = self.store.read(self.read_path(name))
        except BaselineError:
            return {}
        return dict((stored or {}).get("configuration") or {})

    def path(self, name: str | None = None) -> Path:
        """The file this check writes: the engine kind's own where it has one (ENGINE_KIND_FILES)."""
        return self._path_for(name, self.engine_kind)

    def _path_for(self, name: str | None, engine_kind: str | None) -> Path:
        return self.store.path_for(
            hardware_key=self.hardware_key, model=self.model, module=self.module, test_id=self.test_id, name=name,
            engine_kind=engine_kind,
        )

    def read_path(self, name: str | None = None) -> Path:
        """The file this check compares with: its own, else (not when writing) the server engine's."""
        own = self.path(name)
        if self.engine_kind is None or own.exists() or self.update != "none":
            return own
        server = self._path_for(name, None)  # the server engine's file
        return server if server.exists() else own

    def _display(self, path: Path) -> str:
        if self.display_root is not None:
            try:
                return str(path.resolve().relative_to(self.display_root.resolve()))
            except ValueError:
                pass
        return str(path)

    def check(
        self,
        data: Mapping[str, Any],
        metrics: Mapping[str, str | Tolerance | None] | None = None,
        *,
        tolerances: Mapping[str, str | Tolerance] | None = None,
        name: str | None = None,
        speed_noise: str | None = None,
        inconclusive: Mapping[str, str] | None = None,
    ) -> CheckOutcome:
        """Compare metrics with the stored baseline; pytest.fail with a table when they differ.

        With a `metrics` table ({name: tolerance, or None for the family default}),
        exactly those names are read from `data` (a run summary, say), each with
        its interval from `{name}_low`/`{name}_high` where the summary has one:

            METRICS = {"tail_share": "25pt", "makespan_over_median_e2e": "50%"}
            rllm_baseline.check(baseline_run.summary(), METRICS)

        `speed_noise` says why this run's absolute speed proves nothing (a busy
        host, a batch held open by a runaway request; checks/serving.py): a speed metric that would fail is then
        "inconclusive", flagged but not failing, and never recorded. `inconclusive` does the same for
        named metrics of any kind ({metric: why this run could not measure it, or None where it could}),
        e.g. a ratio over a run that yielded too few telemetry samples.

        Without it every entry of `data` is a metric, `tolerances` giving any tolerance:

            rllm_baseline.check({"ttft_p50": s["ttft_p50"], "accuracy": Measurement.proportion(62, 100)},
                                tolerances={"ttft_p50": "2x"})
        """
        __tracebackhide__ = True
        import pytest

        if metrics is not None:
            data, tolerances = select_metrics(data, metrics), {
                **{k: v for k, v in metrics.items() if v is not None}, **(tolerances or {})}

        if name in self._names_seen:
            raise ValueError(
                f"rllm_baseline.check() was called twice in {self.nodeid} with name={name!r}; "
                f"give each call its own name=... so each gets its own baseline file"
            )
        self._names_seen.add(name)
        path = self.read_path(name)
        shown = self._display(path)
        obtained = {str(k): Measurement.of(v) for k, v in data.items()}
        test_tolerances = {k: parse_tolerance(v) for k, v in (tolerances or {}).items()}
        unknown = [k for k in test_tolerances if not any(c in k for c in "*?[") and k not in obtained]
        if unknown:
            raise ValueError(f"tolerances given for metrics the check does not receive: {', '.join(sorted(unknown))}")

        unreadable = ""
        try:
            stored = self.store.read(path)
        except BaselineError as exc:
            unreadable = str(exc).replace(str(path), shown)
            stored = None  # =all: the unreadable file is rewritten below
        if unreadable and self.update != "all":
            self._finish(CheckOutcome(self.nodeid, shown, name, "unreadable", message=unreadable))
            pytest.fail(unreadable)
        stored_metrics: dict[str, dict[str, Any]] = dict(stored["metrics"]) if stored else {}

        tols: dict[str, Tolerance] = {}
        keep_tols: dict[str, Tolerance] = {}  # what a written entry stores: everything but the CLI override
        betters: dict[str, str] = {}
        for metric in set(obtained) | set(stored_metrics):
            m = obtained.get(metric)
            entry = stored_metrics.get(metric, {})
            keep = (
                (m.tolerance if m is not None else None)
                or lookup(test_tolerances, metric)
                or stored_tolerance(entry)
                # With an interval the overlap rule already absorbs sampling noise,
                # so the default adds nothing to it; a bare value gets its family's default.
                or (Tolerance() if m is not None and m.interval is not None else default_tolerance(metric))
            )
            keep_tols[metric] = keep  # type: ignore[assignment]
            tols[metric] = lookup(self.cli_tolerances, metric) or keep
            betters[metric] = (m.better if m is not None else None) or entry.get("better") or default_better(metric)

        def entry_for(metric: str) -> dict[str, Any]:
            m = obtained[metric]
            return {
                "value": float(m.value),
                "tolerance": keep_tols[metric].to_dict(),
                "better": betters[metric],
                "n": m.n,
                "interval": list(m.interval) if m.interval is not None else None,
            }

        if stored is None and self.update == "none":
            checks = compare({}, obtained, tols, betters)
            message = (
                f"no baseline file at {shown}\n"
                f"This test produced {len(obtained)} metric(s):\n\n{format_table(checks)}\n\n"
                f"Create the file with: {UPDATE_FLAG}"
            )
            self._finish(CheckOutcome(self.nodeid, shown, name, "no-baseline", checks, message))
            pytest.fail(message)

        checks = compare(stored_metrics, obtained, tols, betters)
        named = {metric: why for metric, why in (inconclusive or {}).items() if why}  # None: this run measured it
        # Why this run's value of each metric proves nothing: named, or a speed on a noisy host.
        unmeasured = {c.metric: named.get(c.metric) or speed_noise for c in checks
                      if c.metric in named or (speed_noise and family_of(c.metric).name in HOST_SPEED_FAMILIES)}
        for c in checks:
            # A named metric the run could not measure is moot however it compares: off, NaN,
            # absent, or absent from a file recorded while it could not be measured either.
            if c.metric in unmeasured and c.status in (FAILING if c.metric in named else ("fail",)):
                c.status, c.note = "inconclusive", unmeasured[c.metric]
        to_set: dict[str, dict[str, Any]] = {}
        to_remove: list[str] = []
        if self.update != "none":
            for c in checks:
                if c.status in ("nan", "inconclusive"):
                    continue  # a NaN stays a failure; a speed measured on a busy host is not worth keeping
                if c.metric in unmeasured:
                    # A baseline recorded on a busy host, or from a held-open batch, would pass every slower engine after it.
                    c.note = f"not recorded: {unmeasured[c.metric]}"
                    continue
                if c.status == "missing" and self.update == "changed":
                    # "changed" only adds and replaces entries, so parallel workers that
                    # merge into one file never delete (or fail on) each other's entries;
                    # the entry is kept and flagged, and =all drops stale ones.
                    c.kept = True
                    c.note += f"; kept, {UPDATE_FLAG}=all drops it"
                    continue
                rewrite = self.update == "all" or c.status in ("fail", "improved", "extra")
                if not rewrite:
                    continue
                if c.status == "missing":
                    to_remove.append(c.metric)
                else:
                    to_set[c.metric] = entry_for(c.metric)
                c.updated = True
        action = "compared"
        if to_set or to_remove or (self.update == "all" and stored is None):
            self.store.update(
                path,
                set_metrics=to_set,
                remove=to_remove,
                header={"engine": self.engine, "configuration": self.configuration,
                        "test": self.nodeid, "hardware_key": self.hardware_key, "model": slug(self.model)},
                replace_unreadable=self.update == "all",
            )
            action = "created" if stored is None else ("rewritten" if self.update == "all" else "updated")

        outcome = CheckOutcome(self.nodeid, shown, name, action, checks, engine_change=self._engine_change(stored))
        if outcome.failed:
            notes = self._configuration_notes(stored)
            if path != self.path(name):
                notes.insert(0, f"note: compared with the server engine's file: no {self.engine_kind} baseline is recorded "
                                f"here yet; create {self._display(self.path(name))} with {UPDATE_FLAG}")
            outcome.message = failure_message(checks, shown, notes=notes,
                                              engine_change=outcome.engine_change)
        self._finish(outcome)
        if outcome.failed:
            pytest.fail(outcome.message)
        return outcome

    def _configuration_notes(self, stored: Mapping[str, Any] | None) -> list[str]:
        if not stored:
            return []
        old = stored.get("configuration") or {}
        new = json.loads(json.dumps(rounded(self.configuration)))
        notes = []
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                notes.append(f"note: the baseline was recorded with {key}={old.get(key)!r}; this run used {new.get(key)!r}")
        # A different engine release heads the message (_engine_change); torch, device and driver are notes.
        old_engine, new_engine = EngineIdentity.from_dict(stored.get("engine")), EngineIdentity.from_dict(self.engine)
        for key, old_value, new_value in old_engine.other_differences(new_engine):
            notes.append(f"note: the baseline was recorded with {key} {old_value}; this run used {new_value}")
        return notes

    def _engine_change(self, stored: Mapping[str, Any] | None) -> str:
        """Names both engine builds where the file was recorded on another one; "" otherwise.

        An old header holds only {"name", "version"}: what it lacks is not a difference.
        """
        if not stored:
            return ""
        old_engine, new_engine = EngineIdentity.from_dict(stored.get("engine")), EngineIdentity.from_dict(self.engine)
        if not old_engine.release_differs(new_engine):
            return ""
        return f"baseline recorded on {old_engine.release}, this run used {new_engine.release}"

    def _finish(self, outcome: CheckOutcome) -> None:
        self.outcomes.append(outcome)
        if self.user_properties is not None:
            # user_properties travel with the test report, across xdist too.
            self.user_properties.append(outcome.user_property())


def select_metrics(data: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Measurement]:
    """The entries of `data` that `metrics` names (exactly or by a glob such as "accuracy.*"), as Measurements.

    Names `data` lacks were not measured here (no NVML, say) and are left out.
    """
    import fnmatch

    patterns = [key for key in metrics if any(c in key for c in "*?[")]
    out: dict[str, Measurement] = {}
    for metric in data:
        if metric not in metrics and not any(fnmatch.fnmatchcase(metric, p) for p in patterns):
            continue
        value = data[metric]
        out[metric] = value if isinstance(value, Measurement) else Measurement.from_summary(data, [metric])[metric]
    return out


# --------------------------------------------------------------------------- fixture factory


def configuration_of(settings: Any) -> dict[str, Any]:
    data = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    configuration = {k: data[k] for k in CONFIGURATION_KEYS if k in data}
    if isinstance(settings, RllmSettings):
        if settings.endpoint:
            configuration.pop("dtype", None)  # the endpoint's dtype is its own, not known here
        else:
            configuration["dtype"] = dtype_for(settings).dtype
    return configuration


def baseline_check_for(request: Any, settings: Any, *, hardware_key: str, model: str | Callable[[], str],
                       engine_info: EngineHeader) -> BaselineCheck:
    """The BaselineCheck for the requesting test (what the plugin's `rllm_baseline` fixture returns)."""
    nodeid = request.node.nodeid
    module, test_id = module_and_test_id(nodeid)
    rootpath = Path(request.config.rootpath)
    return BaselineCheck(
        BaselineStore(baseline_root(settings, rootpath)),
        hardware_key=hardware_key,
        model=model,
        module=module,
        test_id=test_id,
        nodeid=nodeid,
        update=settings.update_baselines,
        cli_tolerances=settings.tolerance,
        engine=engine_info,
        configuration=configuration_of(settings),
        user_properties=request.node.user_properties,
        display_root=rootpath,
        engine_kind=None if settings.endpoint else settings.engine,
    )

