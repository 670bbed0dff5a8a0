"""Baseline files: where they live, what one holds, and how it is read and written.

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
that update the same file therefore never lose each other's entries. The lock
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
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_rllm.compare import UPDATE_FLAG
from pytest_rllm.hardware import safe_name, slug
from pytest_rllm.tolerance import BETTER, Tolerance, parse_tolerance, round_sig

SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 300.0  # a worker holding the lock only reads and writes one small file


class BaselineError(Exception):
    """A baseline file that cannot be used; the message names the file and the fix."""


# --------------------------------------------------------------------------- file format


def rounded(value: Any) -> Any:
    """`value` as a baseline file stores it: floats to SIGNIFICANT_DIGITS, keys as text; ValueError on NaN/inf."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot store a non-finite number ({value}) in a baseline")
        return round_sig(value)
    if isinstance(value, Mapping):
        return {str(k): rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def dumps(data: Mapping[str, Any]) -> str:
    """The one formatting every baseline file gets."""
    return json.dumps(rounded(data), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


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

    def path_for(self, *, hardware_key: str, model: str, module: str, test_id: str, name: str | None = None,
                 engine_kind: str | None = None) -> Path:
        """<root>/<hardware-key>/<model-slug>/<module>/<test id>[--<name>][@<engine kind>].json, every part filesystem-safe.

        `engine_kind` names an engine whose figures are not a server's (ENGINE_KIND_FILES).
        """
        stem = test_id if name is None else f"{test_id}--{name}"
        if engine_kind:
            stem = f"{stem}@{engine_kind}"
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


# --------------------------------------------------------------------------- location


def module_and_test_id(nodeid: str) -> tuple[str, str]:
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

