"""A real model other than the embedded one: SmolLM2-135M-Instruct, built offline (tools/build_smollm2.py).

It never thinks, so it checks what a newcomer's first run with their own model
needs: the reasoning choice reads its files (no thinking markers: no parser and
no split), its replies reach a visible answer and are graded, and the findings
about reasoning skip once with the count measured instead of failing one by one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine  # ~40 s once built (tools/setup_realmodel.sh, ~1 min)

ROOT = Path(__file__).resolve().parents[1]
# The suites with findings about reasoning; the others run on any model and pass or fail on its merits.
SUITES = ["suites/test_memory.py", "suites/test_adaptive_runtime.py", "suites/test_domain_preference.py",
          "suites/test_stragglers.py"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_smollm2
    finally:
        sys.path.pop(0)
    folder = build_smollm2.default_out()
    if not (folder / "pytest-rllm-build.json").exists():
        try:
            importlib.metadata.distribution(build_smollm2.PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"SmolLM2 is not built and {build_smollm2.PACKAGE} is not installed: run bash tools/setup_realmodel.sh")
        if importlib.util.find_spec("gguf") is None:
            pytest.skip("SmolLM2 is not built and gguf is not installed: run bash tools/setup_realmodel.sh")
        build_smollm2.build(folder)
    return folder


def test_a_plain_real_model_is_served_plain_and_the_reasoning_findings_skip_with_the_count(smollm2, tmp_path):
    cmd = [sys.executable, "-m", "pytest", *SUITES, "-p", "no:cacheprovider", "-rs",
           f"--rllm-model={smollm2}", "--rllm-engine=inprocess", "--rllm-num-prompts=8", "--rllm-max-tokens=64",
           "--rllm-optimizations=baseline", f"--rllm-baseline-dir={tmp_path / 'baselines'}",
           "--rllm-update-baselines", f"--rllm-report={tmp_path / 'report.json'}", f"--junitxml={tmp_path / 'junit.xml'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert "rllm: reasoning: replies are all answer (no thinking markers in the chat template)" in out, out[-3000:]
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    main = next(r for r in report["runs"] if r["name"] == "baseline/main")
    done = [r for r in main["records"] if r["error"] is None]
    # Served plain: every completed reply is all answer, so its first token is its first visible one.
    assert done and all(r["reasoning_text"] == "" and r["answer_text"] for r in done)
    assert all(r["t_first_visible"] is not None for r in done)
    outcomes = junit_outcomes(tmp_path / "junit.xml")
    reasoning_findings = [name for name in outcomes if name.startswith((
        "test_reasoning_uses_more_kv_cache_than_the_plain_reference", "test_reasoning_kv_cache_usage_fluctuates",
        "test_harder_tasks_run_longer", "test_reasoning_beats_the_plain_reference_overall",
        "test_a_few_long_requests_dominate_the_batch", "test_output_lengths_have_a_long_tail"))]
    assert len(reasoning_findings) == 7, outcomes
    for name in reasoning_findings:
        kind, message = outcomes[name]
        assert kind == "skipped" and "not a reasoning model: 0 of 8 replies had reasoning" in message, (name, kind, message)
    # Checks that do not depend on reasoning still run, and none fails because of the harness.
    assert outcomes["test_memory_metrics_match_baseline"][0] == "passed", outcomes
    assert outcomes["test_straggler_metrics_match_baseline"][0] == "passed", outcomes
    failed = {name: message for name, (kind, message) in outcomes.items() if kind == "failed"}
    assert not failed, failed


def junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """{test name: (passed | failed | skipped, message)} from a JUnit XML report."""
    import xml.etree.ElementTree as ET

    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kind, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = "failed" if child.tag != "skipped" else "skipped"
                message = child.get("message") or child.text or ""
        outcomes[case.get("name")] = (kind, message)
    return outcomes
