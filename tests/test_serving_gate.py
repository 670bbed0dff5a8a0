"""The regression gate's pieces on plain data: trials combined, host load read from /proc text, speed verdicts.

The real-engine demonstration (a capped engine fails, the unchanged one passes)
is tests/test_regression_gate.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_rllm.baseline_store import BaselineStore
from pytest_rllm.baselines import BaselineCheck
from pytest_rllm.checks.serving import (
    WITHIN_SESSION_BAND,
    HOST_BUSY_SHARE,
    SPEED_METRICS,
    hardware_class,
    ratio_noise,
    recorded_warm,
    speed_noise,
    serving_metrics,
    serving_tolerances,
)
from pytest_rllm.compare import Measurement
from pytest_rllm.parsers import SettingError
from pytest_rllm.records import RequestRecord
from pytest_rllm.results import RunResult, combine_trials
from pytest_rllm.settings import RllmSettings
from pytest_rllm.telemetry import host
from pytest_rllm.tolerance import parse_tolerance


def record(i: int, seconds: float, *, correct: bool = True) -> RequestRecord:
    r = RequestRecord(item_id=f"i{i}", domain="addition", difficulty=1.0, reference="1", grader="exact")
    r.t_scheduled = r.t_sent = 0.0
    r.t_first_token, r.t_first_visible, r.t_done = 0.1 * seconds, 0.2 * seconds, seconds
    r.output_tokens = 100
    r.token_times = list(np.linspace(r.t_first_token, seconds, 100))
    r.finish_reason, r.answer_text = "stop", "Answer: 1" if correct else "Answer: 2"
    return r


def trial(index: int, seconds: float, *, correct: int = 4, foreign: float = 0.0) -> RunResult:
    records = [record(i, seconds * (1 + 0.1 * i), correct=i < correct) for i in range(5)]
    run = RunResult("baseline", "main", records, trial=index, t_start=0.0, t_end=seconds * 1.4)
    run.host = {"foreign_cpu_share": foreign, "steal_share": 0.0, "python_speed": 30.0}
    return run


# --------------------------------------------------------------------------- trials


def test_trials_is_an_option_with_an_ini_twin_and_rejects_zero():
    assert RllmSettings.from_values({"trials": "3"}).trials == 3
    assert RllmSettings().trials == 1
    with pytest.raises(SettingError, match="--rllm-trials / rllm_trials"):
        RllmSettings.from_values({"trials": "0"})


def test_warm_up_is_an_option_with_an_ini_twin_zero_turns_it_off_and_it_is_recorded():
    from pytest_rllm.baselines import configuration_of

    assert RllmSettings().warm_up == 8 and RllmSettings.from_values({"warm_up": "0"}).warm_up == 0
    with pytest.raises(SettingError, match="--rllm-warm-up / rllm_warm_up"):
        RllmSettings.from_values({"warm_up": "-1"})
    assert configuration_of(RllmSettings.from_values({"warm_up": "3"}))["warm_up"] == 3


def test_a_baseline_is_warm_when_recorded_with_a_warm_up_or_before_the_option_with_trials():
    assert recorded_warm({"warm_up": 8, "trials": 1}) and not recorded_warm({"warm_up": 0, "trials": 7})
    assert recorded_warm({"trials": 7}) and not recorded_warm({"trials": 1}) and not recorded_warm({})


def test_combined_trials_give_the_mean_and_a_t_interval_of_the_serving_metrics():
    trials = [trial(0, 1.0), trial(1, 1.2), trial(2, 0.8)]
    combined = combine_trials(trials)
    s = combined.summary()
    per_trial = [t.summary()["output_throughput"] for t in trials]
    assert s["output_throughput"] == pytest.approx(np.mean(per_trial))
    assert s["output_throughput_low"] < min(per_trial) or s["output_throughput_low"] < s["output_throughput"]
    assert s["output_throughput_low"] < s["output_throughput"] < s["output_throughput_high"]
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std(per_trial, ddof=1) / math.sqrt(3)
    assert s["output_throughput_high"] - s["output_throughput"] == pytest.approx(half)
    for name in SPEED_METRICS:
        assert f"{name}_low" in s and f"{name}_high" in s
    assert s["trials"] == 3


def test_combined_trials_pool_accuracy_and_keep_pairs_distinct_per_trial():
    trials = [trial(0, 1.0, correct=5), trial(1, 1.0, correct=3)]
    combined = combine_trials(trials, repeats=2)
    assert len(combined.records) == 10
    # Trial t's repeat r becomes t*repeats + r: (item, repeat) stays unique across trials.
    assert len({(r.item_id, r.repeat) for r in combined.records}) == 10
    assert {r.repeat for r in combined.records} == {0, 2}
    s = combined.summary()
    assert s["accuracy"] == pytest.approx(8 / 10)
    assert s["accuracy_low"] < 0.8 < s["accuracy_high"]
    # The trials' own records are untouched.
    assert {r.repeat for r in trials[1].records} == {0}


def test_a_combined_run_keeps_the_busiest_trials_load_and_lists_its_trials_in_json():
    combined = combine_trials([trial(0, 1.0, foreign=0.02), trial(1, 1.0, foreign=0.3)])
    assert combined.host["foreign_cpu_share"] == pytest.approx(0.3)
    data = combined.to_dict()
    assert [t["trial"] for t in data["trials"]] == [0, 1]
    assert data["trials"][1]["host"]["foreign_cpu_share"] == pytest.approx(0.3)
    assert "output_throughput" in data["trials"][0]["summary"]


def test_combine_trials_needs_a_trial():
    with pytest.raises(ValueError, match="at least one"):
        combine_trials([])


# --------------------------------------------------------------------------- host load

STAT = "cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def test_machine_times_read_busy_total_and_steal_from_proc_stat():
    busy, total, steal = host._machine_times(STAT.format(user=100, system=50, idle=800, steal=50))
    assert (busy, total, steal) == (150, 1000, 50)


def test_process_ticks_survive_a_command_name_with_spaces_and_parentheses():
    line = "1234 (vllm (engine) core) S 1 1234 1234 0 -1 4194560 0 0 0 0 70 30 0 0 20 0 9 0 1 2 3"
    assert host._process_ticks(line) == 100


def test_major_faults_are_field_12_and_count_only_the_engines_since_the_start():
    # minflt 5, cminflt 6, majflt 7, cmajflt 8, then utime 70, stime 30.
    line = "1234 (vllm (engine) core) S 1 1234 1234 0 -1 4194560 5 6 7 8 70 30 0 0 20 0 9 0 1 2 3"
    assert host._process_major_faults(line) == 7 and host._process_ticks(line) == 100
    start = host.CpuSnapshot(t=0.0, busy=1000, total=10_000, steal=0, own=500, engine_major_faults=40)
    end = host.CpuSnapshot(t=1.0, busy=1800, total=11_000, steal=0, own=900, engine_major_faults=1040)
    assert end.since(start).engine_major_faults == 1000
    assert end.since(start).to_dict()["engine_major_faults"] == 1000


def test_foreign_share_is_machine_busy_time_minus_ours():
    start = host.CpuSnapshot(t=0.0, busy=1000, total=10_000, steal=0, own=500)
    end = host.CpuSnapshot(t=1.0, busy=1800, total=11_000, steal=100, own=900)
    load = end.since(start)
    # 800 ticks busy, 400 of them ours: 400 of 1000 foreign.
    assert load.foreign_cpu_share == pytest.approx(0.4)
    assert load.steal_share == pytest.approx(0.1)
    assert start.since(start) is None


def test_snapshot_and_probe_read_this_machine():
    snap = host.snapshot([])
    if snap is None:
        pytest.skip("no /proc here")
    assert snap.total >= snap.busy >= 0 and snap.own >= 0
    assert host.python_speed(0.02) > 0


# --------------------------------------------------------------------------- the gate's verdicts


def test_tolerances_follow_the_hardware_class_and_the_trials():
    assert hardware_class("gpu-1xnvidia-h200").name == "gpu"
    assert hardware_class("cpu-amd-epyc-avx2").name == "cpu"
    # On a GPU a 10% throughput loss must fail from 3 trials.
    gpu = serving_tolerances("gpu-1xnvidia-h200", trials=3)
    assert parse_tolerance(gpu["output_throughput"]).window(100.0, slack=False)[0] > 90.0
    single = serving_tolerances("gpu-1xnvidia-h200", trials=1)
    assert parse_tolerance(single["output_throughput"]).window(100.0, slack=False)[0] < 95.0
    # On the 2-core CPU hosts a baseline from another session must survive the host's 1.8x drift.
    cpu = serving_tolerances("cpu-intel-xeon-amx", trials=7)
    assert parse_tolerance(cpu["output_throughput"]).window(100.0, slack=False)[0] <= 100.0 / 1.8
    # Within one session the median of 7 trials is held to a band that a 1.5x slowdown leaves.
    assert 100.0 / 1.5 < parse_tolerance(WITHIN_SESSION_BAND).window(100.0, slack=False)[0] < 100.0 / 1.22


def test_speed_noise_names_the_busy_share_and_is_silent_on_a_quiet_or_unknown_host():
    run = trial(0, 1.0, foreign=HOST_BUSY_SHARE + 0.2)
    assert "other processes used 30% of the CPU" in speed_noise(run)
    assert speed_noise(trial(0, 1.0, foreign=0.01)) is None
    unknown = trial(0, 1.0)
    unknown.host = {}
    assert speed_noise(unknown) is None


def test_serving_metrics_carry_trial_intervals_but_are_judged_by_the_median():
    trials = [trial(0, 1.0), trial(1, 1.1), trial(2, 3.0)]  # the last one held open by a straggler
    combined = combine_trials(trials)
    metrics = serving_metrics(combined)
    m = metrics["output_throughput"]
    assert m.interval is not None and not m.judged_by_interval and m.n == 3
    assert m.value == pytest.approx(np.median([t.summary()["output_throughput"] for t in trials]))
    assert m.value > combined.summary()["output_throughput"]  # the mean, pulled down by the slow trial
    assert "accuracy" in metrics and metrics["accuracy"].interval is not None
    assert "kv_capacity_tokens" not in metrics  # no engine info: not measured, not invented


def gate(tmp_path, update="none"):
    return BaselineCheck(BaselineStore(tmp_path), hardware_key="cpu-x", model="m", module="mod", test_id="t",
                         update=update)


def speeds(tok_s: float, accuracy: float = 0.6) -> dict:
    # An interval as three trials give: it is stored, but the verdict reads the value.
    return {"output_throughput": Measurement(tok_s, interval=(tok_s * 0.8, tok_s * 1.2), judged_by_interval=False),
            "accuracy": Measurement.proportion(round(accuracy * 100), 100)}


TOL = {"output_throughput": "1.25x"}


def test_a_uniformly_slower_engine_fails_although_its_interval_overlaps(tmp_path):
    gate(tmp_path, update="changed").check(speeds(3000.0), tolerances=TOL)
    with pytest.raises(pytest.fail.Exception, match="output_throughput") as failed:
        gate(tmp_path).check(speeds(2000.0), tolerances=TOL)
    assert "| fail" in str(failed.value)
    assert not gate(tmp_path).check(speeds(2700.0), tolerances=TOL).failed


def test_a_slower_speed_on_a_busy_host_is_inconclusive_flagged_and_not_recorded(tmp_path):
    gate(tmp_path, update="changed").check(speeds(3000.0), tolerances=TOL)
    noise = "other processes used 40% of the CPU during the run (above 10%)"
    outcome = gate(tmp_path).check(speeds(2000.0), tolerances=TOL, speed_noise=noise)
    c = {c.metric: c for c in outcome.checks}["output_throughput"]
    assert (c.status, c.note) == ("inconclusive", noise)
    assert not outcome.failed and outcome.flagged
    updated = gate(tmp_path, update="changed").check(speeds(2000.0), tolerances=TOL, speed_noise=noise)
    assert not {c.metric: c for c in updated.checks}["output_throughput"].updated
    stored = BaselineStore(tmp_path).read(gate(tmp_path).path())
    assert stored["metrics"]["output_throughput"]["value"] == pytest.approx(3000.0)


def test_a_busy_host_does_not_excuse_lost_accuracy(tmp_path):
    gate(tmp_path, update="changed").check(speeds(3000.0, accuracy=0.9), tolerances=TOL)
    with pytest.raises(pytest.fail.Exception, match="accuracy"):
        gate(tmp_path).check(speeds(3000.0, accuracy=0.3), tolerances=TOL, speed_noise="busy")


def test_speeds_measured_on_a_busy_host_are_not_recorded_and_say_why(tmp_path):
    noise = "other processes used 40% of the CPU during the run (above 10%)"
    with pytest.raises(pytest.fail.Exception, match="not recorded: other processes used 40%"):
        gate(tmp_path, update="changed").check(speeds(3000.0), tolerances=TOL, speed_noise=noise)
    stored = BaselineStore(tmp_path).read(gate(tmp_path).path())
    assert "output_throughput" not in stored["metrics"] and "accuracy" in stored["metrics"]


def test_a_batch_held_open_by_a_runaway_request_is_speed_noise_unless_the_median_sees_past_it():
    runaway = trial(0, 1.0)
    runaway.records[0].finish_reason = "length"  # truncated, but it finished first: it held nothing open
    assert speed_noise(runaway) is None
    runaway.records[-1].finish_reason = "length"  # the last to finish ran to the budget
    assert "ran to the token budget" in speed_noise(runaway)
    # One runaway trial of three: the median ignores it.
    assert speed_noise(combine_trials([runaway, trial(1, 1.0), trial(2, 1.0)])) is None
    two = trial(1, 1.0)
    two.records[-1].finish_reason = "length"
    assert "2 of 3 trials" in speed_noise(combine_trials([runaway, two, trial(2, 1.0)]))


def test_a_speed_ratio_is_noise_when_either_run_was_held_open():
    quiet, runaway = trial(0, 1.0), trial(1, 1.0)
    runaway.records[-1].finish_reason = "length"
    runaway.label = "kv-fp8-e4m3"
    assert ratio_noise(quiet, trial(2, 1.0)) is None
    assert ratio_noise(quiet, runaway).startswith("kv-fp8-e4m3/main: in the run a request ran to the token budget")
    assert ratio_noise(runaway, quiet).startswith("kv-fp8-e4m3/main:")


def test_stored_configuration_reads_the_recorded_settings_and_is_empty_without_a_file(tmp_path):
    check = BaselineCheck(BaselineStore(tmp_path), hardware_key="cpu-x", model="m", module="mod", test_id="t",
                          update="changed", configuration={"trials": 7})
    assert check.stored_configuration() == {}
    check.check(speeds(3000.0), tolerances=TOL)
    assert gate(tmp_path).stored_configuration()["trials"] == 7


# --------------------------------------------------------------------------- engine kinds


def kind_gate(tmp_path, kind, update="none"):
    return BaselineCheck(BaselineStore(tmp_path), hardware_key="cpu-x", model="m", module="mod", test_id="t",
                         update=update, engine_kind=kind)


def test_in_process_baselines_have_their_own_file_and_read_the_servers_until_then(tmp_path):
    gate(tmp_path, update="changed").check(speeds(3000.0), tolerances=TOL)  # recorded with a server
    server_file = gate(tmp_path).path()
    inprocess = kind_gate(tmp_path, "inprocess")
    assert inprocess.path().name == "t@inprocess.json" and inprocess.path().parent == server_file.parent
    assert inprocess.read_path() == server_file  # none of its own yet: compared with the server's
    with pytest.raises(pytest.fail.Exception) as failed:
        inprocess.check(speeds(1000.0), tolerances=TOL)
    assert "compared with the server engine's file: no inprocess baseline" in str(failed.value)
    assert "t@inprocess.json" in str(failed.value)
    # Recording in process writes its own file, whole, and leaves the server's alone.
    kind_gate(tmp_path, "inprocess", update="changed").check(speeds(1000.0), tolerances=TOL)
    own = BaselineStore(tmp_path).read(inprocess.path())
    assert set(own["metrics"]) == {"output_throughput", "accuracy"}
    assert BaselineStore(tmp_path).read(server_file)["metrics"]["output_throughput"]["value"] == 3000.0
    kind_gate(tmp_path, "inprocess").check(speeds(1000.0), tolerances=TOL)  # its own now: passes
    with pytest.raises(pytest.fail.Exception):
        gate(tmp_path).check(speeds(1000.0), tolerances=TOL)  # the server's file still gates servers


def test_server_and_endpoint_engines_share_the_plain_file(tmp_path):
    assert kind_gate(tmp_path, "server").path() == gate(tmp_path).path() == kind_gate(tmp_path, None).path()
    assert kind_gate(tmp_path, "inprocess").read_path() == kind_gate(tmp_path, "inprocess").path()  # nothing to fall back to


def test_a_named_metric_the_run_could_not_measure_is_inconclusive_even_as_nan_and_never_recorded(tmp_path):
    ratio = {"kv_area_ratio_vs_reference": Measurement(9.0)}
    gate(tmp_path, update="changed").check(ratio, tolerances={"kv_area_ratio_vs_reference": "50%"})
    sparse = "baseline/no-thinking caught 2 KV-usage sample(s) in 0.89s, under the 5 its statistics need"
    for value in (2.0, math.nan):  # far off, and unmeasurable
        obtained = {"kv_area_ratio_vs_reference": Measurement(value)}
        outcome = gate(tmp_path).check(obtained, inconclusive={"kv_area_ratio_vs_reference": sparse})
        c = outcome.checks[0]
        assert (c.status, c.note) == ("inconclusive", sparse) and not outcome.failed
        updated = gate(tmp_path, update="changed").check(obtained, inconclusive={"kv_area_ratio_vs_reference": sparse})
        assert updated.checks[0].status == "inconclusive" and not updated.checks[0].updated
    assert BaselineStore(tmp_path).read(gate(tmp_path).path())["metrics"]["kv_area_ratio_vs_reference"]["value"] == 9.0
    # A file recorded while the metric could not be measured lacks it: "extra" is moot too.
    fresh = tmp_path / "fresh"
    recorded = gate(fresh, update="changed").check({"kv_area_ratio_vs_reference": Measurement(9.0), "peak": Measurement(0.5)},
                                                   inconclusive={"kv_area_ratio_vs_reference": sparse})
    assert not recorded.failed and recorded.checks[0].status == "inconclusive"
    assert "kv_area_ratio_vs_reference" not in BaselineStore(fresh).read(gate(fresh).path())["metrics"]
    assert not gate(fresh).check({"kv_area_ratio_vs_reference": Measurement(9.0), "peak": Measurement(0.5)},
                                 inconclusive={"kv_area_ratio_vs_reference": sparse}).failed
    # Without the reason the same values fail: the rule excuses only what it names.
    with pytest.raises(pytest.fail.Exception, match="kv_area_ratio_vs_reference"):
        gate(tmp_path).check({"kv_area_ratio_vs_reference": Measurement(2.0)})
    with pytest.raises(pytest.fail.Exception, match="kv_area_ratio_vs_reference"):
        gate(tmp_path).check({"kv_area_ratio_vs_reference": Measurement(2.0)}, inconclusive={"other": sparse})
    # A None reason is a metric the run did measure (a helper's "nothing wrong"): judged as usual.
    with pytest.raises(pytest.fail.Exception, match="kv_area_ratio_vs_reference"):
        gate(tmp_path).check({"kv_area_ratio_vs_reference": Measurement(2.0)}, inconclusive={"kv_area_ratio_vs_reference": None})
