"""What every engine offers the harness, and how engine failures are told apart."""

from __future__ import annotations

import re
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
    r"is not compiled|not built with|undefined symbol|No such operator|Could not run '[^']+' with arguments from the 'CPU' backend",
    re.IGNORECASE,
)
_ERROR_LINE = re.compile(r"(\w+(Error|Exception)|NotImplementedError|ValueError|RuntimeError|AssertionError)\b[:(]")


def engine_reason(log_text: str) -> str:
    """The engine's own words for why it stopped: the last error line of its log."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            # Drop logger prefixes such as "(EngineCore pid=1) ERROR 11-23 ... file.py:12]".
            return re.sub(r"^.*?\]\s+", "", line) if "]" in line[:120] else line
    return lines[-1] if lines else "(the engine printed nothing)"


def is_unsupported(reason: str, log_text: str = "") -> bool:
    return bool(_UNSUPPORTED.search(reason)) or bool(_UNSUPPORTED.search(log_text[-4000:]) and not reason)


class Engine(Protocol):
    spec: EngineSpec
    base_url: str | None  # OpenAI-compatible root URL; None for in-process engines
    served_model: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def check_alive(self) -> None:
        """Raise EngineDied if the engine is gone."""
        ...

    def metrics_text(self) -> str | None:
        """Prometheus text of the engine's metrics (synchronous; None when not available)."""
        ...
