"""Where reasoning ends and the answer begins: the one think/answer splitter, and the server's parser.

A server started with a reasoning parser splits the text itself; without one
(or in-process, or a raw answer to grade) the text carries the think block,
and `ThinkSplitter` / `split_thinking` split it at the end-of-thinking marker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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


def resolve_reasoning_parser(name: str, model: str, settings: RllmSettings) -> str | None:
    """--rllm-reasoning-parser; 'auto' picks from the model's chat template."""
    if name == "none":
        return None
    if name != "auto":
        return name
    from pytest_rllm.pocket import MODEL_DIR, REASONING_PARSER

    if settings.uses_embedded_model and Path(model) == Path(MODEL_DIR):
        return REASONING_PARSER
    config = Path(model) / "tokenizer_config.json"
    if config.exists() and "enable_thinking" in config.read_text(errors="replace"):
        return "qwen3"
    if "qwen3" in model.lower():
        return "qwen3"
    return "deepseek_r1"


__all__ = ["THINK_CLOSE", "THINK_OPEN", "ThinkSplitter", "resolve_reasoning_parser", "split_thinking", "visible_text"]
