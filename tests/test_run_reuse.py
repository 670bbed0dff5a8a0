"""The run store on real vLLM (in process): a re-check starts no engine and reaches the same verdicts from the same numbers.

Each pytest session below is a subprocess that serves the embedded model in
process (4 prompts, 48 tokens) and keeps its runs in one store; the checks read
the sessions' JSON reports and terminal sections.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.engine

SUITE = '''
import pytest

def test_fast_enough(rllm_run):
    summary = rllm_run("baseline", "main").summary()
    assert summary["output_throughput"] > 1.0, summary["output_throughput"]

def test_thinking_changes_lengths(rllm_run):
    main = rllm_run("baseline", "main").summary()["output_tokens_mean"]
    plain = rllm_run("baseline", "no-thinking").summary()["output_tokens_mean"]
    assert main != plain

def test_accuracy_is_read(rllm_run):
    assert 0.0 <= rllm_run("baseline", "main").summary()["accuracy"] <= 1.0
'''

OPTIONS = ("--rllm-engine=inprocess", "--rllm-optimizations=baseline", "--rllm-num-prompts=4", "--rllm-max-tokens=48",
           "--rllm-warm-up=0", "-p", "no:cacheprovider", "-p", "no:randomly")


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=SUITE)
    cache = pytester.path / "store"

    def session(name: str, *extra: str):
        report = pytester.path / f"{name}.json"
        result = pytester.runpytest_subprocess(*OPTIONS, f"--rllm-cache-dir={cache}", f"--rllm-report={report}", *extra)
        data = json.loads(report.read_text()) if report.exists() else {"runs": []}
        return result, {r["name"]: r for r in data["runs"]}

    session.cache = cache
    return session


def engines_started(result) -> int:
    found = re.search(r"engine start \(import \+ load, (\d+) engines\)", result.stdout.str())
    assert found, result.stdout.str()[-3000:]
    return int(found.group(1))


def outcomes(result) -> dict:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "skipped")}


def test_a_re_check_starts_no_engine_and_judges_the_same_numbers_and_a_changed_setting_or_corrupt_entry_misses(suite):
    # One sequence of sessions over one store, so that only three of them start an engine.
    first, generated = suite("first")
    assert engines_started(first) == 1 and outcomes(first) == {"passed": 3}
    assert len(list((suite.cache / "runs").glob("*.json"))) == 2  # baseline/main and baseline/no-thinking

    again, reused = suite("again", "--rllm-reuse-runs")
    assert engines_started(again) == 0
    assert outcomes(again) == outcomes(first)
    again.stdout.fnmatch_lines(["reused 2 of 2 runs*", "  baseline/main: run store, generated 20*UTC"])
    for name in ("baseline/main", "baseline/no-thinking"):
        assert reused[name]["summary"] == generated[name]["summary"], name
        assert reused[name]["reused"].startswith("run store")

    # The first session's report, as a CI artifact: the same verdicts, no engine, no store.
    from_report, read = suite("from-report", f"--rllm-from-report={suite.cache.parent / 'first.json'}", "--rllm-no-cache")
    assert engines_started(from_report) == 0 and outcomes(from_report) == outcomes(first)
    assert read["baseline/main"]["summary"] == generated["baseline/main"]["summary"]

    reseeded, runs = suite("reseeded", "--rllm-reuse-runs", "--rllm-seed=1")
    assert engines_started(reseeded) == 1 and not any(r.get("reused") for r in runs.values())

    for entry in (suite.cache / "runs").glob("*.json"):
        entry.write_text(entry.read_text()[:100])  # cut short, as a full disk or a killed write would leave it
    damaged, runs = suite("damaged", "--rllm-reuse-runs", "-W", "always::pytest_rllm.run_store.StoreWarning")
    assert engines_started(damaged) == 1 and outcomes(damaged) == {"passed": 3}
    assert not any(r.get("reused") for r in runs.values())
    damaged.stdout.fnmatch_lines(["*run store: ignored *the run is generated again*"])


XDIST_SUITE = '''
def test_a(rllm_run):
    assert rllm_run("baseline", "main").summary()["completed"] == 4

def test_b(rllm_run):
    assert rllm_run("baseline", "no-thinking").summary()["completed"] == 4

def test_c(rllm_run):
    assert rllm_run("prefix-caching-off", "main").summary()["completed"] == 4
    assert rllm_run("baseline", "main").summary()["completed"] == 4

def test_d(rllm_run):
    assert rllm_run("prefix-caching-off", "main").summary()["completed"] == 4
'''


def test_under_two_xdist_workers_every_run_is_generated_once(pytester):
    pytester.makepyfile(test_suite=XDIST_SUITE)
    report = pytester.path / "merged.json"
    options = [o for o in OPTIONS if o != "--rllm-optimizations=baseline"]
    result = pytester.runpytest_subprocess(*options, "--rllm-optimizations=prefix-caching-off", "-n", "2",
                                           f"--rllm-cache-dir={pytester.path / 'store'}", f"--rllm-report={report}")
    assert result.parseoutcomes().get("passed") == 4, result.stdout.str()[-3000:]
    names = [r["name"] for r in json.loads(report.read_text())["runs"]]
    assert sorted(names) == ["baseline/main", "baseline/no-thinking", "prefix-caching-off/main"]  # none twice
    started = [int(n) for n in re.findall(r"engine start \(import \+ load, (\d+) engines\)", result.stdout.str())]
    assert sum(started) == 2, result.stdout.str()[-3000:]  # each configuration's engine in one worker
    assert len(list((pytester.path / "store" / "runs").glob("*.json"))) == 3


def test_baseline_and_prefix_caching_on_are_one_engine_where_the_engine_caches_by_default():
    from pytest_rllm.session import RllmSession
    from pytest_rllm.settings import RllmSettings

    settings = RllmSettings.from_values({"engine": "inprocess", "optimizations": "prefix-caching-on,prefix-caching-off",
                                         "num_prompts": "4", "max_tokens": "32", "warm_up": "0"})
    session = RllmSession(settings)
    for label, workload in (("baseline", "main"), ("prefix-caching-on", "shared-prefix"), ("prefix-caching-off", "shared-prefix")):
        session.need(label, workload)
    try:
        session.run("baseline", "main")
        resolved = session.engine_infos["baseline"]["cache_config"].get("enable_prefix_caching")
        assert resolved in ("True", "False"), session.engine_infos["baseline"]["cache_config"]
        on = session.run("prefix-caching-on", "shared-prefix")  # served already, while baseline's engine was up
        off = session.run("prefix-caching-off", "shared-prefix")
    finally:
        session.close()
    shared = "prefix-caching-on" if resolved == "True" else "prefix-caching-off"
    assert session.timings.engines_started == 2
    assert session.shared_engines == {shared: ("baseline", f"enable_prefix_caching={resolved} is the engine's default")}
    run = on if shared == "prefix-caching-on" else off
    assert run.engine["shared_engine"]["with"] == "baseline" and run.engine["spec"]["preset"] == shared
    assert run.summary()["completed"] == 4
