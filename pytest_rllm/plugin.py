"""The pytest plugin: options, fixtures and hooks. Thin: the work lives in the modules it calls.

Nothing heavy is imported here (pytest imports every installed plugin on every
run): vllm, torch and lm_eval load only when a fixture starts an engine or runs
an evaluation.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pytest_rllm.fixtures import baseline_run, gamma_run, needs_of, preset_run, reference_run, rllm_ab, rllm_finding  # noqa: F401
from pytest_rllm.options import add_options
from pytest_rllm.parsers import SettingError
from pytest_rllm.settings import RllmSettings

from pytest_rllm.state import STATE_KEY, install, state_of  # noqa: F401  (STATE_KEY: public, for tests)

SETTINGS_KEY = pytest.StashKey[RllmSettings]()


@pytest.hookimpl
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rllm_needs(*pairs): (configuration, workload) runs the test reads, e.g. "
        "rllm_needs(('baseline', 'main')); the session runs each engine's workloads together.",
    )
    try:
        config.stash[SETTINGS_KEY] = RllmSettings.from_config(config)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
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


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return []
    if settings.endpoint:
        engine = f"endpoint {settings.endpoint}"  # its version is known once it answered: the rllm section says it
        model = _endpoint_model_text(settings)
    else:
        from pytest_rllm.engines.identity import local_identity

        engine = f"{settings.engine} ({local_identity().text})"
        model = "pocket (embedded reasoning model)" if settings.uses_embedded_model else settings.model
    lines = [
        f"rllm: model={model} engine={engine} hardware={hardware_key(settings)}",
        f"rllm: optimizations={','.join(settings.optimizations)} dataset={','.join(settings.dataset)} "
        f"arrival={settings.arrival} max_tokens={settings.max_tokens} seed={settings.seed}",
    ]
    if settings.has_candidate:
        version = ""
        if settings.candidate_python:
            from pytest_rllm.parsers import probe_python_vllm

            found = probe_python_vllm(settings.candidate_python)  # cached: checked when the option was read
            version = f" ({found[0]} {found[1]})" if isinstance(found, tuple) else ""
        lines.append(f"rllm: candidate={settings.candidate_text()}{version} "
                     f"optimizations={','.join(settings.candidate_optimizations)} engines={settings.candidate_engines}")
    return lines


def _endpoint_model_text(settings: RllmSettings) -> str:
    """The header's model in endpoint mode: the name the server serves, asked of it (GET /v1/models)."""
    from pytest_rllm.engines.base import EngineStartError
    from pytest_rllm.engines.endpoint import served_model_ids

    wanted = settings.served_model_wanted
    key = os.environ.get(settings.api_key_env) if settings.api_key_env else None  # never printed
    try:
        served = served_model_ids(settings.endpoint or "", api_key=key, timeout=3.0)
    except EngineStartError:
        # The first run says why, with the fix; the header only must not guess a model.
        return f"{wanted} (not checked: the endpoint did not answer)" if wanted else \
            "the endpoint's first served model (not known: the endpoint did not answer)"
    if not served:
        return f"{wanted} (the endpoint serves no model)" if wanted else "none (the endpoint serves no model)"
    if wanted is None:
        return f"{served[0]} (the endpoint's first served model)"
    if wanted not in served:
        return f"{wanted} (NOT served by the endpoint, which serves {', '.join(served)})"
    return f"{wanted} (served by the endpoint)"


