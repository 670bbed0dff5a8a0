"""Engine faults during a real pytest session: a bad model folder, kill -9 mid-run, a hung server.

One pytest subprocess (the plugin as users run it, with --rllm-report and
--junitxml) goes through four configurations on real vLLM servers (CPU build):

1. the reference model is a folder without config.json, named with shell
   metacharacters: its test fails with the engine's reason and log tail, and
   nothing in the name is executed;
2. the baseline still starts and runs (a failed configuration does not stop
   the others), and its server listens on 127.0.0.1 only;
3. the baseline server's process group is killed (SIGKILL) once two requests
   of a second workload have finished: that test fails naming the cause, and
   the finished records stay in the JSON report;
4. a second configuration starts a fresh server, which is frozen (SIGSTOP of
   its group) mid-run: request and run timeouts fire, the harness finds the
   server hung and kills its group at once, and no process remains.

The expensive run happens once (module fixture); each test below asserts one
of these claims on its junit XML, report and process table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from processes import processes_with, wait_until

pytestmark = pytest.mark.engine

REQUEST_TIMEOUT = 10
# The frozen run waits this out. A whole run of this scenario took 4.2 s beside another engine
# test (-n 2), so 25 s leaves room for a slow host and still lets one request time out first.
RUN_TIMEOUT = 25

INNER = r'''
import json, os, re, signal, threading, time
from pathlib import Path

OUT = Path(os.environ["RLLM_SCENARIO_OUT"])


def successes(engine):
    text = engine.metrics_text() or ""
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.M))


def inject_when(session, label, sig, name, after=2):
    """Send `sig` to the server group of `label` once `after` more requests have finished."""

    def watch():
        base = None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            engine = session._engine
            if engine is not None and session._engine_label == label and engine.proc is not None:
                done = successes(engine)
                base = done if base is None else base
                if done >= base + after:
                    pgid = engine.proc.pid
                    os.killpg(pgid, sig)
                    (OUT / f"{name}.json").write_text(json.dumps({"pgid": pgid, "t": time.monotonic()}))
                    return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def listening_addresses(pgid):
    """Local addresses of the TCP sockets that the processes of group `pgid` listen on."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1].rsplit(":", 1)[0])
    return found


def test_reference_from_a_bad_folder(rllm_run):
    rllm_run("reference", "main")


def test_baseline_still_runs(rllm_run, rllm_session):
    run = rllm_run("baseline", "main")
    assert all(r.ok for r in run.records), [r.error for r in run.records]
    addresses = listening_addresses(rllm_session._engine.proc.pid)
    (OUT / "listening.json").write_text(json.dumps(addresses))


def test_engine_killed_mid_run(rllm_run, rllm_session):
    inject_when(rllm_session, "baseline", signal.SIGKILL, "killed")
    rllm_run("baseline", "no-thinking")


def test_engine_hangs_mid_run(rllm_run, rllm_session):
    inject_when(rllm_session, "prefix-caching-on", signal.SIGSTOP, "stopped")
    rllm_run("prefix-caching-on", "main")


