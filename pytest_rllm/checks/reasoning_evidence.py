"""Is the served model a reasoning model? Answered from what the baseline run's replies showed.

The suites' RLLM findings (KV cache against a plain reference, the gain from
thinking, lengths that follow difficulty) say nothing about a model that never
reasons: they skip once with the count measured, while the serving,
optimization and baseline checks still run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A reasoning model asked to think reasons in nearly every reply; a plain model in none.
REASONING_SHARE = 0.5


@dataclass(frozen=True)
class ReasoningEvidence:
    replies: int  # completed replies to prompts that asked for thinking
    with_reasoning: int  # of them, replies that carried reasoning text
    parser: str | None = None  # the server's --reasoning-parser ("none": it ran without); None: not a server

    @property
    def is_reasoning_model(self) -> bool:
        return self.replies > 0 and self.with_reasoning >= REASONING_SHARE * self.replies

    def text(self) -> str:
        return f"{self.with_reasoning} of {self.replies} replies had reasoning"

    def skip_reason(self) -> str:
        parser = f" (the server's reasoning parser: {self.parser})" if self.parser else ""
        return (f"not a reasoning model: {self.text()} in the baseline run{parser}, so findings about "
                "reasoning do not apply; point the suites at one with --rllm-model (e.g. "
                "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B), or pass --rllm-reasoning-parser if its replies "
                "hide the reasoning")


def reasoning_evidence(run: Any) -> ReasoningEvidence:
    asked = [r for r in run.records if r.ok and r.thinking]
    with_reasoning = sum(1 for r in asked if r.reasoning_text.strip() or (r.reasoning_tokens or 0) > 0)
    engine = getattr(run, "engine", None) or {}
    parser = (engine.get("reasoning_parser") or "none") if "reasoning_parser" in engine else None
    return ReasoningEvidence(len(asked), with_reasoning, parser)
