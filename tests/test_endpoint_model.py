"""Endpoint mode is keyed by the model the server serves (issue 14, item 5).

With --rllm-endpoint, --rllm-model is the name the server serves (vLLM's
--served-model-name, SGLang's model path), any text, never a local folder; it
defaults to the first id of GET /v1/models; a name the server does not serve is
an error naming what it serves. Baselines are stored under that name, never
under the embedded model's.

Every server here is `ScriptedEndpoint`, a stand-in OpenAI-compatible server on
loopback that streams a short fixed answer: it checks the plumbing, not serving,
so nothing here is an `engine` test and no number it yields is a measurement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_rllm.baseline_store import BaselineStore
from pytest_rllm.engines.base import EngineStartError
from pytest_rllm.engines.endpoint import pick_served_model
from pytest_rllm.parsers import SettingError
from pytest_rllm.session import RunFailed
from pytest_rllm.settings import RllmSettings
from test_reliability_input import ScriptedEndpoint, endpoint_session, run_baseline

SERVED = ("served-name", "second-name")


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", ["served-name", "my-served-name", "/models/Qwen/Qwen3-8B", "./not/here", "org/model"])
def test_with_an_endpoint_the_model_is_any_served_name_never_a_folder(name):
    s = RllmSettings.from_values({"endpoint": "http://127.0.0.1:8000", "model": name})
    assert s.model == name and s.served_model_wanted == name
    assert not s.uses_embedded_model


def test_with_an_endpoint_and_no_model_the_first_served_id_is_asked_for():
    s = RllmSettings.from_values({"endpoint": "http://127.0.0.1:8000"})
    assert s.served_model_wanted is None and not s.uses_embedded_model


def test_without_an_endpoint_the_model_is_still_checked_as_a_folder_or_hub_id():
    with pytest.raises(SettingError, match="model folder 'my-served-name' does not exist"):
        RllmSettings.from_values({"model": "my-served-name"})
    assert RllmSettings.from_values({}).model == "pocket"
    assert RllmSettings.from_values({}).served_model_wanted is None


def test_the_command_line_accepts_a_served_name_with_an_endpoint(pytester):
    pytester.makepyfile("def test_x(rllm_settings):\n    print('MODEL', repr(rllm_settings.model))\n")
    # Port 9 (discard) on loopback: nothing answers, and nothing needs to for the settings.
    result = pytester.runpytest("-s", "-p", "no:cacheprovider", "--rllm-endpoint=http://127.0.0.1:9",
                                "--rllm-model=my-served-name")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["rllm: model=my-served-name (not checked: the endpoint did not answer) engine=endpoint *",
                                 "*MODEL 'my-served-name'*"])


def test_the_command_line_still_refuses_a_missing_folder_without_an_endpoint(pytester):
    pytester.makepyfile("def test_x(): raise SystemExit('must not run')")
    result = pytester.runpytest("-p", "no:cacheprovider", "--rllm-model=my-served-name")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rllm-model / rllm_model*model folder 'my-served-name' does not exist*"])


# --------------------------------------------------------------------------- choosing the served model


def test_pick_served_model():
    assert pick_served_model(list(SERVED), None, "here") == "served-name"
    assert pick_served_model(list(SERVED), "second-name", "here") == "second-name"
    with pytest.raises(EngineStartError, match="serves no model"):
        pick_served_model([], None, "here")


def test_without_a_model_the_first_served_id_is_tested():
    with ScriptedEndpoint(served=SERVED) as server:
        run = run_baseline(endpoint_session(server.url))
        bodies = [body for _, body in server.calls]
    assert run.error is None and run.engine["model"] == "served-name"
    assert bodies and {b["model"] for b in bodies} == {"served-name"}


def test_a_named_served_model_is_the_one_requests_ask_for():
    with ScriptedEndpoint(served=SERVED) as server:
        run = run_baseline(endpoint_session(server.url, model="second-name"))
        bodies = [body for _, body in server.calls]
    assert run.error is None and run.engine["model"] == "second-name"
    assert {b["model"] for b in bodies} == {"second-name"}


def test_a_named_model_the_endpoint_does_not_serve_fails_naming_what_it_serves_and_the_fix():
    with ScriptedEndpoint(served=SERVED) as server:
        with pytest.raises(RunFailed) as info:
            run_baseline(endpoint_session(server.url, model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"))
        calls = len(server.calls)
    message = str(info.value)
    assert calls == 0  # another model's answers are never collected in its place
    assert "does not serve --rllm-model='deepseek-ai/DeepSeek-R1-Distill-Qwen-7B'" in message, message
    assert "'served-name', 'second-name'" in message and "--served-model-name" in message, message
    assert "leave --rllm-model out" in message, message


# --------------------------------------------------------------------------- baselines keyed by the served name


def test_a_baseline_check_asks_for_its_model_once_and_only_when_it_needs_a_path(tmp_path):
    from pytest_rllm.baselines import BaselineCheck

    asked = []

    def served() -> str:
        asked.append(1)
        return "org/served-name"

    check = BaselineCheck(BaselineStore(tmp_path), hardware_key="hw", model=served, module="m", test_id="t",
                          update="changed")
    assert asked == []
    check.check({"value": 1.0})
    check.check({"value": 2.0}, name="other")
    assert len(asked) == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")) == [
        "hw/org--served-name/m/t--other.json", "hw/org--served-name/m/t.json"]

INNER = '''
def test_with_run(rllm_run, rllm_baseline):
    run = rllm_run("baseline", "main")
    rllm_baseline.check({"requests": float(len(run.records))})


def test_check_only(rllm_baseline):
    rllm_baseline.check({"value": 1.0})
'''


def run_project(pytester: pytest.Pytester, url: str, *extra: str) -> pytest.RunResult:
    pytester.makepyfile(test_keyed=INNER)
    return pytester.runpytest("-p", "no:cacheprovider", f"--rllm-endpoint={url}", "--rllm-optimizations=baseline",
                              "--rllm-hardware-key=hw", "--rllm-num-prompts=3", "--rllm-max-tokens=16",
                              "--rllm-update-baselines", "--rllm-report=report.json", *extra)


def baseline_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "baselines")) for p in (root / "baselines").rglob("*.json"))


def test_baselines_are_written_under_the_served_name_not_the_embedded_model(pytester):
    with ScriptedEndpoint(served=SERVED) as server:
        result = run_project(pytester, server.url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["rllm: model=served-name (the endpoint's first served model) engine=endpoint *"])
    files = baseline_files(pytester.path)
    # The check that ran no workload resolves the name too (it asks the endpoint itself).
    assert files == ["hw/served-name/test_keyed/test_check_only.json", "hw/served-name/test_keyed/test_with_run.json"]
    assert not any("pocket" in f for f in files)
    stored = BaselineStore(pytester.path / "baselines").read(pytester.path / "baselines" / files[1])
    assert stored["model"] == "served-name"
    assert json.loads((pytester.path / "report.json").read_text())["meta"]["model"] == "served-name"


def test_a_named_served_model_keys_its_own_baselines(pytester):
    with ScriptedEndpoint(served=SERVED) as server:
        result = run_project(pytester, server.url, "--rllm-model=second-name")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["rllm: model=second-name (served by the endpoint) engine=endpoint *"])
    assert {f.split("/")[1] for f in baseline_files(pytester.path)} == {"second-name"}


def test_a_named_model_that_is_not_served_fails_every_check_and_writes_no_baseline(pytester):
    with ScriptedEndpoint(served=SERVED) as server:
        result = run_project(pytester, server.url, "--rllm-model=pocket")
        calls = len(server.calls)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["rllm: model=pocket (NOT served by the endpoint, which serves served-name, second-name) *",
                                 "*does not serve --rllm-model='pocket'*"])
    assert calls == 0 and not (pytester.path / "baselines").exists()
