"""The engine fails to start: each failure is fast, names the engine's reason and the fix, and leaves no process.

A bad model folder, and a configuration that still runs after another failed,
are covered with the other engine faults in test_reliability_engine.py. Here:
a bad server argument and an out-of-memory KV cache (both real vLLM starts
that fail during start-up), and a port that is already taken (caught before
anything is started).
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from processes import processes_with

from pytest_rllm.engines.base import EngineStartError
from pytest_rllm.engines.server import HOST, VllmServer
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.session import RllmSession, RunFailed
from pytest_rllm.settings import RllmSettings


@pytest.fixture
def unique_model(engine_model, tmp_path):
    """The test model under a path unique to this test, so that its processes can be found and reaped."""
    model = tmp_path / f"model-{tmp_path.name}"
    model.symlink_to(engine_model)
    yield str(model)
    for pid in processes_with(str(model)):
        os.kill(pid, signal.SIGKILL)


def failed_start(model: str, tmp_path: Path, **options: str) -> tuple[str, float]:
    settings = RllmSettings.from_values({"model": model, "optimizations": "baseline", "num_prompts": "2",
                                         "startup_timeout": "300s", **options})
    session = RllmSession(settings, log_dir=tmp_path)
    t0 = time.monotonic()
    try:
        with pytest.raises(RunFailed) as info:
            session.run("baseline", "main")
        # The failure is cached: the next test asking for the configuration gets it without a second start.
        t1 = time.monotonic()
        with pytest.raises(RunFailed):
            session.run("baseline", "no-thinking")
        assert time.monotonic() - t1 < 1
        assert session.timings.engines_started == 0
    finally:
        session.close()
    return str(info.value), time.monotonic() - t0


@pytest.mark.engine
def test_a_bad_server_argument_fails_with_vllms_own_words(unique_model, tmp_path):
    message, seconds = failed_start(unique_model, tmp_path, server_arg="--no-such-flag")
    assert "Engine's reason: api_server.py: error: unrecognized arguments: --no-such-flag" in message, message
    assert "--- log tail ---" in message and "--no-such-flag" in message.split("Command:")[1]
    assert seconds < 150  # argument parsing fails right after vLLM's imports, far inside the start-up timeout
    assert not processes_with(unique_model)


@pytest.mark.engine
def test_a_kv_cache_larger_than_memory_fails_with_the_engines_reason(unique_model, tmp_path, monkeypatch):
    # 100,000 GiB of KV cache: vLLM's CPU worker checks it against the node's free memory (a real OOM check).
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "100000")
    message, seconds = failed_start(unique_model, tmp_path)
    reason = message.split("Engine's reason: ", 1)[1].splitlines()[0]
    assert "less than requested memory for kv" in reason, message
    assert "VLLM_CPU_KVCACHE_SPACE" in reason  # vLLM's own fix travels with it
    assert seconds < 200
    assert not processes_with(unique_model)


# --------------------------------------------------------------------------- ports (no engine needed)


def spec_for(model: str = "/nonexistent/model") -> EngineSpec:
    return EngineSpec(model=model, preset="baseline")


def test_a_taken_port_fails_at_once_and_starts_nothing(tmp_path):
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        server = VllmServer(spec_for(), reasoning_parser=None, startup_timeout=60, log_dir=tmp_path, port=port)
        t0 = time.monotonic()
        with pytest.raises(EngineStartError, match=rf"port {port} on 127.0.0.1 is already in use .*let the harness pick a free port"):
            server.start()
        assert time.monotonic() - t0 < 2  # not after vLLM's ~40 s of imports
        assert server.proc is None and not (tmp_path / f"baseline-{port}.log").exists()


def test_a_foreign_server_on_the_port_is_never_taken_for_the_engine(tmp_path):
    # Something that answers /health with 200 already listens there: without the port check the
    # harness would have believed its engine healthy and sent the workload to a stranger.
    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    stranger = http.server.HTTPServer((HOST, 0), Healthy)
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    try:
        port = stranger.server_address[1]
        server = VllmServer(spec_for(), reasoning_parser=None, startup_timeout=60, log_dir=tmp_path, port=port)
        with pytest.raises(EngineStartError, match="already in use"):
            server.start()
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_without_a_port_the_harness_picks_a_free_loopback_port(tmp_path):
    servers = [VllmServer(spec_for(), reasoning_parser=None, startup_timeout=60, log_dir=tmp_path) for _ in range(3)]
    ports = {s.port for s in servers}
    assert len(ports) == 3
    for s in servers:
        with socket.socket() as probe:
            probe.bind((HOST, s.port))  # free right now
        assert s.base_url == f"http://127.0.0.1:{s.port}"


# A stand-in for `vllm serve` that answers /health on the port it is given:
# what is tested here is VllmServer's own bookkeeping, not serving.
HEALTHY_STUB = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        print("GET", self.path, flush=True)
print("stub serving", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_without_a_log_dir_the_log_is_temporary_unless_the_engine_failed(tmp_path, monkeypatch):
    import sys

    from pytest_rllm.engines import platform

    stub = tmp_path / "stub_server.py"
    stub.write_text(HEALTHY_STUB)
    monkeypatch.setattr(platform, "server_command", lambda model: [sys.executable, str(stub), "--model", model])
    server = VllmServer(spec_for(), reasoning_parser=None, startup_timeout=30)
    assert server.log_path is None  # nothing is made before start
    server.start()
    log = server.log_path
    assert log is not None and "stub serving" in log.read_text()
    server.stop()
    assert not log.parent.exists()  # a clean stop removes the temporary folder

    server = VllmServer(spec_for(), reasoning_parser=None, startup_timeout=30)
    server.start()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    log = server.log_path
    with pytest.raises(Exception, match=str(log)):
        server.check_alive()  # the error names the log ...
    server.stop()
    assert log.exists()  # ... so it stays
    log.unlink()
    log.parent.rmdir()
