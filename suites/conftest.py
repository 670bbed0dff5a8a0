"""The study's findings as tests. Run: pytest suites/ [--rllm-model=...].

Each test declares the (configuration, workload) runs it reads with
`rllm_needs`; the plugin starts each engine once and runs all of its workloads
together, so nothing is generated twice. Finding thresholds are in
pytest_rllm.findings.THRESHOLDS (override with --rllm-threshold NAME=VALUE).
"""

from __future__ import annotations

import pytest

from pytest_rllm.session import REFERENCE


@pytest.fixture
def reference_run(rllm_run, rllm_settings):
    """The plain-LLM reference: --rllm-reference-model, else the same model with thinking off.

        def test_x(reference_run):
            assert reference_run.summary()["completed"] > 0
    """
    if rllm_settings.reference_model:
        return rllm_run(REFERENCE, "main")
    run = rllm_run("baseline", "no-thinking")
    thinking = rllm_run("baseline", "main")
    # A model whose template ignores enable_thinking (R1-Distill) still reasons: no reference then.
    reasoning_chars = sum(len(r.reasoning_text) for r in run.records)
    thinking_chars = sum(len(r.reasoning_text) for r in thinking.records) or 1
    if reasoning_chars > 0.5 * thinking_chars:
        pytest.skip(
            "the model kept reasoning with enable_thinking=false, so it offers no plain reference; "
            "pass --rllm-reference-model=PLAIN_LLM (e.g. Qwen/Qwen2.5-Math-7B)"
        )
    return run
