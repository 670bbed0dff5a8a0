"""An engine's rejection reaches the test whole: pydantic's field, value and sentence, not only its title line.

The texts are vLLM's own (engine_reason_texts.py says how each was made). No engine is started:
the server is a script that prints the captured log and exits 1, the in-process engine's LLM a
class that raises the captured error.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from engine_reason_texts import MESSAGES, SERVER_LOG
from pytest_rllm.engines import platform
from pytest_rllm.engines.base import (
    EngineStartError,
    EngineUnsupported,
    engine_reason,
    exception_reason,
    is_unsupported,
)
from pytest_rllm.engines.inprocess import InProcessEngine
from pytest_rllm.engines.server import VllmServer
from pytest_rllm.engines.spec import EngineSpec


class ValidationError(ValueError):
    """Named as pydantic's: a real one cannot be built from its text."""


INT8_ON_FLOAT32 = (
    "1 validation error for VllmConfig: torch.float32 is not supported for quantization method "
    "int8_per_channel_weight_only. Supported dtypes: [torch.bfloat16, torch.float16]"
)

# What each captured error becomes after "ValidationError: ", and whether it skips (True) or fails.
EXPECTED = {
    "int8_on_float32": (INT8_ON_FLOAT32, True),
    "unknown_quantization": (
        "1 validation error for ModelConfig: Unknown quantization method: bogus. Must be one of ['awq', "
        "'auto_awq', 'fp8', 'fbgemm_fp8', 'fp_quant', 'modelopt', 'modelopt_fp4', 'modelopt_mxfp8', "
        "'modelopt_mixed', 'auto_gptq', 'gptq', 'gptq_marlin', 'awq_marlin', 'humming', 'compressed-tensors', "
        "'experts_int8', 'quark', 'moe_wna16', 'torchao', 'inc', 'mxfp4', 'gpt_oss_mxfp4', 'deepseek_v4_fp8', "
        "'online', 'fp8_per_tensor', 'fp8_per_block', 'fp8_per_channel', 'int8_per_channel_weight_only', "
        "'nvfp4_per_token', 'mxfp8'].",
        False,
    ),
    "kv_dtype": (
        "1 validation error for CacheConfig: cache_dtype='bogus': Input should be 'auto', 'float16', 'bfloat16', "
        "'fp8', 'fp8_e4m3', 'fp8_e5m2', 'fp8_inc', 'fp8_ds_mla', 'nvfp4_ds_mla', 'turboquant_k8v4', "
        "'turboquant_4bit_nc', 'turboquant_k3v4_nc', 'turboquant_3bit_nc', 'ultraquant_4bit', "
        "'int4_per_token_head', 'int8_per_token_head', 'fp8_per_token_head', 'nvfp4' or 'nvfp4_4over6'",
        False,
    ),
    "dtype_two_branches": (
        "2 validation errors for ModelConfig: dtype='bogus': Input should be 'auto', 'half', 'float16', "
        "'bfloat16', 'float' or 'float32'; dtype='bogus': Input should be an instance of dtype",
        False,
    ),
    "folder_without_config": (
        "1 validation error for ModelConfig: Invalid repository ID or local directory specified: "
        "'/tmp/emptymodel'. Please verify the following requirements: 1. Provide a valid Hugging Face "
        "repository ID. 2. Specify a local directory that contains a recognized configuration file. "
        "- For Hugging Face models: ensure the presence of a 'config.json'. - For Mistral models: ensure "
        "the presence of a 'params.json'.",
        False,
    ),
    "two_fields": (
        "2 validation errors for SchedulerConfig: max_num_batched_tokens=-5: Input should be greater than "
        "or equal to 1; max_num_seqs=0: Input should be greater than or equal to 1",
        False,
    ),
    "awq_without_checkpoint": ("1 validation error for VllmConfig: Cannot find the config file for awq", False),
}


def test_every_captured_text_has_an_expectation():
    assert EXPECTED.keys() == MESSAGES.keys()


@pytest.mark.parametrize("name", EXPECTED)
def test_a_validation_error_raised_in_process_is_quoted_whole(name):
    quote, unsupported = EXPECTED[name]
    reason = exception_reason(ValidationError(MESSAGES[name]))
    assert reason == f"ValidationError: {quote}"
    assert is_unsupported(reason) is unsupported
    assert "\n" not in reason and "errors.pydantic.dev" not in reason and "ArgsKwargs" not in reason


