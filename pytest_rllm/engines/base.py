"""What every engine offers the harness, and how engine failures are told apart."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Protocol

from pytest_rllm.engines.spec import EngineSpec


class EngineError(Exception):
    """The engine failed: the message carries the engine's own words and the fix."""


class EngineStartError(EngineError):
    """The engine did not become healthy."""

    def __init__(self, message: str, *, reason: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.log_tail = log_tail


class EngineUnsupported(EngineStartError):
    """The engine rejected the configuration on this hardware: the test skips and quotes the reason."""


class EngineDied(EngineError):
    """The engine process exited while a run was in progress."""


# Phrases with which vLLM rejects a configuration the hardware or build cannot
# run. A start failure matching one of them is a skip (hardware capability);
# any other failure (bad path, bad argument, out of memory) is a failure.
_UNSUPPORTED = re.compile(
    r"requires x86 with AVX-512|AVX-?512 or AMX|not supported on (this|the current|CPU)|is not supported|"
    r"unsupported (on|by|for)|only supported (on|for)|not implemented for|NotImplementedError|"
    r"compute capability|requires (a )?(CUDA|GPU|ROCm)|No available kernel|not available on (CPU|this platform)|"
    r"is not compiled|not built with|undefined symbol|No such operator|"
    # A kernel absent from this build is registered as an empty stub: "_C::op() expected at most 0 argument(s)".
    r"_C::\w+\(\) expected at most 0 argument|Could not run '[^']+' with arguments from the 'CPU' backend|"
    # A kernel left out of this build entirely (cpu_gemm_wna16 is not in _C_AVX2): torch.ops._C lacks the name.
    r"'_OpNamespace' '_C\w*' object has no attribute",
    re.IGNORECASE,
)
# "ValueError: ...", "torch.OutOfMemoryError: ...", after any logger prefix.
_EXCEPTION_LINE = re.compile(r"^([\w.]*(?:Error|Exception|Interrupt)): (.+)$")
_LOG_PREFIX = re.compile(r"^(\([^)]*\)\s+)?([A-Z]+\s+\d\d-\d\d [\d:]+\s+\[[^\]]*\]\s+)?")
# Wrappers that repeat or hide the root cause.
_WRAPPERS = re.compile(r"Engine core initialization failed|Worker failed with error|dictionary changed size", re.I)


def engine_reason(log_text: str) -> str:
    """The engine's own words for why it stopped: the root-cause exception of its log, with its detail.

    vLLM logs the root cause first and wraps it several times after; a
    hardware-capability message wins, then the first exception that is not a
    wrapper, then the last line. A pydantic ValidationError is quoted with the
    errors on the lines after its first (field, value, sentence).
    """
    lines = [_LOG_PREFIX.sub("", raw.strip(), count=1) for raw in log_text.splitlines()]
    quotes = []
    for i, line in enumerate(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            # Only pydantic's layout says which of the following lines are the message's;
            # any other exception is its one line (what follows may be another process's output).
            quotes.append(_quote(match[1], match[2], lines[i + 1 : i + 1 + _MAX_DETAIL_LINES]))
    for quote in quotes:
        if _UNSUPPORTED.search(quote):
            return quote
    for quote in quotes:
        if not _WRAPPERS.search(quote):
            return quote
    if quotes:
        return quotes[-1]
    nonblank = [line for line in lines if line]
    return nonblank[-1] if nonblank else "(the engine printed nothing)"


def exception_reason(exc: BaseException) -> str:
    """The words of an exception raised in this process (the in-process engine), quoted as engine_reason quotes a log."""
    first, *more = str(exc).strip().splitlines() or [""]
    if _VALIDATION.search(first):
        return _quote(type(exc).__name__, first, more)
    # Raised here, the whole message is the exception's: all of its lines, on one.
    return _shorten(f"{type(exc).__name__}: {' '.join([first, *more])}", _MAX_MESSAGE).rstrip(": ")


# "2 validation errors for SchedulerConfig": pydantic's first line; the errors follow it.
_VALIDATION = re.compile(r"^\d+ validation errors? for \S+$")
_VALIDATION_COUNT = re.compile(r"^(\d+) ")
# An error's last line: "<sentence> [type=value_error, input_value='x', input_type=str]".
_ERROR_END = re.compile(
    r"^(?P<sentence>.*?)\s*\[type=[^,\]]+(?:, input_value=(?P<value>.*), input_type=(?P<input_type>[^\]]*))?\]$"
)
# Union branches in a field path ("dtype.literal['auto','half']", "dtype.is-instance[dtype]") name no field.
_UNION_BRANCH = re.compile(r"\.[a-z][\w-]*\[[^\]]*\]")
_MAX_DETAIL_LINES = 200  # lines after a log's exception line that may hold its pydantic errors
_MAX_ERROR_LINES = 20  # one error's lines: vLLM's longest sentence (a bad model folder) takes 7
_MAX_SENTENCE = 500  # characters: the list of quantization methods vLLM names runs to ~480
_MAX_VALUE = 80  # pydantic itself cuts long input values to ~50
_MAX_MESSAGE = 1000  # a plain exception's whole message, on one line


def _quote(name: str, first: str, following: list[str]) -> str:
    """`Name: first line`, and for a pydantic ValidationError each of its errors from the following lines."""
    head = f"{name}: {first}".rstrip(": ")
    if not _VALIDATION.search(first):
        return head
    count = int(_VALIDATION_COUNT.match(first)[1])  # type: ignore[index]
    errors = _validation_errors([line.strip() for line in following], count)
    if errors:
        return f"{head}: " + "; ".join(dict.fromkeys(errors))  # union branches may repeat a sentence
    # Not pydantic's layout: the first line after the title is the best there is.
    detail = next((line.strip() for line in following[:2] if line.strip()), "")
    return f"{head}: {_shorten(detail, _MAX_SENTENCE)}" if detail else head


def _validation_errors(lines: list[str], count: int) -> list[str]:
    """pydantic's errors, each "field=value: sentence", from the lines after "N validation errors for X".

    Each error is an optional field-path line (no spaces), then the sentence,
    which may run over several lines, ending in "[type=..., input_value=...,
    input_type=...]", then a URL line.
    """
    errors: list[str] = []
    block: list[str] = []
    for line in lines:
        if len(errors) == count or not line:
            break
        if line.startswith("For further information visit"):
            continue
        block.append(line)
        end = _ERROR_END.match(" ".join(block[1:] if _is_field(block) else block))
        if end:
            field = _UNION_BRANCH.sub("", block[0]) if _is_field(block) else ""
            errors.append(_one_error(field, end["sentence"], end["value"], end["input_type"]))
            block = []
        elif len(block) > _MAX_ERROR_LINES:
            break
    return errors


def _is_field(block: list[str]) -> bool:
    # A field path has no spaces and comes on a line of its own; a sentence has spaces.
    return len(block) > 1 and " " not in block[0] and "[type=" not in block[0]


def _one_error(field: str, sentence: str, value: str | None, input_type: str | None) -> str:
    sentence = _shorten(sentence.removeprefix("Value error, "), _MAX_SENTENCE)
    # ArgsKwargs: a validator of the whole config failed, and the "value" is every argument.
    if value is None or input_type == "ArgsKwargs":
        return f"{field}: {sentence}" if field else sentence
    value = _shorten(value, _MAX_VALUE)
    return f"{field}={value}: {sentence}" if field else f"{sentence} (input {value})"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def is_unsupported(reason: str) -> bool:
    """Whether a reason (engine_reason's or exception_reason's, detail included) says the hardware or build lacks it."""
    return bool(_UNSUPPORTED.search(reason))


class Engine(Protocol):
    """What the session and the runner ask of an engine; every engine is a context manager."""

    spec: EngineSpec
    served_model: str
    metrics_interval: float  # seconds between telemetry samples unless --rllm-metrics-interval says otherwise

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def client(self, options: Any) -> Any:
        """An async context manager with `send(item, record)` (and optionally `prepare(jobs)`) for this engine."""
        ...

    def check_alive(self) -> None:
        """Raise EngineDied if the engine is gone."""
        ...

    def exited(self) -> bool:
        """True when the engine's process is known to have exited (cheap: no request is made)."""
        ...

    def process_groups(self) -> list[int] | None:
        """Process groups whose CPU time is the engine's; None when it runs on another machine."""
        ...

    def metrics_text(self, only: Collection[str] | None = None) -> str | None:
        """Prometheus text of the engine's metrics, `only` these names if given (synchronous; None when not available)."""
        ...

    def samples(self) -> dict[str, float] | None:
        """{timeline name: value} of telemetry.prometheus.SERIES (synchronous; None when not available)."""
        ...


class EngineContext:
    """`with engine:` starts it and stops it whatever happens inside, as vLLM's RemoteOpenAIServer does."""

    # A server renders /metrics on the event loop that streams every token, at ~8.5 ms of its CPU
    # for the whole text (benchmarks/RESULTS.md), so it is asked ten times a second.
    metrics_interval = 0.1

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
