"""The plugin's options, ini twins, header and findings plumbing, through pytester (no engine)."""

from __future__ import annotations

import pytest

from pytest_rllm.options import OPTIONS
from pytest_rllm.report.jsonio import read_json_report


def test_help_groups_every_option_under_rllm(pytester):
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "reasoning-LLM serving checks (pytest-rllm):" in text
    for option in OPTIONS:
        assert option.cli in text, option.cli
        assert option.ini in text, option.ini


def test_ini_twin_is_used_and_cli_wins(pytester):
    pytester.makeini("[pytest]\nrllm_max_tokens = 123\nrllm_seed = 9\n")
    pytester.makepyfile("""
        def test_values(rllm_settings, pytestconfig):
            print("VALUES", rllm_settings.max_tokens, rllm_settings.seed)
    """)
    result = pytester.runpytest("-s", "--rllm-seed=4")
    result.stdout.fnmatch_lines(["*VALUES 123 4"])


def test_bad_ini_value_is_a_usage_error_naming_the_key(pytester):
    pytester.makeini("[pytest]\nrllm_arrival = gamma:fast\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rllm-arrival / rllm_arrival*"])


def test_bad_cli_value_stops_before_anything_runs(pytester):
    pytester.makepyfile("def test_x(): raise SystemExit('must not run')")
    result = pytester.runpytest("--rllm-slo=ttft=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --rllm-slo*expected a duration*"])


def test_report_header_names_model_engine_hardware_and_optimizations(pytester):
    pytester.makepyfile("def test_x(): pass")
    from pytest_rllm.engines.identity import local_identity

    result = pytester.runpytest("--rllm-optimizations=spec-ngram", "--rllm-hardware-key=test-hw")
    # The engine's identity: vLLM release (and commit), torch, device.
    identity = local_identity().text.replace("[", "[[]")
    result.stdout.fnmatch_lines([
        f"rllm: model=pocket (embedded reasoning model) engine=server ({identity}) hardware=test-hw",
        "rllm: optimizations=baseline,spec-ngram dataset=procedural arrival=batch max_tokens=4096 seed=0",
    ])


FINDING_TESTS = """
import warnings
import pytest
from pytest_rllm import FindingFlag

def test_holds(rllm_finding):
    '''The thing holds.'''
    rllm_finding.evidence("ratio 2.0")
    rllm_finding.at_least(2.0, "kv_area_ratio", "ratio")

@pytest.mark.rllm_needs(("baseline", "main"))
def test_flagged(request):
    '''The thing may not hold on small models.'''
    warnings.warn(FindingFlag("slower by 10%"))
"""


# Subprocesses: an in-process engine test earlier in the session imports vLLM,
# which reroutes warnings, and in-process pytester runs would then see no flag.
def test_findings_are_summarised_and_flags_listed(pytester):
    pytester.makepyfile(test_findings=FINDING_TESTS)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([
        "*= rllm =*",
        "findings: 1 flagged, 1 holds.",
        "FLAGGED test_findings.py::test_flagged: The thing may not hold on small models. -- flag: slower by 10%",
        "Strict mode for gates: -W error::pytest_rllm.FindingFlag turns flags into failures.",
    ])


def test_strict_mode_turns_flags_into_failures(pytester):
    pytester.makepyfile(test_findings=FINDING_TESTS)
    result = pytester.runpytest_subprocess("-W", "error::pytest_rllm.FindingFlag")
    result.assert_outcomes(passed=1, failed=1)


def test_findings_survive_xdist(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_findings=FINDING_TESTS)
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["findings: 1 flagged, 1 holds."])


WORKER_RUNS_CONFTEST = """
import types

import pytest

from pytest_rllm.plugin import STATE_KEY


class FakeRun:
    def __init__(self, name):
        self.name = name

    def to_dict(self):
        return {"name": self.name, "preset": self.name.split("/")[0], "workload": "main", "records": [],
                "timelines": {}, "summary": {"requests": 1.0}}


@pytest.fixture
def fake_session(pytestconfig):
    # Stands in for RllmSession: the plugin reads only .runs and .timings at session end.
    state = pytestconfig.stash[STATE_KEY]
    if state.session is None:
        state.session = types.SimpleNamespace(runs=[], timings=types.SimpleNamespace(generation=1.0))
    return state.session
"""


def test_xdist_worker_runs_are_merged_by_merge_reports(pytester):
    pytest.importorskip("xdist")
    pytester.makeconftest(WORKER_RUNS_CONFTEST)
    pytester.makepyfile(test_runs="""
        from conftest import FakeRun

        def test_zeta(fake_session):
            fake_session.runs.append(FakeRun("zeta/main"))

        def test_alpha(fake_session):
            fake_session.runs.append(FakeRun("alpha/main"))
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--rllm-report=report.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    report = read_json_report(pytester.path / "report.json")
    # merge_reports orders runs by name, whichever worker ran which test.
    assert [r["name"] for r in report["runs"]] == ["alpha/main", "zeta/main"]
    assert all(t["generation"] == 1.0 for t in report["meta"]["timings"])
    result.stdout.re_match_lines([r"^alpha/main\s+n=1", r"^zeta/main\s+n=1"])


def test_worker_parts_are_joined_with_merge_reports(tmp_path, monkeypatch):
    import importlib

    # sys.modules' copy: pytester runs above may have left stale package attributes behind.
    jsonio = importlib.import_module("pytest_rllm.report.jsonio")
    calls = []
    real_merge = jsonio.merge_reports
    monkeypatch.setattr(jsonio, "merge_reports", lambda parts, meta=None: calls.append(parts) or real_merge(parts, meta))
    jsonio.write_json_report(tmp_path / "gw0.json", [{"name": "b/main"}], [], {"timings": {"generation": 2.0}})
    jsonio.write_json_report(tmp_path / "gw1.json", [{"name": "a/main"}], [], {"timings": {"generation": 3.0}})
    runs, timings = jsonio.merge_worker_parts([{"name": "c/main"}], [{"generation": 1.0}], tmp_path)
    assert len(calls) == 1
    assert [r["name"] for r in runs] == ["a/main", "b/main", "c/main"]
    assert timings == [{"generation": 1.0}, {"generation": 2.0}, {"generation": 3.0}]