@pytest.mark.parametrize("name", EXPECTED)
def test_a_validation_error_in_a_log_is_quoted_whole(name):
    # As a process's uncaught traceback prints it, after the frames; a wrapper follows, as in vLLM's logs.
    log = ('  File "x.py", line 1, in f\n'
           f"pydantic_core._pydantic_core.ValidationError: {MESSAGES[name]}\n"
           "RuntimeError: Engine core initialization failed. See root cause above.\n")
    assert engine_reason(log) == f"pydantic_core._pydantic_core.ValidationError: {EXPECTED[name][0]}"


def test_a_validation_error_logged_by_a_child_process_loses_its_prefixes():
    # vLLM's logger puts "(Proc pid=N) LEVEL date [file:line]" before every line of a logged traceback.
    prefix = "(EngineCore pid=3) ERROR 12-03 15:51:06 [core.py:1510] "
    log = "".join(f"{prefix}{line}\n" for line in f"ValidationError: {MESSAGES['two_fields']}".splitlines())
    assert engine_reason(log) == f"ValidationError: {EXPECTED['two_fields'][0]}"


def test_the_api_servers_log_gives_the_sentence_and_skips():
    reason = engine_reason(SERVER_LOG)
    assert reason == f"pydantic_core._pydantic_core.ValidationError: {INT8_ON_FLOAT32}"
    assert is_unsupported(reason)  # "is not supported" is in the detail, not the title line


def test_the_title_alone_still_quotes_what_follows_when_the_layout_is_not_pydantics():
    reason = exception_reason(ValidationError("1 validation error for X\nsomething else entirely"))
    assert reason == "ValidationError: 1 validation error for X: something else entirely"


def test_a_plain_exceptions_message_is_quoted_on_one_line_and_capped():
    reason = exception_reason(ValueError("first line\n  second line\n" + "x" * 2000))
    assert reason.startswith("ValueError: first line second line xxx") and reason.endswith("…")
    assert len(reason) == 1000
    assert exception_reason(RuntimeError()) == "RuntimeError"


def test_each_error_is_capped_but_every_error_is_there():
    errors = "".join(f"field_{i}\n  {'word ' * 200}[type=value_error, input_value={i}, input_type=int]\n" for i in range(3))
    reason = exception_reason(ValidationError(f"3 validation errors for Big\n{errors}"))
    quotes = reason.split(": ", 2)[2].split("; ")
    assert [q.split(":")[0] for q in quotes] == ["field_0=0", "field_1=1", "field_2=2"]
    assert all(len(q) < 520 and q.endswith("…") for q in quotes)


# --------------------------------------------------------------------------- through the engines


@pytest.mark.parametrize(("preset", "raised"), [("quant-int8", EngineUnsupported), ("baseline", EngineStartError)])
def test_the_servers_start_failure_carries_the_detail(preset, raised, tmp_path, monkeypatch):
    printer = tmp_path / "print_log.py"
    printer.write_text(f"import sys\nsys.stdout.write({SERVER_LOG!r})\nsys.exit(1)\n")
    monkeypatch.setattr(platform, "server_command", lambda model: [sys.executable, str(printer), "--model", model])
    server = VllmServer(EngineSpec("/m", preset), reasoning_parser=None, startup_timeout=30, log_dir=tmp_path)
    with pytest.raises(EngineStartError) as info:
        server.start()
    assert type(info.value) is raised  # the baseline never skips: without it nothing can be compared
    assert info.value.reason == f"pydantic_core._pydantic_core.ValidationError: {INT8_ON_FLOAT32}"
    assert f"Engine's reason: {info.value.reason}\n" in str(info.value)


@pytest.mark.parametrize(("name", "raised"), [("int8_on_float32", EngineUnsupported), ("kv_dtype", EngineStartError)])
def test_the_in_process_start_failure_carries_the_detail(name, raised, monkeypatch):
    def llm(**kwargs: object) -> None:
        raise ValidationError(MESSAGES[name])

    # vLLM stands in as a module whose LLM raises what the real one raised; nothing is imported.
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=llm))
    # start() sets the engine's environment defaults; later tests' servers must not inherit them.
    for key in ("VLLM_ENABLE_V1_MULTIPROCESSING", *platform.cpu_engine_env({})):
        value = os.environ.get(key)
        monkeypatch.setenv(key, value or "")  # records the value (or its absence) to restore
        if value is None:
            monkeypatch.delenv(key)
    with pytest.raises(EngineStartError) as info:
        InProcessEngine(EngineSpec("/m", "quant-int8")).start()
    assert type(info.value) is raised
    assert info.value.reason == f"ValidationError: {EXPECTED[name][0]}"
    assert str(info.value).endswith(f"Engine's reason: {info.value.reason}")
