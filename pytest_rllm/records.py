"""Plain data that flows through the harness: items in, request records out.

Everything here is pure Python and JSON-serialisable, so the JSON report can
carry it and the measurement code can be tested without any engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# How an item's answer is graded; see pytest_rllm.accuracy.grading.
GRADERS = ("math", "choice", "exact")


@dataclass(frozen=True)
class Item:
    """One prompt of a data set, with what is needed to grade its answer."""

    id: str
    domain: str  # "arithmetic", "math", "science", "code", ...
    difficulty: float  # larger is harder; ordered labels are mapped to ranks
    prompt: str  # the user message; the chat template is applied by the engine
    reference: str  # the reference answer, as text
    grader: str = "math"  # one of GRADERS
    dataset: str = ""
    # Optional extras (choices for multiple choice, a shared prefix, ...).
    metadata: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.grader not in GRADERS:
            raise ValueError(f"item {self.id!r}: grader must be one of {GRADERS}, got {self.grader!r}")

    def meta(self, key: str, default: Any = None) -> Any:
        return dict(self.metadata).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        data = dict(data)
        data["metadata"] = tuple(sorted(dict(data.get("metadata") or {}).items()))
        return cls(**data)


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are time.perf_counter() seconds."""

    item_id: str
    domain: str
    difficulty: float
    reference: str
    grader: str
    repeat: int = 0
    t_scheduled: float = 0.0  # when the arrival process said to send it
    t_sent: float | None = None  # when the request left the client
    t_first_token: float | None = None  # first generated token, reasoning included
    t_first_visible: float | None = None  # first answer (non-reasoning) token
    t_done: float | None = None
    # Arrival time of each streamed chunk that carried generated text; a chunk
    # usually holds one token, several under speculative decoding.
    token_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0  # from the server's usage; reasoning included
    reasoning_tokens: int | None = None  # when the server reports it
    reasoning_text: str = ""
    answer_text: str = ""
    finish_reason: str | None = None  # "stop", "length", "abort", ...
    error: str | None = None
    retries: int = 0  # safe retries made before the request was accepted
    thinking: bool = True  # whether the prompt asked the model to reason

    @property
    def ok(self) -> bool:
        return self.error is None and self.t_done is not None

    def _since_sent(self, t: float | None) -> float | None:
        return None if self.t_sent is None or t is None else t - self.t_sent

    @property
    def ttft(self) -> float | None:
        return self._since_sent(self.t_first_token)

    @property
    def ttfvt(self) -> float | None:
        return self._since_sent(self.t_first_visible)

    @property
    def e2e(self) -> float | None:
        return self._since_sent(self.t_done)

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, as vLLM's benchmark defines it."""
        if self.t_first_token is None or self.t_done is None or self.output_tokens < 2:
            return None
        return (self.t_done - self.t_first_token) / (self.output_tokens - 1)

    @property
    def itls(self) -> list[float]:
        times = self.token_times
        return [b - a for a, b in zip(times, times[1:])]

    @property
    def send_lag(self) -> float | None:
        """How late the request left against its scheduled time."""
        if self.t_sent is None:
            return None
        return self.t_sent - self.t_scheduled

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def for_item(cls, item: Item, *, repeat: int = 0, thinking: bool = True) -> RequestRecord:
        return cls(
            item_id=item.id,
            domain=item.domain,
            difficulty=item.difficulty,
            reference=item.reference,
            grader=item.grader,
            repeat=repeat,
            thinking=thinking,
        )


class StreamedText:
    """A request's text as it streams in: its reasoning and answer parts, and the token stamps they carry."""

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.reasoning: list[str] = []
        self.answer: list[str] = []

    def token_arrived(self, now: float) -> None:
        record = self.record
        if record.t_first_token is None:
            record.t_first_token = now
        record.token_times.append(now)

    def add(self, now: float, reasoning: str, answer: str) -> None:
        if reasoning:
            self.reasoning.append(reasoning)
        if answer:
            if self.record.t_first_visible is None and answer.strip():
                self.record.t_first_visible = now
            self.answer.append(answer)

    def close(self, reasoning_tail: str = "", answer_tail: str = "") -> None:
        """The text into the record; the tails: what a think splitter still held at the end."""
        self.record.reasoning_text = "".join(self.reasoning) + reasoning_tail
        self.record.answer_text = "".join(self.answer) + answer_tail
