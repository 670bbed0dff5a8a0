"""Presets map to vLLM engine arguments and server flags (pure)."""

from __future__ import annotations

import json

import pytest

from pytest_rllm.choices import PRESETS
from pytest_rllm.engines.base import engine_reason, is_unsupported
from pytest_rllm.engines.spec import PresetUnavailable, build_spec
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
