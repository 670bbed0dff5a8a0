"""--rllm-reasoning-parser=auto: the parser chosen from a model folder's own files, and why.

Each row builds, in tmp_path, the files a real model ships: its chat template
(where it lives: tokenizer_config.json, chat_template.jinja, chat_template.json),
its added tokens (tokenizer_config's added_tokens_decoder, tokenizer.json's
added_tokens, Mistral's tekken.json) and its config.json. The templates are cut
down to the parts that matter here: the thinking markers, the kwargs that switch
thinking, and what the generation prompt writes. Nothing is downloaded and no
engine starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_rllm.engines.platform import vllm_distribution
from pytest_rllm.pocket import MODEL_DIR, REASONING_PARSER
from pytest_rllm.reasoning import (
    ParserChoice,
    choose_reasoning_parser,
    reasoning_parser_from_files,
    resolve_reasoning_parser,
)
from pytest_rllm.settings import RllmSettings

# ---------------------------------------------------------------- the models' files, cut down

# DeepSeek-R1-Distill-Qwen/Llama (current revision): the history drops everything up to
# </think>, and the generation prompt opens the think block for the model.
R1_DISTILL_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_tool=false) %}{{bos_token}}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
# The first release (January 2025): the model writes <think> itself.
R1_DISTILL_FIRST_TEMPLATE = R1_DISTILL_TEMPLATE.replace("<｜Assistant｜><think>\\n'}}", "<｜Assistant｜>'}}")
R1_DISTILL_QWEN_TOKENS = {151643: "<｜end▁of▁sentence｜>", 151644: "<｜User｜>", 151645: "<｜Assistant｜>",
                          151648: "<think>", 151649: "</think>"}
R1_DISTILL_LLAMA_TOKENS = {128000: "<｜begin▁of▁sentence｜>", 128011: "<｜User｜>", 128012: "<｜Assistant｜>",
                           128013: "<think>", 128014: "</think>"}

QWEN_TOKENS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>", 151657: "<tool_call>",
               151658: "</tool_call>"}
QWEN3_TOKENS = {**QWEN_TOKENS, 151667: "<think>", 151668: "</think>"}

# Qwen3 (hybrid): reasoning_content in the history, enable_thinking=false writes an empty think block.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}{%- set content = message.content %}"
    "{%- if message.role == 'assistant' %}{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}{%- set reasoning_content = content.split('</think>')[0] %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content + '\\n</think>\\n\\n' + content }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
# Qwen3-Instruct-2507: the same history handling, no enable_thinking, and the model never thinks.
QWEN3_INSTRUCT_2507_TEMPLATE = QWEN3_TEMPLATE[: QWEN3_TEMPLATE.index("{%- if enable_thinking")] + "{%- endif %}"
# Qwen3-Thinking-2507 and QwQ-32B: always thinking, the generation prompt opens the block.
QWEN_OPENS_THINK_TEMPLATE = (
    "{%- for message in messages %}{%- set content = message.content %}"
    "{%- if message.role == 'assistant' and not loop.last %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)

# Magistral / Ministral-3-Reasoning: the default system prompt teaches [THINK]...[/THINK],
# and thinking blocks in messages are written between the same tokens.
MAGISTRAL_TEMPLATE = (
    "{%- set default_system_message = 'First draft your thinking process until you arrive at a response. "
    "Format: [THINK]your thoughts[/THINK] then a self-contained response.' %}{{- bos_token }}"
    "{%- if messages[0]['role'] != 'system' %}{{- '[SYSTEM_PROMPT]' + default_system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- endif %}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{{- '[INST]' + message['content'] + '[/INST]' }}{%- elif message['role'] == 'assistant' %}"
    "{%- for block in message['content'] %}{%- if block['type'] == 'thinking' %}"
    "{{- '[THINK]' + block['thinking'] + '[/THINK]' }}{%- else %}{{- block['text'] }}{%- endif %}{%- endfor %}"
    "{{- eos_token }}{%- endif %}{%- endfor %}"
)
# Mistral-Small-3.2-Instruct: the same tekken vocabulary (with [THINK]), no thinking in the template.
MISTRAL_INSTRUCT_TEMPLATE = (
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}"
    "{{- '[SYSTEM_PROMPT]' + messages[0]['content'] + '[/SYSTEM_PROMPT]' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}"
)
MISTRAL_TOKENS = {1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 9: "[TOOL_CALLS]", 17: "[SYSTEM_PROMPT]",
                  18: "[/SYSTEM_PROMPT]", 34: "[THINK]", 35: "[/THINK]"}

# gpt-oss: harmony; the reasoning goes to the analysis channel. Shipped as chat_template.jinja.
GPT_OSS_TEMPLATE = (
    "{%- macro render_system() %}{{- '<|start|>system<|message|>Reasoning: ' + reasoning_effort + '\\n\\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>' }}"
    "{%- endmacro %}{{- render_system() }}{%- for message in messages %}{%- if message.role == 'assistant' %}"
    "{%- if message.thinking %}{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }}"
    "{%- endif %}{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}"
    "{%- else %}{{- '<|start|>' + message.role + '<|message|>' + message.content + '<|end|>' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|start|>assistant{%- endif %}"
)
GPT_OSS_TOKENS = {199998: "<|startoftext|>", 200002: "<|return|>", 200003: "<|constrain|>", 200005: "<|channel|>",
                  200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>", 200012: "<|call|>"}

# Granite 3.2: `thinking` switches on a system prompt that names the two phrases the parser splits at.
GRANITE_32_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- elif thinking %}{%- set system_message = 'You are a helpful AI assistant.\\nRespond to every user query "
    "in a comprehensive and detailed way. You can write down your thoughts and reasoning process before responding. "
    "Write your thoughts after \\'Here is my thought process:\\' and write your response after "
    "\\'Here is my response:\\' for each user query.' %}"
    "{%- else %}{%- set system_message = 'You are a helpful AI assistant.' %}{%- endif %}"
    "{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}"
    "{%- for message in messages %}{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] }}"
    "{%- if loop.last and add_generation_prompt %}{{- '<|end_of_text|>\\n<|start_of_role|>assistant<|end_of_role|>' }}"
    "{%- else %}{{- '<|end_of_text|>\\n' }}{%- endif %}{%- endfor %}"
)
# Granite 3.1: the same roles, no thinking switch.
GRANITE_31_TEMPLATE = (
    "{%- set system_message = 'You are Granite, developed by IBM. You are a helpful AI assistant.' %}"
    "{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}"
    "{%- for message in messages %}{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] }}"
    "{{- '<|end_of_text|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
)
GRANITE_TOKENS = {0: "<|end_of_text|>", 49152: "<|start_of_role|>", 49153: "<|end_of_role|>", 49154: "<|tool_call|>"}

# SmolLM2-135M-Instruct: ChatML with a default system prompt; its tokens are all StarCoder-style.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SMOLLM2_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                  "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                  "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>"]

# Llama-3.1-8B-Instruct: header ids, ipython tool turns, and 250 reserved tokens.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{%- if builtin_tools is defined or tools is not none %}"
    "{{- 'Environment: ipython\\n' }}{%- endif %}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n<|eot_id|>' }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
LLAMA3_TOKENS = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
                 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>", 128010: "<|python_tag|>",
                 **{128011 + i: f"<|reserved_special_token_{i + 3}|>" for i in range(245)}}


@dataclass(frozen=True)
class ModelFiles:
    """What one real model ships, reduced to the files the choice reads."""

    template: str | list[dict[str, str]] | None = None
    template_in: str = "tokenizer_config.json"  # or chat_template.jinja / chat_template.json
    tokens: dict[int, str] = field(default_factory=dict)  # tokenizer_config's added_tokens_decoder
    tokenizer_json_tokens: list[str] = field(default_factory=list)  # tokenizer.json's added_tokens
    tekken_special_tokens: list[str] | None = None  # Mistral's tekken.json
    model_type: str | None = None
    architecture: str | None = None

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer_config: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        if self.tokens:
            tokenizer_config["added_tokens_decoder"] = {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": not t.startswith("<think") and not t.startswith("</think")}
                for i, t in self.tokens.items()
            }
        if self.template is not None and self.template_in == "tokenizer_config.json":
            tokenizer_config["chat_template"] = self.template
        elif self.template_in == "chat_template.jinja":
            (folder / "chat_template.jinja").write_text(str(self.template), encoding="utf-8")
        elif self.template_in == "chat_template.json":
            (folder / "chat_template.json").write_text(json.dumps({"chat_template": self.template}), encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
        if self.tokenizer_json_tokens:
            added = [{"id": i, "content": t, "special": True} for i, t in enumerate(self.tokenizer_json_tokens)]
            tokenizer = {"version": "1.0", "added_tokens": added, "model": {"type": "BPE", "vocab": {}, "merges": []}}
            (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
        if self.tekken_special_tokens is not None:
            specials = [{"rank": i, "token_str": t, "is_control": True} for i, t in enumerate(self.tekken_special_tokens)]
            tekken = {"config": {"pattern": "", "num_vocab_tokens": 131072, "version": "v13"}, "vocab": [],
                      "special_tokens": specials}
            (folder / "tekken.json").write_text(json.dumps(tekken), encoding="utf-8")
        if self.model_type or self.architecture:
            config: dict[str, object] = {}
            if self.model_type:
                config["model_type"] = self.model_type
            if self.architecture:
                config["architectures"] = [self.architecture]
            (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        return folder


# (family, files, parser, words the reason must hold)
TABLE = [
    pytest.param(ModelFiles(R1_DISTILL_TEMPLATE, tokens=R1_DISTILL_QWEN_TOKENS, model_type="qwen2",
                            architecture="Qwen2ForCausalLM"),
                 "deepseek_r1", "opens <think> in the generation prompt", id="DeepSeek-R1-Distill-Qwen"),
    pytest.param(ModelFiles(R1_DISTILL_FIRST_TEMPLATE, tokens=R1_DISTILL_QWEN_TOKENS, model_type="qwen2",
                            architecture="Qwen2ForCausalLM"),
                 "deepseek_r1", "handles <think>...</think>", id="DeepSeek-R1-Distill-Qwen-first-release"),
    pytest.param(ModelFiles(R1_DISTILL_TEMPLATE, tokens=R1_DISTILL_LLAMA_TOKENS, model_type="llama",
                            architecture="LlamaForCausalLM"),
                 "deepseek_r1", "opens <think> in the generation prompt", id="DeepSeek-R1-Distill-Llama"),
    pytest.param(ModelFiles(QWEN3_TEMPLATE, tokens=QWEN3_TOKENS, model_type="qwen3", architecture="Qwen3ForCausalLM"),
                 "qwen3", "enable_thinking", id="Qwen3"),
    pytest.param(ModelFiles(QWEN_OPENS_THINK_TEMPLATE, tokens=QWEN_TOKENS, model_type="qwen2",
                            architecture="Qwen2ForCausalLM"),
                 "deepseek_r1", "opens <think> in the generation prompt", id="QwQ-32B"),
    pytest.param(ModelFiles(QWEN_OPENS_THINK_TEMPLATE, tokens=QWEN3_TOKENS, model_type="qwen3_moe",
                            architecture="Qwen3MoeForCausalLM"),
                 "deepseek_r1", "opens <think> in the generation prompt", id="Qwen3-Thinking-2507"),
    pytest.param(ModelFiles(QWEN3_INSTRUCT_2507_TEMPLATE, tokens=QWEN3_TOKENS, model_type="qwen3",
                            architecture="Qwen3ForCausalLM"),
                 None, "non-thinking Qwen3", id="Qwen3-Instruct-2507"),
    pytest.param(ModelFiles(MAGISTRAL_TEMPLATE, template_in="chat_template.jinja", tokens=MISTRAL_TOKENS,
                            model_type="mistral3", architecture="Mistral3ForConditionalGeneration"),
                 "mistral", "[THINK]", id="Magistral-Small"),
    pytest.param(ModelFiles(None, tekken_special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
                                                         "[THINK]", "[/THINK]"]),
                 "mistral", "added token [THINK], no chat template", id="Magistral-tekken-only"),
    pytest.param(ModelFiles(MISTRAL_INSTRUCT_TEMPLATE, template_in="chat_template.jinja", tokens=MISTRAL_TOKENS,
                            model_type="mistral3", architecture="Mistral3ForConditionalGeneration"),
                 None, "no thinking markers in the chat template", id="Mistral-Small-3.2-Instruct"),
    pytest.param(ModelFiles(GPT_OSS_TEMPLATE, template_in="chat_template.jinja", tokens=GPT_OSS_TOKENS,
                            model_type="gpt_oss", architecture="GptOssForCausalLM"),
                 "openai_gptoss", "model_type gpt_oss", id="gpt-oss"),
    pytest.param(ModelFiles(GPT_OSS_TEMPLATE, template_in="chat_template.jinja", tokens=GPT_OSS_TOKENS),
                 "openai_gptoss", "harmony", id="gpt-oss-without-config"),
    pytest.param(ModelFiles(GRANITE_32_TEMPLATE, tokens=GRANITE_TOKENS, model_type="granite",
                            architecture="GraniteForCausalLM"),
                 "granite", "Here is my thought process", id="Granite-3.2-Instruct"),
    pytest.param(ModelFiles(GRANITE_32_TEMPLATE.replace("Here is my thought process:", "my thoughts:"),
                            tokens=GRANITE_TOKENS, model_type="granite", architecture="GraniteForCausalLM"),
                 "granite", "'thinking' template kwarg", id="Granite-thinking-kwarg"),
    pytest.param(ModelFiles(GRANITE_31_TEMPLATE, tokens=GRANITE_TOKENS, model_type="granite",
                            architecture="GraniteForCausalLM"),
                 None, "no thinking markers", id="Granite-3.1-Instruct"),
    pytest.param(ModelFiles(SMOLLM2_TEMPLATE, template_in="chat_template.jinja", tokenizer_json_tokens=SMOLLM2_TOKENS,
                            model_type="llama", architecture="LlamaForCausalLM"),
                 None, "no thinking markers in the chat template", id="SmolLM2-135M-Instruct"),
    pytest.param(ModelFiles(LLAMA3_TEMPLATE, tokens=LLAMA3_TOKENS, model_type="llama", architecture="LlamaForCausalLM"),
                 None, "no thinking markers in the chat template", id="Llama-3.1-8B-Instruct"),
    pytest.param(ModelFiles(None, tokens=LLAMA3_TOKENS, model_type="llama", architecture="LlamaForCausalLM"),
                 None, "no chat template and no thinking markers", id="Llama-3.1-8B-base"),
]


@pytest.mark.parametrize(("files", "parser", "reason_words"), TABLE)
def test_the_parser_is_read_from_the_model_files(tmp_path, files, parser, reason_words):
    choice = reasoning_parser_from_files(files.write(tmp_path / "model"))
    assert (choice.parser, reason_words in choice.reason) == (parser, True), choice.reason


@pytest.mark.parametrize(("files", "parser", "reason_words"), [p for p in TABLE if isinstance(p.values[0].template, str)])
def test_opens_think_is_said_exactly_where_the_rendered_prompt_ends_in_an_open_think(tmp_path, files, parser, reason_words):
    """The choice reads the template as text; rendering it (as vLLM does) shows the text reading is right."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(files.template).render(
        messages=[{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, bos_token="<s>",
        eos_token="</s>", tools=None, reasoning_effort="medium",
    )
    choice = reasoning_parser_from_files(files.write(tmp_path / "model"))
    assert prompt.rstrip().endswith("<think>") == ("opens <think> in the generation prompt" in choice.reason), (prompt[-80:], choice.reason)


def registry_of(*names: str):
    return lambda: frozenset(names)


ALL_FIVE = registry_of("deepseek_r1", "qwen3", "mistral", "openai_gptoss", "granite")


@pytest.mark.parametrize(("files", "parser", "reason_words"), TABLE)
def test_auto_gives_the_same_choice_where_vllm_registers_the_name(tmp_path, files, parser, reason_words):
    folder = files.write(tmp_path / "model")
    choice = choose_reasoning_parser("auto", str(folder), RllmSettings(model=str(folder)), registry=ALL_FIVE)
    assert choice == reasoning_parser_from_files(folder)


# ---------------------------------------------------------------- where the template lives


def test_a_list_of_named_templates_is_read_whole(tmp_path):
    named = [{"name": "default", "template": SMOLLM2_TEMPLATE}, {"name": "tool_use", "template": QWEN3_TEMPLATE}]
    folder = ModelFiles(named, tokens=QWEN3_TOKENS, model_type="qwen3").write(tmp_path / "m")
    assert reasoning_parser_from_files(folder).parser == "qwen3"


def test_a_chat_template_json_is_read(tmp_path):
    folder = ModelFiles(QWEN3_TEMPLATE, template_in="chat_template.json", model_type="qwen3").write(tmp_path / "m")
    assert reasoning_parser_from_files(folder) == ParserChoice("qwen3", "chat template has enable_thinking")


def test_the_template_outranks_think_tokens_it_never_uses(tmp_path):
    """Tokenizers carry think tokens their model may never write: the template is the model's word."""
    folder = ModelFiles(SMOLLM2_TEMPLATE, tokens=QWEN3_TOKENS, model_type="qwen2").write(tmp_path / "m")
    assert reasoning_parser_from_files(folder).parser is None


def test_think_tokens_decide_when_there_is_no_template(tmp_path):
    folder = ModelFiles(None, tokens=R1_DISTILL_QWEN_TOKENS, model_type="qwen2").write(tmp_path / "m")
    assert reasoning_parser_from_files(folder) == ParserChoice("deepseek_r1", "added token </think>, no chat template")


def test_unreadable_files_count_as_absent(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    (folder / "config.json").write_text("[]", encoding="utf-8")
    assert reasoning_parser_from_files(folder).parser is None


# ---------------------------------------------------------------- vLLM's registry


def test_a_name_the_installed_vllm_lacks_falls_back_to_one_with_the_same_markers(tmp_path):
    folder = ModelFiles(QWEN3_TEMPLATE, model_type="qwen3").write(tmp_path / "m")
    choice = choose_reasoning_parser("auto", str(folder), RllmSettings(model=str(folder)),
                                     registry=registry_of("deepseek_r1", "granite"))
    assert choice.parser == "deepseek_r1"
    assert "'qwen3' is not registered" in choice.reason and "same <think> markers" in choice.reason


def test_a_name_with_no_stand_in_serves_without_a_parser_and_says_so(tmp_path):
    folder = ModelFiles(MAGISTRAL_TEMPLATE, tokens=MISTRAL_TOKENS).write(tmp_path / "m")
    choice = choose_reasoning_parser("auto", str(folder), RllmSettings(model=str(folder)),
                                     registry=registry_of("deepseek_r1", "qwen3"))
    assert choice.parser is None
    assert "'mistral' is not registered" in choice.reason and "no parser" in choice.reason


def test_an_unreadable_registry_keeps_the_choice_and_says_so(tmp_path):
    folder = ModelFiles(QWEN3_TEMPLATE).write(tmp_path / "m")
    choice = choose_reasoning_parser("auto", str(folder), RllmSettings(model=str(folder)),
                                     registry=lambda: "vllm is not installed here")
    assert choice == ParserChoice("qwen3", "chat template has enable_thinking; "
                                           "not checked against vLLM's registry: vllm is not installed here")


def test_no_parser_needs_no_registry(tmp_path):
    folder = ModelFiles(LLAMA3_TEMPLATE, model_type="llama").write(tmp_path / "m")

    def registry():
        raise AssertionError("the registry was read for a model that gets no parser")

    assert choose_reasoning_parser("auto", str(folder), RllmSettings(model=str(folder)), registry=registry).parser is None


def test_every_name_the_choice_gives_is_registered_in_the_installed_vllm_and_reading_it_imports_no_vllm(tmp_path):
    """The real registry (vllm.reasoning.ReasoningParserManager), read as the plugin reads it: a few seconds."""
    if vllm_distribution() is None:
        pytest.skip("vllm is not installed")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # an empty cache: the registry itself is read
    code = (
        "import json, sys; from pytest_rllm.reasoning import registered_reasoning_parsers as r; names = r();"
        "print(json.dumps([names if isinstance(names, str) else sorted(names),"
        " [m for m in ('vllm', 'torch') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180, env=env)
    registered, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert not isinstance(registered, str), registered
    produced = {p.values[1] for p in TABLE if p.values[1]} | {REASONING_PARSER}
    assert produced <= set(registered), f"not registered: {sorted(produced - set(registered))}"
    # Remembered for the next session of this installation, which then starts no subprocess.
    again = subprocess.run([sys.executable, "-c", code.replace("names = r();", "import pytest_rllm.engines.platform as p;"
                            " p.json_probe = None; names = r();")], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert json.loads(again.stdout.strip().splitlines()[-1])[0] == registered


# ---------------------------------------------------------------- names, hub ids, the embedded model


def test_explicit_names_pass_through_unchecked():
    settings = RllmSettings()
    assert choose_reasoning_parser("none", "x", settings) == ParserChoice(None, "--rllm-reasoning-parser=none")
    assert choose_reasoning_parser("granite", "x", settings) == ParserChoice("granite", "--rllm-reasoning-parser=granite")
    assert resolve_reasoning_parser("deepseek_r1", "x", settings) == "deepseek_r1"


@pytest.mark.parametrize(("hub_id", "parser"), [("Qwen/Qwen3-8B", "qwen3"), ("deepseek-ai/DeepSeek-R1", "deepseek_r1")])
def test_a_hub_id_keeps_the_name_guess_and_says_the_files_were_not_read(hub_id, parser):
    choice = choose_reasoning_parser("auto", hub_id, RllmSettings(model=hub_id), registry=ALL_FIVE)
    assert choice.parser == parser
    assert f"{hub_id} is not a local folder" in choice.reason and "could not be read" in choice.reason


def test_the_embedded_model_keeps_its_checked_parser():
    def registry():
        raise AssertionError("the embedded model's parser is checked by tests/test_pocket.py, not here")

    choice = choose_reasoning_parser("auto", str(MODEL_DIR), RllmSettings(), registry=registry)
    assert choice.parser == REASONING_PARSER == "qwen3"
    assert choose_reasoning_parser("auto", RllmSettings().model, RllmSettings(), registry=registry) == choice
    assert resolve_reasoning_parser("auto", str(MODEL_DIR), RllmSettings()) == "qwen3"


def test_the_embedded_model_files_agree_with_its_shortcut():
    """Served from a copy (not the shortcut), the pocket model's own files choose the same parser."""
    assert reasoning_parser_from_files(MODEL_DIR) == ParserChoice(REASONING_PARSER, "chat template has enable_thinking")


def test_the_header_text_names_parser_and_reason():
    assert ParserChoice("qwen3", "chat template has enable_thinking").text == "qwen3 (chat template has enable_thinking)"
    assert ParserChoice(None, "no thinking markers in the chat template").text == \
        "none (no thinking markers in the chat template)"
