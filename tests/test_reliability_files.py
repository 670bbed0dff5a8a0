"""Reports and baselines survive interrupts and parallel workers: a complete file or none, never half, never lost.

The inner projects run the plugin against a ScriptedEndpoint (an OpenAI-like
server on loopback), so a workload is really in flight when the signal lands;
no engine is needed to test the files.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import ctrl_c_delivered
from pytest_rllm.baseline_store import BaselineStore
from test_reliability_input import ScriptedEndpoint

INNER = '''
import os
import pytest

@pytest.mark.parametrize("i", range({count}))
def test_run_and_check(rllm_run, rllm_baseline, i):
    run = rllm_run("baseline", "main")
    open(f"ran-{{os.environ.get('PYTEST_XDIST_WORKER', 'main')}}", "w").close()
    rllm_baseline.check({{"e2e_p50": 1.0 + i, "requests": float(len(run.records))}})
'''


def write_project(root: Path, count: int) -> None:
    (root / "test_files.py").write_text(INNER.format(count=count))


def pytest_cmd(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_files.py",
            f"--rllm-endpoint={url}", "--rllm-optimizations=baseline", "--rllm-hardware-key=hw",
            "--rllm-num-prompts=4", "--rllm-max-tokens=32", "--rllm-update-baselines",
            "--rllm-report=out/report.json", "--rllm-html=out/report.html", *extra]


def leftovers(root: Path) -> list[str]:
    """Temp files of an atomic write that never finished (mkstemp names them .<name>.<random>.tmp)."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]


def assert_complete_or_absent(root: Path) -> dict:
    """Every file the run wrote is whole: the report parses, the HTML ends, every baseline validates."""
    seen = {}
    report = root / "out" / "report.json"
    if report.exists():
        data = json.loads(report.read_text())
        assert isinstance(data["runs"], list) and "checks" in data
        for run in data["runs"]:
            assert run["error"] in (None, "interrupted") and len(run["records"]) == 4
        seen["report"] = data
    html = root / "out" / "report.html"
    if html.exists():
        assert html.read_text().rstrip().endswith("</html>")
        seen["html"] = True
    store = BaselineStore(root / "baselines")
    seen["baselines"] = [store.read(p) for p in sorted((root / "baselines").rglob("*.json"))]
    assert leftovers(root) == []
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_mid_run_leaves_whole_files_or_none(tmp_path, sig):
    write_project(tmp_path, 3)
    # 40 tokens 50 ms apart: each request streams for 2 s, so the signal lands inside the run.
    with ScriptedEndpoint(tokens=40, itl=0.05) as server:
        proc = subprocess.Popen(pytest_cmd(server.url), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=ctrl_c_delivered)
        deadline = time.monotonic() + 60
        while not server.calls and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert server.calls, proc.communicate()[0].decode()[-2000:]
        time.sleep(0.5)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text[-3000:]  # pytest's "interrupted" status, not a crash
    assert "INTERNALERROR" not in text
    seen = assert_complete_or_absent(tmp_path)
    if "report" in seen:
        # What was collected before the interrupt is marked as such, not passed off as a full run.
        assert [r["error"] for r in seen["report"]["runs"]] == ["interrupted"]


def test_interrupts_at_many_moments_never_leave_a_partial_file(tmp_path):
    # From start-up through the run, the baseline checks and the report writing: whatever the
    # moment, every file is whole or absent. Moments count from the first request the endpoint sees
    # (None: during start-up, before any request).
    with ScriptedEndpoint(tokens=6, itl=0.01) as server:
        for n, delay in enumerate([None, 0.0, 0.1, 0.3, 0.6]):
            root = tmp_path / f"at-{n}"
            root.mkdir()
            write_project(root, 3)
            calls = len(server.calls)
            proc = subprocess.Popen(pytest_cmd(server.url), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=ctrl_c_delivered)
            if delay is None:
                time.sleep(0.3)
            else:
                deadline = time.monotonic() + 60
                while len(server.calls) == calls and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
            text = out.decode(errors="replace")
            assert "INTERNALERROR" not in text, text[-3000:]
            seen = assert_complete_or_absent(root)
            if proc.returncode == 0:  # finished before the signal: then everything is there
                assert len(seen["baselines"]) == 3 and "report" in seen


def test_four_workers_updating_baselines_and_the_report_lose_no_entry(tmp_path):
    pytest.importorskip("xdist")
    count = 12
    write_project(tmp_path, count)
    with ScriptedEndpoint(tokens=8, itl=0.005) as server:
        proc = subprocess.run(pytest_cmd(server.url, "-n", "4"), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=300)
    text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    seen = assert_complete_or_absent(tmp_path)
    workers = sorted(p.name for p in tmp_path.glob("ran-*"))
    assert len(workers) >= 2, workers  # the work really was spread
    report = seen["report"]
    # One run per worker that ran a test, each whole; every check from every worker.
    assert len(report["runs"]) == len(workers)
    assert all(r["error"] is None and all(rec["error"] is None for rec in r["records"]) for r in report["runs"])
    assert sorted(c["nodeid"] for c in report["checks"]) == sorted(f"test_files.py::test_run_and_check[{i}]" for i in range(count))
    assert {c["action"] for c in report["checks"]} == {"created"}
    # Every baseline file exists once, whole, with the value its test wrote.
    values = sorted(b["metrics"]["e2e_p50"]["value"] for b in seen["baselines"])
    assert values == [1.0 + i for i in range(count)]
