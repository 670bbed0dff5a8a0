"""benchmarks/candidate_gate.py reads each session's verdict from pytest's junit file and the JSON report's A/B rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import candidate_gate  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="suites.test_candidate_engine" name="test_candidate_keeps_accuracy[baseline]"/>
<testcase classname="suites.test_candidate_engine" name="test_candidate_does_not_lower_throughput[baseline]"><failure message="regressed"/></testcase>
<testcase classname="suites.test_candidate_engine" name="test_candidate_does_not_raise_latency[baseline-e2e_p50]"><error message="boom"/></testcase>
</testsuite></testsuites>"""


def test_failed_tests_are_read_from_junit_and_a_missing_file_is_named(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert candidate_gate.failed_tests(junit) == ["test_candidate_does_not_lower_throughput[baseline]",
                                                  "test_candidate_does_not_raise_latency[baseline-e2e_p50]"]
    assert candidate_gate.failed_tests(tmp_path / "absent.xml") == ["(no junit file: pytest did not finish)"]


def test_the_throughput_row_is_the_baseline_preset_s(tmp_path):
    report = tmp_path / "ab.json"
    rows = [{"run": "spec-ngram/main", "metric": "output_throughput", "verdict": "same"},
            {"run": "baseline/main", "metric": "ttfvt_p50", "verdict": "regressed"},
            {"run": "baseline/main", "metric": "output_throughput", "verdict": "regressed", "effect": 0.68}]
    report.write_text(json.dumps({"ab": rows}))
    assert candidate_gate.throughput_row(report)["effect"] == 0.68
    assert candidate_gate.throughput_row(tmp_path / "absent.json") == {}


def test_right_means_unchanged_passes_and_capped_fails_on_regressed_throughput():
    right = candidate_gate.verdict_right
    assert right("unchanged", 0, [], {"verdict": "inconclusive"})
    assert not right("unchanged", 1, ["test_candidate_keeps_accuracy[baseline]"], {"verdict": "same"})
    failed = ["test_candidate_does_not_lower_throughput[baseline]"]
    assert right("capped", 1, failed, {"verdict": "regressed"})
    # Failing for another reason, or a crash (rc 2+), is not the gate seeing the slowdown.
    assert not right("capped", 1, ["test_candidate_keeps_accuracy[baseline]"], {"verdict": "inconclusive"})
    assert not right("capped", 2, failed, {"verdict": "regressed"})
    assert not right("capped", 1, failed, {})
