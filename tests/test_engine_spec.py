"""Presets map to vLLM engine arguments and server flags (pure)."""

from __future__ import annotations

import json

import pytest

from pytest_rllm.choices import PRESETS
from pytest_rllm.engines.base import engine_reason, is_unsupported
from pytest_rllm.engines.spec import PresetUnavailable, build_spec, choose_dtype
from pytest_rllm.settings import RllmSettings

SETTINGS = RllmSettings.from_values({"seed": "3"})


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("spec-draft", "quant-awq", "quant-gptq")])
def test_every_preset_builds_a_hashable_spec(preset):
    spec = build_spec(preset, SETTINGS, "/models/m")
    hash(spec)
    assert spec.preset == preset and spec.args()["seed"] == 3


def test_presets_differ_only_in_what_they_name():
    base = build_spec("baseline", SETTINGS, "m").args()
    assert build_spec("prefix-caching-off", SETTINGS, "m").args() == {**base, "enable_prefix_caching": False}
    assert build_spec("kv-fp8-e5m2", SETTINGS, "m").args() == {**base, "kv_cache_dtype": "fp8_e5m2"}
    assert build_spec("quant-int8", SETTINGS, "m").args()["quantization"] == "int8_per_channel_weight_only"


def test_server_flags():
    flags = build_spec("spec-ngram", SETTINGS.replace(server_arg=("--max-model-len=2048",)), "m").server_flags()
    i = flags.index("--speculative-config")
    assert json.loads(flags[i + 1]) == {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    assert flags[-1] == "--max-model-len=2048"
    assert "--no-enable-prefix-caching" in build_spec("prefix-caching-off", SETTINGS, "m").server_flags()


def test_in_process_kwargs_take_server_args_too():
    spec = build_spec("baseline", SETTINGS.replace(server_arg=("--max-model-len=2048", "--block-size", "32", "--no-enable-prefix-caching")), "m")
    kwargs = spec.llm_kwargs()
    assert kwargs["max_model_len"] == 2048 and kwargs["block_size"] == 32 and kwargs["enable_prefix_caching"] is False


def test_spec_draft_needs_a_draft_model_except_for_the_embedded_one():
    with pytest.raises(PresetUnavailable, match="--rllm-draft-model"):
        build_spec("spec-draft", SETTINGS.replace(model="org/model"), "org/model")
    spec = build_spec("spec-draft", SETTINGS, "/pocket")  # embedded: drafts for itself
    assert spec.args()["speculative_config"]["model"] == "/pocket"


def test_awq_needs_a_checkpoint_and_serves_it():
    with pytest.raises(PresetUnavailable, match="--rllm-quantized-model awq=PATH_OR_ID"):
        build_spec("quant-awq", SETTINGS, "m")
    spec = build_spec("quant-awq", SETTINGS.replace(quantized_model=(("awq", "org/m-AWQ"),)), "m")
    assert spec.model == "org/m-AWQ" and spec.args()["quantization"] == "awq"


LOG = """(APIServer pid=1) INFO 11-23 11:12:31 [api_server.py:1] starting
(Worker pid=2) ERROR 11-23 11:13:01 [multiproc_executor.py:1063]     raise NotImplementedError(
(Worker pid=2) ERROR 11-23 11:13:01 [multiproc_executor.py:1063] NotImplementedError: FP8 KV cache on CPU requires x86 with AVX-512 or AMX.
(EngineCore pid=3) ERROR 11-23 11:13:01 [core.py:1510] RuntimeError: Worker failed with error 'FP8 KV cache on CPU requires x86 with AVX-512 or AMX.', please check the stack trace above
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}
"""


def test_engine_reason_is_the_root_cause_not_the_wrapper():
    reason = engine_reason(LOG)
    assert reason == "NotImplementedError: FP8 KV cache on CPU requires x86 with AVX-512 or AMX."
    assert is_unsupported(reason)


def test_a_bad_path_is_a_failure_not_a_skip():
    log = "OSError: Incorrect path_or_model_id: '/nope'. Please provide the path to a directory\nRuntimeError: Engine core initialization failed. See root cause above."
    reason = engine_reason(log)
    assert reason.startswith("OSError: Incorrect path_or_model_id") and not is_unsupported(reason)


def test_a_kernel_missing_from_the_build_is_a_skip():
    reason = engine_reason("RuntimeError: _C::static_scaled_fp8_quant() expected at most 0 argument(s) but received 4 argument(s). Declaration: _C::static_scaled_fp8_quant() -> ()")
    assert is_unsupported(reason)


def test_a_kernel_left_out_of_the_build_is_a_skip():
    # torch's own words when the loaded kernel library lacks an op (cpu_gemm_wna16 is not in _C_AVX2).
    reason = engine_reason("AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'")
    assert reason.startswith("AttributeError") and is_unsupported(reason)
    assert not is_unsupported(engine_reason("AttributeError: 'NoneType' object has no attribute 'shape'"))


# --------------------------------------------------------------------------- dtype and CPU variants

AVX2_CPU = "processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t: fpu sse2 avx avx2 fma\n"
AMX_CPU = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


@pytest.fixture
def machine(monkeypatch):
    """machine(cpu_build, cpuinfo): what build_spec sees as this machine's vLLM build and /proc/cpuinfo."""
    from pytest_rllm import hardware
    from pytest_rllm.engines import platform

    def pretend(cpu_build: bool, cpuinfo: str) -> None:
        monkeypatch.setattr(platform, "is_cpu_build", lambda: cpu_build)
        monkeypatch.setattr(hardware, "_cpuinfo_text", lambda: cpuinfo)

    return pretend


@pytest.mark.parametrize(
    ("cpu_build", "cpuinfo", "dtype", "engine_arg", "reason"),
    [
        (True, AVX2_CPU, "float32", "float32", "this CPU has no native bf16: no avx512_bf16/amx_bf16"),
        (True, AMX_CPU, "bfloat16", "bfloat16", "this CPU has native bf16: avx512_bf16, amx_bf16"),
        (True, "processor\t: 0\n", "auto", None, "vLLM's default: this CPU's flags are unknown (no flags in /proc/cpuinfo)"),
        (False, AVX2_CPU, "auto", None, "vLLM's default: the model's own dtype"),  # GPUs: vLLM decides
    ],
)
def test_auto_dtype_serves_float32_where_the_cpu_lacks_native_bf16(cpu_build, cpuinfo, dtype, engine_arg, reason):
    choice = choose_dtype("auto", (), cpu_build=cpu_build, cpuinfo=cpuinfo)
    assert (choice.dtype, choice.engine_arg, choice.reason) == (dtype, engine_arg, reason)


def test_an_explicit_dtype_is_served_on_any_cpu_and_says_it_was_asked_for():
    choice = choose_dtype("bfloat16", (), cpu_build=True, cpuinfo=AVX2_CPU)
    assert (choice.dtype, choice.engine_arg, choice.text) == ("bfloat16", "bfloat16", "bfloat16 (--rllm-dtype=bfloat16)")


@pytest.mark.parametrize("server_args", [("--dtype=float16",), ("--dtype", "float16"), ("--max-model-len=512", "--dtype=float16")])
def test_a_dtype_among_the_server_args_wins_and_is_passed_once(server_args):
    choice = choose_dtype("bfloat16", server_args, cpu_build=True, cpuinfo=AVX2_CPU)
    assert choice.dtype == "float16" and choice.engine_arg is None
    assert choice.reason == "--rllm-server-arg=--dtype=float16, over --rllm-dtype=bfloat16"
    assert choose_dtype("auto", server_args, cpu_build=True, cpuinfo=AVX2_CPU).reason == "--rllm-server-arg=--dtype=float16"


def test_the_spec_carries_the_chosen_dtype_and_why(machine):
    machine(True, AVX2_CPU)
    spec = build_spec("baseline", SETTINGS, "m")
    flags = spec.server_flags()
    assert spec.args()["dtype"] == "float32" and flags[flags.index("--dtype") + 1] == "float32"
    assert spec.to_dict()["dtype"] == "float32" and "no native bf16" in spec.to_dict()["dtype_reason"]
    overridden = build_spec("baseline", SETTINGS.replace(dtype="float32", server_arg=("--dtype=bfloat16",)), "m")
    assert "dtype" not in overridden.args() and overridden.dtype == "bfloat16"
    assert overridden.server_flags().count("--dtype=bfloat16") == 1 and overridden.llm_kwargs()["dtype"] == "bfloat16"
    machine(False, AVX2_CPU)
    assert "dtype" not in build_spec("baseline", SETTINGS, "m").args()  # GPUs keep vLLM's default


def test_quant_fp8_runs_as_fp8_per_channel_on_the_cpu_build_and_says_so(machine):
    machine(True, AVX2_CPU)
    spec = build_spec("quant-fp8", SETTINGS, "m")
    assert spec.args()["quantization"] == "fp8_per_channel" and spec.preset == "quant-fp8"
    assert spec.description == "quant-fp8 (fp8_per_channel on CPU)" and spec.to_dict()["variant"] == "fp8_per_channel on CPU"
    assert build_spec("quant-int8", SETTINGS, "m").variant == ""  # int8 weight-only is the CPU's own method
    machine(False, AVX2_CPU)
    gpu = build_spec("quant-fp8", SETTINGS, "m")
    assert gpu.args()["quantization"] == "fp8" and gpu.variant == "" and gpu.description == "quant-fp8"


@pytest.mark.parametrize("preset", ["quant-fp8", "quant-int8"])
def test_a_half_precision_only_method_serves_in_bfloat16_where_auto_chose_float32(machine, preset):
    machine(True, AVX2_CPU)
    spec = build_spec(preset, SETTINGS, "m")
    assert spec.dtype == "bfloat16" and "takes bfloat16/float16 only" in spec.dtype_reason
    assert build_spec("baseline", SETTINGS, "m").dtype == "float32"
    # A float32 the user asked for is passed on: vLLM's refusal then skips the preset, quoted.
    assert build_spec(preset, SETTINGS.replace(dtype="float32"), "m").dtype == "float32"
    machine(True, AMX_CPU)
    assert build_spec(preset, SETTINGS, "m").dtype == "bfloat16" and "native bf16" in build_spec(preset, SETTINGS, "m").dtype_reason


def test_baselines_record_the_dtype_served_not_the_options_text(machine):
    from pytest_rllm.baselines import configuration_of

    machine(True, AVX2_CPU)
    assert configuration_of(SETTINGS)["dtype"] == "float32"
    machine(True, AMX_CPU)
    assert configuration_of(SETTINGS)["dtype"] == "bfloat16"
    assert "dtype" not in configuration_of(RllmSettings.from_values({"endpoint": "http://127.0.0.1:8000"}))


# --------------------------------------------------------------------------- one engine for two configurations

@pytest.mark.parametrize(
    ("other", "reported", "shared"),
    [
        ("prefix-caching-on", "True", True),  # the engine turned it on by default: the same engine
        ("prefix-caching-on", "False", False),  # it did not: asking for it changes the engine
        ("prefix-caching-off", "True", False),
        ("prefix-caching-off", "False", True),
        ("prefix-caching-on", None, False),  # not reported: never assumed
        ("spec-ngram", "True", False),  # other arguments differ
    ],
)
def test_two_configurations_are_one_engine_only_where_the_engine_resolved_the_difference(machine, other, reported, shared):
    from pytest_rllm.engines.sharing import same_engine

    machine(True, AMX_CPU)
    cache = {} if reported is None else {"enable_prefix_caching": reported, "block_size": "32"}
    why = same_engine(build_spec("baseline", SETTINGS, "m"), build_spec(other, SETTINGS, "m"), cache)
    assert (why is not None) == shared
    if shared:
        assert "is the engine's default" in why
