"""The pytest plugin: options, fixtures and hooks, each a line or two; the work lives in the modules it calls.

Options come from options.py, this run's state (settings, plan, outcomes, xdist
parts) is state.PluginState, and what is reported comes from the report package.
Nothing heavy is imported here (pytest imports every installed plugin on every
run): vllm, torch and lm_eval load only when a fixture starts an engine or runs
an evaluation.
"""

from __future__ import annotations

import signal
from typing import Any, Iterator

import pytest

from pytest_rllm.fixtures import (  # noqa: F401  registered as the plugin's fixtures
    baseline_run, gamma_run, preset_run, reference_run, rllm_ab, rllm_finding, rllm_reasoning_model,
)
from pytest_rllm.fixtures import served_model_of
from pytest_rllm.hardware import hardware_key_for, worker_gpu_ids
from pytest_rllm.options import add_options
from pytest_rllm.settings import RllmSettings
from pytest_rllm.state import STATE_KEY, PluginState, install, state_of  # noqa: F401  (STATE_KEY: public, for tests)

RLLM_NEEDS_MARKER = ("rllm_needs(*pairs): (configuration, workload) runs the test reads, e.g. "
                     "rllm_needs(('baseline', 'main')); the session runs each engine's workloads together.")


def _state(config: pytest.Config) -> PluginState:
    return config.stash[STATE_KEY]


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RLLM_NEEDS_MARKER)
    install(config)
    _install_sigterm_handler()


def _install_sigterm_handler() -> None:
    """SIGTERM unwinds like Ctrl-C, so fixtures stop their engines and writes stay atomic."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # someone else (xdist, a CI runner) owns it

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"received signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@pytest.hookimpl
def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_rllm.report.header import header_lines

    state = state_of(config)
    return header_lines(state.settings) if state is not None else []


@pytest.hookimpl
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    _state(config).plan_items(items)


@pytest.fixture(scope="session")
def rllm_settings(pytestconfig: pytest.Config) -> RllmSettings:
    """The resolved --rllm-* options.

        def test_budget(rllm_settings):
            assert rllm_settings.max_tokens >= 1024
    """
    return _state(pytestconfig).settings


@pytest.fixture(scope="session")
def rllm_session(pytestconfig: pytest.Config, rllm_settings: RllmSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's engines and cached runs: each (configuration, workload) runs once.

        def test_fast(rllm_session):
            assert rllm_session.run("baseline", "main").summary()["e2e_p50"] < 60
    """
    from pytest_rllm.session import RllmSession

    from pytest_rllm.run_reuse import ReportUnreadable, RunSources
    from pytest_rllm.run_store import cache_root

    workerinput = getattr(pytestconfig, "workerinput", None)
    try:
        sources = RunSources.for_session(
            rllm_settings, cache_root(rllm_settings, pytestconfig.rootpath),
            session_id=(workerinput or {}).get("rllm_session_id") or _state(pytestconfig).session_id,
            shared_with_workers=workerinput is not None,
        )
    except ReportUnreadable as exc:
        raise pytest.UsageError(str(exc)) from None
    session = RllmSession(
        rllm_settings,
        log_dir=tmp_path_factory.mktemp("rllm-engine-logs"),
        gpu_ids=None if rllm_settings.endpoint else worker_gpu_ids(rllm_settings.gpus_per_worker),
        sources=sources,
    )
    state = _state(pytestconfig)
    for label, workload in state.plan:
        session.need(label, workload)
    state.session = session
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def rllm_candidate(pytestconfig: pytest.Config, rllm_settings: RllmSettings, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The candidate engine's comparisons (candidate_engine.CandidateComparisons); skips when no candidate is given.

        def test_same_speed(rllm_candidate):
            pair = rllm_candidate.pair("baseline")   # interleaved trials, A B A B ...
    """
    from pytest_rllm.settings import NO_CANDIDATE

    if not rllm_settings.has_candidate:
        pytest.skip(NO_CANDIDATE)
    from pytest_rllm.candidate_engine import CandidateComparisons

    rllm_session = request.getfixturevalue("rllm_session")  # the reference: the session every other suite reads
    comparisons = CandidateComparisons(rllm_settings, rllm_session, log_dir=tmp_path_factory.mktemp("rllm-candidate-logs"),
                                       gpu_ids=rllm_session.gpu_ids)
    _state(pytestconfig).candidate = comparisons
    try:
        yield comparisons
    finally:
        comparisons.close()


@pytest.fixture
def rllm_run(rllm_session: Any, request: pytest.FixtureRequest) -> Any:
    """Fetch a cached run, turning 'cannot run here' into a skip and a failed run into a failure.

        def test_acc(rllm_run):
            assert rllm_run("baseline", "main").summary()["accuracy"] > 0.5
    """
    from pytest_rllm.session import RunFailed, RunUnavailable

    def get(label: str, workload: str = "main") -> Any:
        __tracebackhide__ = True
        try:
            run = rllm_session.run(label, workload)
        except RunUnavailable as exc:
            pytest.skip(str(exc))
        except RunFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        from pytest_rllm.report.junit import junit_properties

        # Key metrics travel with the test report: JUnit XML and xdist both carry user_properties.
        known = {k for k, _ in request.node.user_properties}
        request.node.user_properties.extend(p for p in junit_properties(run.key, run.summary()) if p[0] not in known)
        return run

    return get


@pytest.fixture
def rllm_baseline(request: pytest.FixtureRequest, rllm_settings: RllmSettings) -> Any:
    """Compare this test's metrics with its stored baseline (baselines/<hardware>/<model>/<module>/<test>.json).

        def test_speed(rllm_run, rllm_baseline):
            rllm_baseline.check({"e2e_p50_over_baseline": 0.9}, tolerances={"e2e_p50_over_baseline": "50%"})
    """
    from pytest_rllm.baselines import baseline_check_for

    state = _state(request.config)
    model: Any = rllm_settings.model
    if rllm_settings.endpoint:
        # Keyed by the name the server serves, known once it was asked: resolved at the first check.
        model = served_model_of(request.getfixturevalue("rllm_session"))
    return baseline_check_for(
        request,
        rllm_settings,
        hardware_key=hardware_key_for(rllm_settings),
        model=model,
        # Read when the check runs: by then the test's runs have started the engine (an endpoint's version is known).
        engine_info=lambda: state.engine_identity().to_dict(),
    )


# --------------------------------------------------------------------------- results: collect, merge, report
@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where to leave its runs for the merged report."""
    node.workerinput["rllm_parts_dir"] = _state(node.config).worker_parts_dir()
    node.workerinput["rllm_session_id"] = _state(node.config).session_id  # the workers share this session's stored runs


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _state(session.config).finish(getattr(session.config, "workerinput", None))


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = state_of(config)
    lines = state.summary_lines() if state is not None else []
    if lines:
        terminalreporter.write_sep("=", "rllm")
    for line in lines:
        terminalreporter.write_line(line)
