"""Security: the API key never leaks, servers stay on loopback, files are data, arguments are never a shell.

(That a real vLLM server listens on 127.0.0.1 only, and that a model path full
of shell syntax reaches vLLM verbatim, is also checked on a running engine in
test_reliability_engine.py.)
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_rllm.baseline_store import BaselineError, BaselineStore
from pytest_rllm.engines import platform
from pytest_rllm.engines.base import EngineStartError
from pytest_rllm.engines.server import VllmServer
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.report import read_json_report
from test_reliability_input import ScriptedEndpoint

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_rllm"

INNER = '''
def test_run_and_baseline(rllm_run, rllm_baseline):
    run = rllm_run("baseline", "main")
    assert all(r.ok for r in run.records), [r.error for r in run.records]
    rllm_baseline.check({"e2e_p50": 1.0})


def test_fails_showing_its_locals(rllm_session, rllm_settings, rllm_run):
    run = rllm_run("baseline", "main")
    engine = rllm_session._engine
    settings = rllm_settings
    summary = run.summary()
    # Deliberately fails: with -l pytest prints every local (the engine, the settings, the run).
    assert summary["completed"] == 99, (engine, settings, run.records[0])
'''


def run_project(root: Path, url: str, key_in_env: str) -> tuple[subprocess.CompletedProcess, str]:
    (root / "test_key.py").write_text(INNER)
    cmd = [sys.executable, "-m", "pytest", "-vv", "-l", "-rA", "-p", "no:cacheprovider", "test_key.py",
           f"--rllm-endpoint={url}", "--rllm-api-key-env=RLLM_TEST_KEY", "--rllm-optimizations=baseline",
           "--rllm-hardware-key=hw", "--rllm-num-prompts=3", "--rllm-max-tokens=16", "--rllm-update-baselines",
           "--rllm-report=report.json", "--rllm-html=report.html", "--junitxml=junit.xml", "--basetemp=basetemp"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, timeout=120,
                          env={**os.environ, "RLLM_TEST_KEY": key_in_env})
    return proc, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_the_api_key_never_appears_in_output_reports_baselines_or_logs(tmp_path):
    key = "sk-rllm-" + secrets.token_hex(16)
    with ScriptedEndpoint(api_key=key) as server:
        proc, output = run_project(tmp_path, server.url, key)
        sent = [h.get("Authorization") for h in server.headers_seen]
    # The key was really used (the endpoint refuses everything without it)...
    assert sent and set(sent) == {f"Bearer {key}"}
    assert "1 failed, 1 passed" in output, output[-3000:]
    # ...and the run wrote everything a run writes: report, HTML, baseline, JUnit, temp folders.
    assert {"report.json", "report.html", "junit.xml"} <= {p.name for p in tmp_path.iterdir()}
    assert list((tmp_path / "baselines").rglob("*.json"))
    assert "RLLM_TEST_KEY" in output  # the variable's *name* may be shown; the key may not
    assert key not in output
    assert files_containing(tmp_path, key) == []
    # The fragment checks catch a key that was cut, wrapped or partly masked.
    for fragment in (key[:16], key[-16:]):
        assert fragment not in output and files_containing(tmp_path, fragment) == []


def test_a_wrong_key_fails_clearly_and_is_not_echoed(tmp_path):
    wrong = "sk-wrong-" + secrets.token_hex(16)
    with ScriptedEndpoint(api_key="sk-right-" + secrets.token_hex(8)) as server:
        proc, output = run_project(tmp_path, server.url, wrong)
    assert proc.returncode == 1
    assert "HTTP 401: pass the key's environment variable with --rllm-api-key-env=NAME" in output, output[-3000:]
    assert wrong not in output and files_containing(tmp_path, wrong) == []


def test_a_missing_key_variable_is_named_before_anything_is_sent(tmp_path):
    (tmp_path / "test_key.py").write_text(INNER)
    with ScriptedEndpoint(api_key="k") as server:
        env = {k: v for k, v in os.environ.items() if k != "RLLM_TEST_KEY"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_key.py",
                               f"--rllm-endpoint={server.url}", "--rllm-api-key-env=RLLM_TEST_KEY",
                               "--rllm-optimizations=baseline", "--rllm-hardware-key=hw"],
                              cwd=tmp_path, capture_output=True, timeout=120, env=env)
        assert server.headers_seen == []
    assert "the environment variable RLLM_TEST_KEY is not set" in proc.stdout.decode(), proc.stdout.decode()[-2000:]


# --------------------------------------------------------------------------- loopback only


def test_the_server_command_binds_loopback_only():
    cmd = VllmServer(EngineSpec("/models/m", "baseline"), reasoning_parser=None, startup_timeout=1).command()
    hosts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--host"] + [a.split("=", 1)[1] for a in cmd if a.startswith("--host=")]
    assert hosts == ["127.0.0.1"]


@pytest.mark.parametrize("arg", ["--host=0.0.0.0", "--host", "--port=8000", "--uds=/tmp/s"])
def test_a_pass_through_argument_cannot_move_the_server_off_loopback(arg, tmp_path):
    # vLLM takes the last --host it is given, so a pass-through one would have won.
    spec = EngineSpec("/models/m", "baseline", extra_server_args=(arg, "0.0.0.0") if arg == "--host" else (arg,))
    server = VllmServer(spec, reasoning_parser=None, startup_timeout=1, log_dir=tmp_path)
    with pytest.raises(EngineStartError, match="binds its servers to 127.0.0.1"):
        server.start()
    assert server.proc is None


# --------------------------------------------------------------------------- files are data


class _Payload:
    """Unpickling this runs a command: a file is data only if that never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL], ids=["ascii-pickle", "binary-pickle"])
