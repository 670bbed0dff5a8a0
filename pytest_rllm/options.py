"""The option table: every knob declared once, and how pytest gets it (CLI `--rllm-x-y`, ini `rllm_x_y`).

`OPTIONS` holds each option's field name, parser, default and help; add_options
registers the table with pytest, and raw_values reads it back from a config (CLI,
then ini), as texts that settings.RllmSettings.from_values parses.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pytest_rllm.choices import EMBEDDED_MODEL, PRESETS
from pytest_rllm.parsers import (
    SettingError, parse_accuracy, parse_arrival, parse_candidate_engines, parse_start_ahead, parse_candidate_optimizations, parse_count,
    parse_datasets, parse_dtype, parse_duration, parse_endpoint, parse_engine, parse_env_name, parse_flag, parse_int, parse_list,
    parse_metrics_interval, parse_model, parse_optimizations, parse_positive_int, parse_probability, parse_python,
    parse_quantized_models, parse_reasoning_parser, parse_report_file, parse_served_model, parse_slo, parse_text, parse_thresholds,
    parse_tolerances, parse_update_mode,
)

if TYPE_CHECKING:
    import pytest


@dataclass(frozen=True)
class Option:
    name: str  # field name; CLI --rllm-<name with dashes>, ini rllm_<name>
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    repeatable: bool = False  # CLI may be given several times; ini is a line list
    flag_value: str | None = None  # value when the CLI flag is given without one
    switch: bool = False  # CLI: a bare flag that takes no value (so it never eats a path after it); ini: true/false
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
    Option("dtype", parse_dtype, "auto", "dtype the engines serve in; 'auto': float32 on a CPU without native bf16 (no avx512_bf16/amx_bf16), bfloat16 on one with it, vLLM's own default on GPUs. --rllm-server-arg=--dtype=... wins over it.", "auto|float32|bfloat16|float16"),
    Option("reasoning_parser", parse_reasoning_parser, "auto", "vLLM --reasoning-parser for the server: auto, deepseek_r1, qwen3, ..., or none.", "NAME"),
    Option("startup_timeout", parse_duration, 600.0, "How long an engine may take to become healthy.", "DURATION"),
    Option("start_ahead", parse_start_ahead, "auto", "Start the next configuration's server beside this one's, paused until its turn; 'auto': on CPU where both fit in memory, never on GPUs ('on' there needs a --gpu-memory-utilization split).", "auto|on|off"),
    Option("request_timeout", parse_duration, 600.0, "How long one request may take before it is recorded as failed.", "DURATION"),
    Option("run_timeout", parse_duration, 3600.0, "How long one workload run may take before the remaining requests are cancelled.", "DURATION"),
    Option("dataset", parse_datasets, ("procedural",), "Data sets to draw prompts from: NAME or NAME=PATH.jsonl, comma separated.", "LIST"),
    Option("num_prompts", parse_positive_int, 100, "Number of items drawn from the data sets (before repeats).", "N"),
    Option("repeats", parse_positive_int, 1, "How many times each item is sent (the study used 3).", "N"),
    Option("trials", parse_positive_int, 1, "How many times each workload runs on the same engine; the summary gives each metric's mean and interval over the trials.", "N"),
    Option("warm_up", parse_count, 8, "Requests in the unmeasured batch each engine serves before its first measured run, so that first-batch costs (compilation, allocation) stay out of the measurements; 0: none, the first run is measured cold.", "N"),
    Option("max_tokens", parse_positive_int, 4096, "Token budget per request (reasoning included).", "N"),
    Option("temperature", parse_probability, 0.6, "Sampling temperature.", "T"),
    Option("top_p", parse_probability, 0.95, "Sampling top_p.", "P"),
    Option("seed", parse_int, 0, "Seed for the data draw, the arrival process and the engine.", "N"),
    Option("arrival", parse_arrival, "batch", "Arrival process: batch, concurrency:N, poisson:RATE, gamma:RATE:BURSTINESS or trace:PATH.", "SPEC"),
    Option("max_concurrency", parse_positive_int, None, "Cap on requests in flight, combined with the arrival process.", "N"),
    Option("slo", parse_slo, (), "Service-level objectives for goodput, e.g. ttft=2s,tpot=100ms.", "METRIC=DURATION"),
    Option("accuracy", parse_accuracy, "builtin", "How accuracy is scored: builtin, or lm-eval:TASKS to also run lm-eval tasks against the engine.", "builtin|lm-eval:TASKS"),
    Option("threshold", parse_thresholds, (), "Override a finding check's threshold, e.g. accuracy_points=5,kv_area_ratio=3 (names and defaults: README, Finding thresholds).", "NAME=VALUE"),
    Option("metrics_interval", parse_metrics_interval, "auto", "How often the engine's metrics (KV usage, running and waiting requests) and NVML are sampled; 'auto': every 0.1 s from a server's /metrics, which it renders at a CPU cost, and every 0.02 s in process, where a read costs 0.14 ms.", "DURATION|auto"),
    Option("baseline_dir", parse_text, None, "Root of stored baselines (default: baselines/ at the rootdir).", "DIR"),
    Option("update_baselines", parse_update_mode, "none", "Write baselines: bare flag writes missing or out-of-tolerance entries; =all rewrites everything.", "[changed|all]", flag_value="changed"),
    Option("tolerance", parse_tolerances, (), "Per-metric tolerance overrides, e.g. ttft_p50=10%,accuracy=2pt.", "METRIC=TOL"),
    Option("hardware_key", parse_text, None, "Override the auto-detected hardware key that baselines are stored under.", "KEY"),
    Option("report", parse_text, None, "Write every run (records and timelines) to this JSON file.", "PATH.json"),
    Option("html", parse_text, None, "Write a self-contained HTML report with plots to this file.", "PATH.html"),
    # The run store (run_store.py): every finished run kept, read back instead of generated again.
    Option("cache_dir", parse_text, ".rllm_cache", "Folder of the run store, where every finished run is kept (relative paths: from the rootdir).", "DIR"),
    Option("no_cache", parse_flag, False, "Keep no runs in the run store (nothing is written; with xdist, workers then generate what they need each).", None, switch=True),
    Option("reuse_runs", parse_flag, False, "Re-check from the run store: a run stored with the same engine, model files, workload and generation settings is read back instead of generated; the others are generated (and stored).", None, switch=True),
    Option("from_report", parse_report_file, None, "Re-check from the runs of a saved JSON report (--rllm-report, e.g. a CI artifact); no engine starts, and a run the report lacks, or generated with other settings, skips saying which.", "PATH.json"),
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


def _validator(option: Option) -> Callable[[str], str]:
    """argparse type= hook: validate the text now (before anything starts), keep the text."""

    parse = option.cli_parse or option.parse

    def check(text: str) -> str:
        try:
            parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    check.__name__ = option.name  # argparse names the type in its error message
    return check


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(f"{k}={v}" for k, v in value) or "none"
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def add_options(parser: pytest.Parser) -> None:
    """Every option as a --rllm-* flag in the "rllm" help group and as its rllm_* ini twin."""
    group = parser.getgroup("rllm", "reasoning-LLM serving checks (pytest-rllm)")
    for option in OPTIONS:
        default_text = _default_text(option.default)
        help_text = f"{option.help} Ini: {option.ini}. Default: {default_text}.".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": "rllm_" + option.name, "default": None, "help": help_text}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.switch:
            kwargs["action"] = "store_const"
            kwargs["const"] = "true"
        elif option.repeatable:
            kwargs["action"] = "append"
            kwargs["type"] = _validator(option)
        elif option.flag_value is not None:
            kwargs["nargs"] = "?"
            kwargs["const"] = option.flag_value
            kwargs["type"] = _validator(option)
        else:
            kwargs["type"] = _validator(option)
        group.addoption(option.cli, **kwargs)
        parser.addini(option.ini, help=f"{option.help} (same as {option.cli})", type="linelist" if option.repeatable else "string", default=[] if option.repeatable else "")


def raw_values(config: pytest.Config) -> dict[str, Any]:
    """The texts given for each option: CLI value, else ini value; options given neither are left out (their default)."""
    raw: dict[str, Any] = {}
    for option in OPTIONS:
        value = config.getoption("rllm_" + option.name)
        if value is None or (option.repeatable and not value):
            ini = config.getini(option.ini)
            value = ini if ini not in ("", [], None) else None
        if value is not None:
            raw[option.name] = value
    return raw
