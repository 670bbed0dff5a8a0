"""No engine process outlives the pytest session: normal end, Ctrl-C, SIGTERM, kill -9, a crash, a timeout.

Each case runs pytest in a subprocess on a real vLLM server (CPU build), injects
the fault, and then checks the process table: nothing that serves the case's
model may remain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import ctrl_c_delivered, processes_with, wait_until

pytestmark = pytest.mark.engine

TEST_FILE = '''
import os, threading, time
from pathlib import Path

def _crash_when_engine_appears(marker):
    while True:
        for proc in Path("/proc").iterdir():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    time.sleep(1.0)
                    os._exit(3)  # a hard crash: no finalizer, no atexit
            except OSError:
                pass
        time.sleep(0.2)

if os.environ.get("RLLM_TEST_CRASH_ON"):
    threading.Thread(target=_crash_when_engine_appears, args=(os.environ["RLLM_TEST_CRASH_ON"],), daemon=True).start()

def test_uses_an_engine(rllm_run):
    run = rllm_run("baseline", "main")
    assert run.summary()["completed"] == 4
'''


@pytest.fixture
def case(tmp_path, engine_model):
    """A pytest project whose model path is unique to this case, so its processes can be told apart."""
    model = tmp_path / f"model-{tmp_path.name}"
    model.symlink_to(engine_model)
    (tmp_path / "test_engine_user.py").write_text(TEST_FILE)

    def start(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_engine_user.py",
               f"--rllm-model={model}", "--rllm-num-prompts=4", "--rllm-max-tokens=32",
               "--rllm-optimizations=baseline", *extra]
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True,
                                preexec_fn=ctrl_c_delivered)

    yield str(model), start
    for pid in processes_with(str(model)):  # never leak into other tests, even when one fails
        os.kill(pid, signal.SIGKILL)


def engine_core_started(marker: str) -> bool:
    """The API server has spawned its engine core (a child in the same group): the tree is complete."""
    pids = processes_with(marker)
    if not pids:
        return False
    groups = {os.getpgid(p) for p in pids if Path(f"/proc/{p}").exists()}
    members = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    count = 0
    for p in members:
        try:
            if os.getpgid(int(p.name)) in groups:
                count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count >= 2


def test_normal_end_leaves_no_engine(case):
    model, start = case
    proc = start()
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert wait_until(lambda: not processes_with(model), 10), processes_with(model)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_engine(case, sig):
    model, start = case
    proc = start()
    assert wait_until(lambda: engine_core_started(model), 120), "the engine never started"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert wait_until(lambda: not processes_with(model), 20), processes_with(model)


def test_kill_9_of_pytest_leaves_no_engine(case):
    model, start = case
    proc = start()
    assert wait_until(lambda: engine_core_started(model), 120), "the engine never started"
    proc.kill()  # SIGKILL: no finalizer runs; the reaper must do it
    proc.communicate(timeout=30)
    assert wait_until(lambda: not processes_with(model), 20), processes_with(model)


def test_crash_of_pytest_leaves_no_engine(case):
    model, start = case
    proc = start(env={"RLLM_TEST_CRASH_ON": model})
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, out.decode()[-2000:]
    assert wait_until(lambda: not processes_with(model), 20), processes_with(model)


def test_startup_timeout_fails_fast_and_kills_the_engine(case):
    model, start = case
    t0 = time.monotonic()
    proc = start("--rllm-startup-timeout=4s")
    out, _ = proc.communicate(timeout=120)
    text = out.decode()
    assert proc.returncode == 1
    assert "was not healthy within --rllm-startup-timeout=4s" in text
    assert time.monotonic() - t0 < 90
    assert wait_until(lambda: not processes_with(model), 20), processes_with(model)
