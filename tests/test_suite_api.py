"""The suite API: run fixtures plan the session, rllm_finding records typed verdicts, METRICS tables pick metrics."""

from __future__ import annotations

import math

import pytest

from pytest_rllm.checks.finding import FINDING_PROPERTY, Finding
from pytest_rllm.baselines import select_metrics
from pytest_rllm.compare import Measurement
from pytest_rllm.settings import RllmSettings

PLAN_PRINTER = """
import pytest
from pytest_rllm.plugin import STATE_KEY

@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    print("PLAN", sorted(session.config.stash[STATE_KEY].plan))
"""

SUITE = """
import pytest
from pytest_rllm.fixtures import run_fixture

on_run = run_fixture("prefix-caching-on", "shared-prefix")

def test_main(baseline_run): pass

def test_reference(reference_run): pass

def test_module_fixture(on_run): pass

@pytest.mark.parametrize("preset_run", ["quant-int8", "spec-ngram"], indirect=True)
def test_presets(baseline_run, preset_run): pass

@pytest.mark.rllm_needs(("spec-draft", "gamma"))
def test_marker(): pass
"""


def test_the_plan_is_read_from_run_fixtures_params_and_markers(pytester):
    pytester.makeconftest(PLAN_PRINTER)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "PLAN [('baseline', 'main'), ('baseline', 'no-thinking'), ('prefix-caching-on', 'shared-prefix'), "
        "('quant-int8', 'main'), ('spec-draft', 'gamma'), ('spec-ngram', 'main')]",
    ])


def test_a_reference_model_changes_what_reference_run_plans(pytester):
    pytester.makeconftest(PLAN_PRINTER)
    pytester.makepyfile("def test_reference(reference_run): pass")
    result = pytester.runpytest("--collect-only", "-q", "--rllm-reference-model=pocket")
    result.stdout.fnmatch_lines(["PLAN [('reference', 'main')]"])


def test_preset_run_without_a_parameter_says_how_to_give_one(pytester):
    pytester.makepyfile("def test_x(preset_run): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*preset_run needs a preset; parametrize it*indirect=True*"])


def finding(**thresholds) -> Finding:
    return Finding(RllmSettings.from_values({"threshold": ",".join(f"{k}={v}" for k, v in thresholds.items())}
                                            if thresholds else {}))


def test_finding_records_typed_verdicts_and_fails_with_the_threshold_named():
    f = finding(kv_cv=0.5)
    f.at_least(0.7, "kv_cv", "KV usage CV")
    with pytest.raises(pytest.fail.Exception, match=r"KV usage CV is 0.2, below kv_cv=0.5"):
        f.at_least(0.2, "kv_cv", "KV usage CV")
    verdicts = [v for k, v in f.user_properties if k == FINDING_PROPERTY]
    assert [v["verdict"] for v in verdicts] == ["holds", "fails"]
    assert verdicts[1]["value"] == 0.2 and verdicts[1]["bound"] == 0.5 and verdicts[1]["threshold"] == "kv_cv"


def test_a_missing_value_never_holds_and_flag_only_flags():
    from pytest_rllm import FindingFlag

    f = finding()
    with pytest.warns(FindingFlag, match="spec E2E is -, above spec_e2e_ratio=1"):
        f.at_most(None, "spec_e2e_ratio", "spec E2E", flag_only=True)
    assert f.checks[-1].verdict == "flagged" and f.checks[-1].to_dict()["value"] is None
    with pytest.raises(pytest.fail.Exception):
        f.above(math.nan, "prefix_hit_rate", "hit rate")


def test_metrics_table_picks_names_and_globs_and_keeps_summary_intervals():
    summary = {"accuracy": 0.6, "accuracy_low": 0.5, "accuracy_high": 0.7, "requests": 40, "e2e_p50": 2.0,
               "accuracy.add": Measurement(0.5), "ttft_p50": 1.0}
    picked = select_metrics(summary, {"accuracy": None, "e2e_p50": "2x", "accuracy.*": None, "gpu_memory_peak": None})
    assert sorted(picked) == ["accuracy", "accuracy.add", "e2e_p50"]
    assert picked["accuracy"].interval == (0.5, 0.7) and picked["accuracy"].n == 40
    assert picked["e2e_p50"].interval is None and picked["accuracy.add"].value == 0.5


