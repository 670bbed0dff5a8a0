"""Options parsing: every value validated, with a message naming the option and the fix."""

from __future__ import annotations

import pytest

from pytest_rllm.choices import PRESETS
from pytest_rllm.options import OPTIONS
from pytest_rllm.parsers import SettingError, parse_duration, parse_model
from pytest_rllm.settings import RllmSettings


def test_defaults_are_the_documented_ones():
    s = RllmSettings.from_values({})
    assert s.model == "pocket" and s.engine == "server" and s.arrival == "batch"
    assert s.optimizations == PRESETS and s.max_tokens == 4096 and s.update_baselines == "none"


@pytest.mark.parametrize(
    "text, seconds", [("2s", 2.0), ("100ms", 0.1), ("1.5", 1.5), ("10m", 600.0), ("1h", 3600.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1s", "0", "5 parsecs"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(SettingError, match="expected a duration"):
        parse_duration(text)


def test_every_option_has_one_name_everywhere():
    fields = set(RllmSettings.__dataclass_fields__) - {"extras"}
    assert {o.name for o in OPTIONS} == fields
    for o in OPTIONS:
        assert o.cli == "--rllm-" + o.name.replace("_", "-") and o.ini == "rllm_" + o.name


def test_optimizations_always_include_baseline_and_keep_order():
    s = RllmSettings.from_values({"optimizations": "spec-ngram,quant-int8"})
    assert s.optimizations == ("baseline", "spec-ngram", "quant-int8")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("optimizations", "turbo", "unknown optimization preset"),
        ("engine", "docker", "'server' or 'inprocess'"),
        ("endpoint", "localhost:8000", "http"),
        ("max_tokens", "0", "above 0"),
        ("num_prompts", "ten", "whole number"),
        ("slo", "ttft=2s,latency=3s", "unknown SLO metric 'latency'"),
        ("slo", "ttft", "METRIC=DURATION"),
        ("quantized_model", ["bnb=some/model"], "unknown quantization method"),
        ("accuracy", "lm-eval:", "lm-eval:TASK"),
        ("update_baselines", "sometimes", "changed"),
        ("api_key_env", "my key", "environment variable name"),
        ("arrival", "gamma:fast", "gamma"),
        ("tolerance", "ttft_p50=lots", "ttft_p50"),
        ("dtype", "float64", "expected auto, float32, bfloat16 or float16, got 'float64'"),
    ],
)
def test_bad_values_name_the_option_and_the_fix(name, value, message):
    with pytest.raises(SettingError) as info:
        RllmSettings.from_values({name: value})
    text = str(info.value)
    assert f"--rllm-{name.replace('_', '-')}" in text and f"rllm_{name}" in text
    assert message in text


def test_missing_model_folder_is_an_error_but_hub_ids_pass(tmp_path):
    with pytest.raises(SettingError, match="does not exist"):
        parse_model(str(tmp_path / "no-such-model"))
    with pytest.raises(SettingError, match="does not exist"):
        parse_model("./relative/missing")
    assert parse_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert parse_model(str(tmp_path)) == str(tmp_path)


def test_endpoint_keeps_the_root_url():
    s = RllmSettings.from_values({"endpoint": "http://127.0.0.1:8000/v1/"})
    assert s.endpoint == "http://127.0.0.1:8000"


def test_settings_are_hashable_and_plain():
    s = RllmSettings.from_values({"slo": "ttft=2s,tpot=100ms", "server_arg": ["--max-model-len=2048"]})
    hash(s)
    assert s.slo_seconds() == {"ttft": 2.0, "tpot": 0.1}
    assert s.to_dict()["server_arg"] == ("--max-model-len=2048",)


def test_unknown_threshold_name_is_refused_before_anything_runs(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--rllm-threshold=kv_cvv=0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rllm-threshold*unknown threshold name 'kv_cvv'; expected one of *kv_cv*"])


@pytest.mark.parametrize("text", ["auto", "float32", "bfloat16", "float16"])
def test_dtype_takes_the_four_documented_values(text):
    assert RllmSettings.from_values({"dtype": text}).dtype == text


def test_dtype_defaults_to_auto_and_a_familiar_alias_is_refused_naming_the_value_meant():
    assert RllmSettings.from_values({}).dtype == "auto"
    with pytest.raises(SettingError, match=r"--rllm-dtype / rllm_dtype: expected auto, .* got 'bf16' \(for 'bf16' pass bfloat16\)"):
        RllmSettings.from_values({"dtype": "bf16"})


def test_dtype_with_an_endpoint_is_refused_the_server_chose_its_own():
    with pytest.raises(SettingError, match="--rllm-dtype=float32 applies to engines the harness starts"):
        RllmSettings.from_values({"dtype": "float32", "endpoint": "http://127.0.0.1:8000"})
    assert RllmSettings.from_values({"endpoint": "http://127.0.0.1:8000"}).dtype == "auto"


def test_a_bad_dtype_stops_the_command_line_and_the_ini_key_is_read(pytester):
    pytester.makepyfile("def test_dtype(rllm_settings):\n    assert rllm_settings.dtype == 'float16'\n")
    result = pytester.runpytest("--rllm-dtype=fp32")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rllm-dtype*expected auto, float32, bfloat16 or float16, got 'fp32'*"])
    pytester.makeini("[pytest]\nrllm_dtype = float16\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_metrics_interval_is_auto_by_default_and_each_engine_has_its_own():
    from pytest_rllm.engines.base import EngineContext
    from pytest_rllm.engines.inprocess import InProcessEngine
    from pytest_rllm.parsers import SettingError

    assert RllmSettings().metrics_interval is None
    assert RllmSettings.from_values({"metrics_interval": "auto"}).metrics_interval is None
    assert RllmSettings.from_values({"metrics_interval": "50ms"}).metrics_interval == pytest.approx(0.05)
    with pytest.raises(SettingError, match="--rllm-metrics-interval / rllm_metrics_interval.*or auto"):
        RllmSettings.from_values({"metrics_interval": "often"})
    # A server renders /metrics at a CPU cost; in process a registry read is cheap and the runs are short.
    assert InProcessEngine.metrics_interval < EngineContext.metrics_interval == 0.1
