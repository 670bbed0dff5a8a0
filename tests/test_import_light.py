"""pytest imports every installed plugin on every run: ours must not pull in the heavy stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("vllm", "torch", "lm_eval", "transformers", "pynvml", "datasets")


def test_importing_the_package_and_plugin_stays_light():
    code = (
        "import sys, pytest_rllm, pytest_rllm.plugin, pytest_rllm.session, pytest_rllm.results, pytest_rllm.client;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_pytest_help_does_not_import_vllm(pytester):
    pytester.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        f"    print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["HEAVY="])