def test_the_findings_table_reads_typed_verdicts_not_failure_text(pytester):
    pytester.makepyfile(test_f="""
def test_cv(rllm_finding):
    '''KV usage fluctuates.'''
    rllm_finding.at_least(0.2, "kv_cv", "KV usage CV")
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["findings: 1 fails.", "FAILS test_f.py::test_cv: KV usage fluctuates. -- KV usage CV is 0.2, below kv_cv=0.3"])


def test_the_readme_shows_a_shipped_suite_module_whole():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    module = (root / "suites" / "test_stragglers.py").read_text()
    assert f"```python\n{module}```" in readme, "README's 'Writing your own checks' no longer shows suites/test_stragglers.py as shipped"


# --------------------------------------------------------------------------- is this a reasoning model?

REASONING_SUITE = """
import pytest
from types import SimpleNamespace
from pytest_rllm.records import RequestRecord

@pytest.fixture
def rllm_run():
    def run(label, workload):
        records = [RequestRecord("i%d" % i, "arithmetic", 1.0, "1", "exact", t_sent=0.0, t_done=1.0,
                                 reasoning_text=REASONING if i < WITH else "") for i in range(16)]
        return SimpleNamespace(records=records, engine={"reasoning_parser": None})
    return run

def test_reasoning_finding(rllm_reasoning_model):
    assert rllm_reasoning_model.with_reasoning == WITH

def test_other_check(rllm_run):
    pass
"""


@pytest.mark.parametrize("with_reasoning", [0, 16])
def test_reasoning_findings_skip_with_the_count_measured_when_the_model_does_not_reason(pytester, with_reasoning):
    pytester.makepyfile(test_suite=REASONING_SUITE.replace("WITH", str(with_reasoning)).replace("REASONING", "'step by step'"))
    result = pytester.runpytest("-rs")
    if with_reasoning:
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*not a reasoning model: 0 of 16 replies had reasoning in the baseline run "
                                     "(the server's reasoning parser: none)*--rllm-model*"])


def test_reasoning_evidence_counts_completed_replies_to_thinking_prompts():
    from types import SimpleNamespace

    from pytest_rllm.checks.reasoning_evidence import reasoning_evidence
    from pytest_rllm.records import RequestRecord

    def record(reasoning: str, *, ok: bool = True, thinking: bool = True, tokens: int | None = None) -> RequestRecord:
        return RequestRecord("i", "math", 1.0, "1", "exact", t_sent=0.0, t_done=1.0 if ok else None,
                             reasoning_text=reasoning, thinking=thinking, reasoning_tokens=tokens)

    run = SimpleNamespace(records=[record("hm"), record(""), record("", tokens=12), record("x", ok=False),
                                   record("y", thinking=False)], engine={})
    evidence = reasoning_evidence(run)
    assert (evidence.replies, evidence.with_reasoning, evidence.parser) == (3, 2, None)
    assert evidence.is_reasoning_model and "2 of 3 replies had reasoning" in evidence.text()
    assert not reasoning_evidence(SimpleNamespace(records=[record("")] * 4, engine={})).is_reasoning_model
    assert not reasoning_evidence(SimpleNamespace(records=[], engine={})).is_reasoning_model


GROUP_PRINTER = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        print("GROUP", item.name, marker.args[0] if marker else None)
"""


def test_under_xdist_each_test_is_grouped_by_the_configuration_it_reads_besides_baseline(pytester):
    pytester.makeconftest(GROUP_PRINTER)
    pytester.makepyfile("""
import pytest
from pytest_rllm.fixtures import run_fixture

ngram_run = run_fixture("spec-ngram", "main")

def test_base(baseline_run): pass

def test_ngram(baseline_run, ngram_run): pass

def test_plain(): pass
""")
    result = pytester.runpytest("--collect-only", "-q", "-s", "-p", "xdist")
    result.stdout.fnmatch_lines(["GROUP test_base rllm-baseline", "GROUP test_ngram rllm-spec-ngram", "GROUP test_plain None"])