def test_the_hung_group_is_gone_before_the_session_ends(rllm_session):
    pgid = json.loads((OUT / "stopped.json").read_text())["pgid"]
    (OUT / "after-hang.json").write_text(json.dumps({
        "engine_cleared": rllm_session._engine is None,
        "group_alive": _group_alive(pgid),
        "t": time.monotonic(),
    }))


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
'''


@pytest.fixture(scope="module")
def scenario(engine_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    out = root / "out"
    out.mkdir()
    model = root / f"model-{root.name}"  # a unique path: this run's processes can be told apart
    model.symlink_to(engine_model)
    # A folder without config.json, whose name a shell would execute three ways.
    bad = root / "ref $(touch pwned1) `touch pwned2`; touch pwned3"
    bad.mkdir()
    (bad / "README.md").write_text("not a model\n")
    (root / "test_faults.py").write_text(INNER)
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_faults.py",
        f"--rllm-model={model}", f"--rllm-reference-model={bad}", "--rllm-optimizations=baseline,prefix-caching-on",
        "--rllm-hardware-key=test-hw", "--rllm-num-prompts=10", "--rllm-max-tokens=96",
        "--rllm-arrival=concurrency:1", f"--rllm-request-timeout={REQUEST_TIMEOUT}s",
        f"--rllm-run-timeout={RUN_TIMEOUT}s", "--rllm-startup-timeout=300s",
        "--rllm-report=report.json", "--junitxml=junit.xml",
        # The faults are timed from the first request the scenario sees: no warm-up batch before it.
        "--rllm-warm-up=0",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "RLLM_SCENARIO_OUT": str(out)}, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=600)
        ended = time.monotonic()
        yield {
            "root": root, "out": out, "model": str(model), "bad": bad, "output": output.decode(errors="replace"),
            "returncode": proc.returncode, "seconds": ended - t0, "ended": ended,
            "cases": _junit_cases(root / "junit.xml"),
            "report": json.loads((root / "report.json").read_text()),
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in processes_with(str(model)) + processes_with(str(bad)):
            os.kill(pid, signal.SIGKILL)


def _junit_cases(path: Path) -> dict[str, dict]:
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        cases[case.get("name")] = {
            "outcome": "failed" if failure is not None else "error" if error is not None else
                       "skipped" if case.find("skipped") is not None else "passed",
            "message": ((failure if failure is not None else error).get("message", "") + "\n" +
                        ((failure if failure is not None else error).text or "")) if failure is not None or error is not None else "",
            "time": float(case.get("time", 0)),
        }
    return cases


def _run(report: dict, label: str, workload: str) -> dict:
    matches = [r for r in report["runs"] if r["label"] == label and r["workload"] == workload]
    assert len(matches) == 1, [(r["label"], r["workload"]) for r in report["runs"]]
    return matches[0]


def test_a_bad_model_folder_fails_with_the_engines_reason_and_log_tail(scenario):
    case = scenario["cases"]["test_reference_from_a_bad_folder"]
    assert case["outcome"] == "failed", scenario["output"][-3000:]
    message = case["message"]
    # vLLM's own words (pydantic's detail line, not only "1 validation error for ModelConfig").
    assert "Engine's reason:" in message and "Invalid repository ID or local directory" in message, message
    assert "--- log tail ---" in message and "Log: " in message
    # It failed during start-up, within the start-up timeout (300 s): it did not wait that timeout out.
    assert case["time"] < 300


def test_shell_metacharacters_in_a_model_path_are_not_interpreted(scenario):
    # The path reaches vLLM verbatim as one argument: the error quotes it whole...
    assert str(scenario["bad"]) in scenario["cases"]["test_reference_from_a_bad_folder"]["message"]
    # ...and none of the three commands in the name ran, in the project folder or the bad folder.
    for folder in (scenario["root"], scenario["bad"], Path.cwd()):
        assert not list(folder.glob("pwned*")), list(folder.glob("pwned*"))


def test_the_other_configurations_still_run_after_a_start_failure(scenario):
    assert scenario["cases"]["test_baseline_still_runs"]["outcome"] == "passed", scenario["output"][-3000:]
    run = _run(scenario["report"], "baseline", "main")
    assert run["error"] is None and len(run["records"]) == 10
    assert all(r["error"] is None and r["t_done"] is not None for r in run["records"])


def test_servers_listen_on_loopback_only(scenario):
    addresses = json.loads((scenario["out"] / "listening.json").read_text())
    assert addresses, "the server group listens on no TCP socket"
    # /proc/net/tcp writes 127.0.0.1 as 0100007F; tcp6 ::1 and ::ffff:127.0.0.1 forms are loopback too.
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert set(addresses) <= loopback, addresses


def test_kill_9_mid_run_fails_the_test_naming_the_cause(scenario):
    case = scenario["cases"]["test_engine_killed_mid_run"]
    assert case["outcome"] == "failed", scenario["output"][-3000:]
    assert (scenario["out"] / "killed.json").exists(), "the fault was never injected"
    assert "is gone (exit code -9)" in case["message"], case["message"]
    assert "records kept in the report" in case["message"]


def test_kill_9_mid_run_keeps_the_finished_records_in_the_report(scenario):
    run = _run(scenario["report"], "baseline", "no-thinking")
    assert "is gone (exit code -9)" in run["error"]
    records = run["records"]
    finished = [r for r in records if r["error"] is None and r["t_done"] is not None]
    # The kill came after two completions: at least those are kept, and the rest say what happened to them.
    assert len(finished) >= 2 and len(records) == 10
    assert len(finished) < len(records), "the kill came after the run: nothing was injected mid-run"
    for r in records:
        if r not in finished:
            assert r["error"] and r["error"].split(":")[0] in ("stream broken", "connection error", "cancelled", "not sent"), r["error"]


def test_the_next_configuration_starts_a_fresh_engine(scenario):
    killed = json.loads((scenario["out"] / "killed.json").read_text())["pgid"]
    stopped = json.loads((scenario["out"] / "stopped.json").read_text())["pgid"]
    assert killed != stopped
    run = _run(scenario["report"], "prefix-caching-on", "main")
    assert run["engine"]["pid"] == stopped
    # The fresh engine served requests before it was frozen.
    assert sum(1 for r in run["records"] if r["t_done"] is not None) >= 2


def test_a_hung_engine_trips_the_request_and_run_timeouts(scenario):
    case = scenario["cases"]["test_engine_hangs_mid_run"]
    assert case["outcome"] == "failed", scenario["output"][-3000:]
    assert "is alive but hung" in case["message"] and "did not answer /health" in case["message"], case["message"]
    assert f"--rllm-run-timeout={RUN_TIMEOUT}s" in case["message"]
    run = _run(scenario["report"], "prefix-caching-on", "main")
    errors = [r["error"] or "" for r in run["records"]]
    assert any(e.startswith(f"timeout: no complete answer within --rllm-request-timeout={REQUEST_TIMEOUT}s") for e in errors), errors
    assert any(e.startswith("cancelled: the run exceeded --rllm-run-timeout") for e in errors), errors
    # Bounded: the run timeout, one /metrics and one /health probe, then a kill; not the 10 s graceful wait.
    assert run["duration"] < RUN_TIMEOUT + 5


def test_a_hung_engine_is_killed_at_once_and_nothing_remains(scenario):
    after = json.loads((scenario["out"] / "after-hang.json").read_text())
    stopped = json.loads((scenario["out"] / "stopped.json").read_text())
    assert (after["engine_cleared"], after["group_alive"]) == (True, False)
    # From the freeze to a dead group: the run timeout, one /metrics and one /health probe, then SIGKILL
    # (no 10 s graceful wait on a group that cannot act on SIGTERM).
    assert after["t"] - stopped["t"] < RUN_TIMEOUT + 30
    assert scenario["cases"]["test_the_hung_group_is_gone_before_the_session_ends"]["outcome"] == "passed"
    assert wait_until(lambda: not processes_with(scenario["model"]) and not processes_with(str(scenario["bad"])), 20)


def test_the_session_exits_with_failures_not_a_crash(scenario):
    assert scenario["returncode"] == 1, scenario["output"][-3000:]
    assert "INTERNALERROR" not in scenario["output"]