def hardware_key(settings: RllmSettings) -> str:
    if settings.hardware_key:
        return settings.hardware_key
    try:
        from pytest_rllm.hardware import detect_hardware_key
    except ImportError:
        return "unknown"
    return detect_hardware_key(settings.gpus_per_worker)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The plan comes from what the items ask for: run fixtures (with their indirect
    # parameters) and rllm_needs markers. Finding and baseline tests get their claim.
    from pytest_rllm.properties import CLAIM_PROPERTY

    state, settings = config.stash[STATE_KEY], config.stash[SETTINGS_KEY]
    for item in items:
        needs = needs_of(item, settings)
        state.plan_runs(needs)
        if needs or "rllm_finding" in getattr(item, "fixturenames", ()):
            doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip()
            if doc:
                item.user_properties.append((CLAIM_PROPERTY, doc.splitlines()[0]))


def worker_gpu_ids(config: pytest.Config, settings: RllmSettings) -> list[int] | None:
    """One GPU (or --rllm-gpus-per-worker of them) per xdist worker; None without GPUs."""
    from pytest_rllm.telemetry.nvml import NvmlMemory

    probe = NvmlMemory([])
    if probe._nvml is None:
        return None
    count = probe._nvml.nvmlDeviceGetCount()
    probe.close()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    from pytest_rllm.hardware import gpu_ids_for_worker

    return gpu_ids_for_worker(worker, settings.gpus_per_worker, count)


@pytest.fixture(scope="session")
def rllm_settings(pytestconfig: pytest.Config) -> RllmSettings:
    """The resolved --rllm-* options.

        def test_budget(rllm_settings):
            assert rllm_settings.max_tokens >= 1024
    """
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def rllm_session(pytestconfig: pytest.Config, rllm_settings: RllmSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's engines and cached runs: each (configuration, workload) runs once.

        def test_fast(rllm_session):
            assert rllm_session.run("baseline", "main").summary()["e2e_p50"] < 60
    """
    from pytest_rllm.session import RllmSession

    session = RllmSession(
        rllm_settings,
        log_dir=tmp_path_factory.mktemp("rllm-engine-logs"),
        gpu_ids=None if rllm_settings.endpoint else worker_gpu_ids(pytestconfig, rllm_settings),
    )
    state = pytestconfig.stash[STATE_KEY]
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
    pytestconfig.stash[STATE_KEY].candidate = comparisons
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

    config = request.config
    model: Any = rllm_settings.model
    if rllm_settings.endpoint:
        # Keyed by the name the server serves, known once it was asked: resolved at the first check.
        model = _served_model_of(request.getfixturevalue("rllm_session"))
    return baseline_check_for(
        request,
        rllm_settings,
        hardware_key=hardware_key(rllm_settings),
        model=model,
        # Read when the check runs: by then the test's runs have started the engine (an endpoint's version is known).
        engine_info=lambda: engine_identity(config, rllm_settings).to_dict(),
    )


def engine_identity(config: pytest.Config, settings: RllmSettings) -> Any:
    """The EngineIdentity baselines record: what the session's baseline engine reported, else what is installed.

    An external server's version is known only once it answered; before that, and
    without a session, the local installation (or "unknown", for an endpoint) stands in.
    """
    from pytest_rllm.engines.identity import endpoint_identity, identity_of, local_identity

    state = state_of(config)
    infos = getattr(getattr(state, "session", None), "engine_infos", None) or {}
    if "identity" in (infos.get("baseline") or {}):
        return identity_of(infos["baseline"])
    return endpoint_identity() if settings.endpoint else local_identity()


def _served_model_of(session: Any) -> Callable[[], str]:
    """Endpoint mode: a callable giving the model the endpoint serves to this session.

    The session's endpoint engine knows it once started (GET /v1/models); if no run
    started it yet, it is started now (for an endpoint that is that one request).
    """

    def resolve() -> str:
        __tracebackhide__ = True
        from pytest_rllm.session import RunFailed, RunUnavailable

        for info in session.engine_infos.values():
            if info.get("kind") == "endpoint" and info.get("model"):
                return str(info["model"])
        try:
            return str(session.engine("baseline").served_model)
        except RunUnavailable as exc:
            skip, failure = str(exc), None
        except RunFailed as exc:
            skip, failure = None, str(exc)
        # Outside the except clauses: the message is the whole story, no chained traceback.
        if skip is not None:
            pytest.skip(skip)
        pytest.fail(f"rllm_baseline: baselines are stored under the model the endpoint serves, "
                    f"and the endpoint could not say which: {failure}", pytrace=False)

    return resolve


# --------------------------------------------------------------------------- results: collect, merge, report
def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where to leave its runs for the merged report."""
    node.workerinput["rllm_parts_dir"] = _parts_dir(node.config)


def _parts_dir(config: pytest.Config) -> str:
    import tempfile

    if not hasattr(config, "_rllm_parts_dir"):
        config._rllm_parts_dir = tempfile.mkdtemp(prefix="rllm-parts-")  # type: ignore[attr-defined]
    return config._rllm_parts_dir  # type: ignore[attr-defined]


def _local_runs(config: pytest.Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    state = state_of(config)
    session = state.session if state is not None else None
    if session is None:
        return [], {}
    timings = vars(session.timings).copy()
    runs = list(session.runs)
    candidate = getattr(state, "candidate", None)
    if candidate is not None:
        # The candidate's runs are named <preset>@candidate/<workload>; its engine time joins the session's.
        runs += candidate.session.runs
        for name in ("engine_start", "generation", "engine_stop", "warm_up", "engines_started"):
            timings[name] = timings.get(name, 0) + getattr(candidate.session.timings, name, 0)
    return [run.to_dict() for run in runs], timings


def _merge_worker_parts(runs: list[dict[str, Any]], timings: list[dict[str, Any]],
                        parts_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """xdist controller: the runs of every worker's part joined to `runs` by merge_reports, and each part's timings."""
    from pytest_rllm.report.jsonio import merge_reports, read_json_report

    parts = [read_json_report(part) for part in sorted(parts_dir.glob("*.json"))]
    merged = merge_reports([{"runs": runs}, *parts])
    return merged["runs"], [*timings, *[(part.get("meta") or {}).get("timings") or {} for part in parts]]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    runs, timings = _local_runs(config)
    if _is_worker(config):
        parts = config.workerinput.get("rllm_parts_dir")  # type: ignore[attr-defined]
        if parts and runs:
            from pytest_rllm.report.jsonio import write_json_report

            worker = config.workerinput.get("workerid", "worker")  # type: ignore[attr-defined]
            write_json_report(Path(parts) / f"{worker}.json", runs, [], {"timings": timings})
        return
    all_timings = [timings] if runs else []
    parts_dir = getattr(config, "_rllm_parts_dir", None)
    if parts_dir:
        import shutil

        runs, all_timings = _merge_worker_parts(runs, all_timings, Path(parts_dir))
        shutil.rmtree(parts_dir, ignore_errors=True)
    state = config.stash[STATE_KEY]
    checks, findings = state.checks, state.findings_with_flags()
    ab = list(state.ab_rows)
    state.merged = {"runs": runs, "checks": checks, "findings": findings, "timings": all_timings, "ab": ab}
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not (runs or checks or findings or ab):
        return
    meta = _report_meta(config, settings, runs)
    from pytest_rllm.report.html import write_html_report
    from pytest_rllm.report.jsonio import write_json_report

    if settings.report:
        write_json_report(Path(settings.report), runs, checks, {**meta, "findings": findings, "timings": all_timings}, ab=ab)
    if settings.html:
        write_html_report(Path(settings.html), runs, checks, meta, findings, ab=ab)


def _report_meta(config: pytest.Config, settings: RllmSettings, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from pytest_rllm.engines.platform import engine_version_text

    model = settings.model
    if settings.endpoint:
        # The name the server served, as its runs recorded it (GET /v1/models).
        model = next((str(r["engine"]["model"]) for r in runs or () if (r.get("engine") or {}).get("model")), model)
    # No host name, URL credentials or API key: reports may be shared. Each run's
    # engine identity is in the run; the reports list the distinct ones (report/values.engine_identities).
    return {
        "model": model,
        "engine": "endpoint" if settings.endpoint else f"{settings.engine} ({engine_version_text()})",
        "hardware": hardware_key(settings),
        "dataset": ",".join(settings.dataset),
        "arrival": settings.arrival,
        "max_tokens": settings.max_tokens,
        "seed": settings.seed,
    }


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    state = state_of(config)
    merged = state.merged if state is not None else None
    if not merged or not (merged["runs"] or merged["checks"] or merged["findings"] or merged.get("ab")):
        return
    from pytest_rllm.report.terminal import ab_lines, summary_lines

    tr = terminalreporter
    tr.write_sep("=", "rllm")
    for line in summary_lines(merged["runs"], merged["checks"]):
        tr.write_line(line)
    for line in ab_lines(merged.get("ab") or []):
        tr.write_line(line)
    notable = [f for f in merged["findings"] if f["verdict"] != "holds"]
    held = sum(1 for f in merged["findings"] if f["verdict"] == "holds")
    if merged["findings"]:
        counts: dict[str, int] = {}
        for f in merged["findings"]:
            counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
        tr.write_line("findings: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + ".")
    for f in notable:
        first = (f.get("evidence") or "").splitlines()
        tr.write_line(f"{f['verdict'].upper()} {f['nodeid']}: {f['claim']}" + (f" -- {first[-1]}" if first else ""))
    if held and any(f["verdict"] == "flagged" for f in merged["findings"]):
        tr.write_line("Strict mode for gates: -W error::pytest_rllm.FindingFlag turns flags into failures.")
    total = time.perf_counter() - state.started
    for t in merged["timings"]:
        if not t:
            continue
        other = total - t.get("engine_start", 0) - t.get("generation", 0) - t.get("engine_stop", 0)
        tr.write_line(f"time to verdict: {total:.1f}s")
        tr.write_line(f"  engine start (import + load, {t.get('engines_started', 0)} engines): {t.get('engine_start', 0):.1f}s")
        tr.write_line(f"  generation: {t.get('generation', 0):.1f}s")
        tr.write_line(f"  engine stop: {t.get('engine_stop', 0):.1f}s")
        tr.write_line(f"  collection, analysis and reports: {other:.1f}s")
