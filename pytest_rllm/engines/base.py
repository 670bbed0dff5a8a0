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
    r"_C::\w+\(\) expected at most 0 argument|Could not run '[^']+' with arguments from the 'CPU' backend",
    re.IGNORECASE,
)
# "ValueError: ...", "torch.OutOfMemoryError: ...", after any logger prefix.
_EXCEPTION_LINE = re.compile(r"^([\w.]*(?:Error|Exception|Interrupt)): (.+)$")
_LOG_PREFIX = re.compile(r"^(\([^)]*\)\s+)?([A-Z]+\s+\d\d-\d\d [\d:]+\s+\[[^\]]*\]\s+)?")
# Wrappers that repeat or hide the root cause.
_WRAPPERS = re.compile(r"Engine core initialization failed|Worker failed with error|dictionary changed size", re.I)


def engine_reason(log_text: str) -> str:
    """The engine's own words for why it stopped: the root-cause exception line of its log.

    vLLM logs the root cause first and wraps it several times after; a
    hardware-capability message wins, then the first exception that is not a
    wrapper, then the last line.
    """
    exceptions = []
    for raw in log_text.splitlines():
        line = _LOG_PREFIX.sub("", raw.strip(), count=1)
        match = _EXCEPTION_LINE.match(line)
        if match:
            exceptions.append(line)
    for line in exceptions:
        if _UNSUPPORTED.search(line):
            return line
    for line in exceptions:
        if not _WRAPPERS.search(line):
            return _with_detail(line, log_text)
    if exceptions:
        return exceptions[-1]
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    return lines[-1] if lines else "(the engine printed nothing)"


_VALIDATION = re.compile(r"\d+ validation errors? for \w+$")


def _with_detail(line: str, log_text: str) -> str:
    """pydantic puts the words on the line after "1 validation error for ModelConfig": add that line."""
    if not _VALIDATION.search(line):
        return line
    lines = log_text.splitlines()
    for i, raw in enumerate(lines):
        if raw.strip().endswith(line):
            detail = next((n.strip() for n in lines[i + 1 : i + 3] if n.strip()), "")
            return f"{line}: {detail}" if detail else line
    return line


def is_unsupported(reason: str, log_text: str = "") -> bool:
    return bool(_UNSUPPORTED.search(reason))


class Engine(Protocol):
    """What the session and the runner ask of an engine; every engine is a context manager."""

    spec: EngineSpec
    served_model: str

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

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