def test_a_pickle_in_a_baseline_file_is_rejected_as_corrupt_not_run(tmp_path, protocol):
    marker = tmp_path / "executed"
    path = tmp_path / "hw" / "m" / "mod" / "t.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    before = path.read_bytes()
    store = BaselineStore(tmp_path)
    with pytest.raises(BaselineError, match="is unusable"):
        store.read(path)
    # The update path (without =all) refuses it as well and leaves it as it was.
    with pytest.raises(BaselineError):
        store.update(path, set_metrics={"x": {"value": 1.0}})
    assert path.read_bytes() == before
    assert not marker.exists()


def test_a_pickle_in_a_report_is_rejected_not_run(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "report.json"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    with pytest.raises(ValueError):
        read_json_report(path)
    assert not marker.exists()


def test_the_package_never_deserialises_or_evaluates_code():
    # Baselines and reports are json; commands are lists. A regression here would be a way in.
    banned = re.compile(r"\bpickle\b|\bmarshal\b|\bshelve\b|yaml\.load\(|(?<![.\w])eval\(|(?<![.\w])exec\(|shell\s*=\s*True|os\.system\(|os\.popen\(")
    hits = []
    for path in PACKAGE.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if banned.search(line.split("#", 1)[0]):
                hits.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert hits == []


# --------------------------------------------------------------------------- argument lists, never a shell


def test_shell_syntax_in_a_model_path_or_server_argument_reaches_the_engine_verbatim(tmp_path, monkeypatch):
    # The engine is replaced by a script that records its argv and exits: everything up to exec is real.
    recorder = tmp_path / "record_argv.py"
    recorder.write_text("import json, sys\nopen(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))\nsys.exit(1)\n")
    argv_file = tmp_path / "argv.json"
    monkeypatch.setattr(platform, "server_command", lambda model: [sys.executable, str(recorder), str(argv_file), "--model", model])
    model = str(tmp_path / "m $(touch pwned1) `touch pwned2`; touch pwned3 | touch pwned4 && touch pwned5")
    served = "name'$(touch pwned6)\""
    spec = EngineSpec(model, "baseline", extra_server_args=(f"--served-model-name={served}",))
    server = VllmServer(spec, reasoning_parser=None, startup_timeout=30, log_dir=tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EngineStartError, match="exited with code 1 during start-up"):
        server.start()
    argv = json.loads(argv_file.read_text())
    assert argv[:2] == ["--model", model]  # one argument, byte for byte
    assert f"--served-model-name={served}" in argv
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
