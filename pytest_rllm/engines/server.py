"""vLLM's OpenAI API server as a subprocess: free port, /health with a deadline, no survivors.

The server runs in its own process group. Shutdown is terminate -> wait -> kill
of the whole group; a watchdog process (engines/reaper.py) does the same if the
pytest process itself dies without running its finalizers (kill -9, a crash).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pytest_rllm.engines import platform
from pytest_rllm.engines.base import EngineDied, EngineStartError, EngineUnsupported, engine_reason, is_unsupported
from pytest_rllm.engines.spec import EngineSpec

HOST = "127.0.0.1"  # never bind beyond loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class VllmServer:
    """Context manager around one `vllm serve` process for one EngineSpec."""

    def __init__(
        self,
        spec: EngineSpec,
        *,
        reasoning_parser: str | None,
        startup_timeout: float,
        log_dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.spec = spec
        self.reasoning_parser = reasoning_parser
        self.startup_timeout = startup_timeout
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.served_model = spec.model
        self._env = env
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="rllm-engine-"))
        self.log_path = self._log_dir / f"{spec.preset}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------
    def command(self) -> list[str]:
        cmd = platform.server_command(self.spec.model)
        cmd += ["--host", HOST, "--port", str(self.port)]
        if self.reasoning_parser:
            cmd += ["--reasoning-parser", self.reasoning_parser]
        return cmd + self.spec.server_flags()

    def start(self) -> None:
        env = platform.cpu_engine_env(self._env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            # An argument list, never a shell: model names and flags are not interpreted.
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "pytest_rllm.engines.reaper", str(os.getpid()), str(self.proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._raise_start_failure(f"exited with code {code} during start-up")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self._raise_start_failure(
                    f"was not healthy within --rllm-startup-timeout={self.startup_timeout:g}s "
                    f"(raise it for large models)"
                )
            time.sleep(0.5)

    def _raise_start_failure(self, what: str) -> None:
        log_text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        reason = engine_reason(log_text)
        tail = _tail(self.log_path)
        message = (
            f"vLLM server for preset {self.spec.preset!r} (model {self.spec.model}) {what}.\n"
            f"Engine's reason: {reason}\n"
            f"Command: {' '.join(self.command())}\n"
            f"Log: {self.log_path}\n--- log tail ---\n{tail}"
        )
        if self.spec.preset != "baseline" and is_unsupported(reason, log_text):
            raise EngineUnsupported(message, reason=reason, log_tail=tail)
        raise EngineStartError(message, reason=reason, log_tail=tail)

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop_group(proc, grace)
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            # The group is gone, so the reaper exits by itself; don't leave it waiting.
            try:
                reaper.wait(timeout=2)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------
    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise EngineDied(
                f"vLLM server for preset {self.spec.preset!r} is gone (exit code {code}). "
                f"Engine's reason: {engine_reason(_tail(self.log_path, 200))}\nLog: {self.log_path}"
            )

    def metrics_text(self) -> str | None:
        try:
            with urllib.request.urlopen(self.base_url + "/metrics", timeout=5) as resp:
                return resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return None

    def info(self) -> dict[str, Any]:
        return {
            "kind": "server",
            "engine": platform.engine_version_text(),
            "preset": self.spec.preset,
            "model": self.spec.model,
            "reasoning_parser": self.reasoning_parser,
            "startup_seconds": self.startup_seconds,
            "pid": None if self.proc is None else self.proc.pid,
        }


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid  # start_new_session made the server its group's leader
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children (engine core) may linger a moment.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
