"""The pytest plugin: options, fixtures and hooks. Thin: the work lives in the modules it calls.

Nothing heavy is imported here (pytest imports every installed plugin on every
run): vllm, torch and lm_eval load only when a fixture starts an engine or runs
an evaluation.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_rllm.settings import OPTIONS, RllmSettings, SettingError

SETTINGS_KEY = pytest.StashKey[RllmSettings]()
PLAN_KEY = pytest.StashKey[list]()
SESSION_KEY = pytest.StashKey[Any]()
START_KEY = pytest.StashKey[float]()


def _validator(option: Any) -> Any:
    """argparse type= hook: validate the text now (before anything starts), keep the text."""

    def check(text: str) -> str:
        try:
            option.parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    check.__name__ = option.name  # argparse names the type in its error message
    return check


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rllm", "reasoning-LLM serving checks (pytest-rllm)")
    for option in OPTIONS:
        default_text = _default_text(option.default)
        help_text = f"{option.help} Ini: {option.ini}. Default: {default_text}.".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": "rllm_" + option.name, "default": None, "help": help_text}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.repeatable:
            kwargs["action"] = "append"
            kwargs["type"] = _validator(option)
        elif option.flag_value is not None:
            kwargs["nargs"] = "?"
            kwargs["const"] = option.flag_value
            kwargs["type"] = _validator(option)
        else:
            kwargs["type"] = _validator(option)
        group.addoption(option.cli, **kwargs)
        parser.addini(option.ini, help=f"{option.help} (same as {option.cli})", type="linelist" if option.repeatable else "string", default=[] if option.repeatable else "")


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(f"{k}={v}" for k, v in value) or "none"
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def resolve_settings(config: pytest.Config) -> RllmSettings:
    """CLI value, else ini value, else the default; every value validated with a message naming the fix."""
    raw: dict[str, Any] = {}
    for option in OPTIONS:
        value = config.getoption("rllm_" + option.name)
        if value is None or (option.repeatable and not value):
            ini = config.getini(option.ini)
            value = ini if ini not in ("", [], None) else None
        if value is not None:
            raw[option.name] = value
    return RllmSettings.from_values(raw)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rllm_needs(*pairs): (configuration, workload) runs the test reads, e.g. "
        "rllm_needs(('baseline', 'main')); the session runs each engine's workloads together.",
    )
    try:
        config.stash[SETTINGS_KEY] = resolve_settings(config)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PLAN_KEY] = []
    config.stash[START_KEY] = time.perf_counter()
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
    from pytest_rllm.engines.platform import engine_version_text

    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return []
    if settings.endpoint:
        engine = f"endpoint {settings.endpoint}"
    else:
        engine = f"{settings.engine} ({engine_version_text()})"
    model = "pocket (embedded reasoning model)" if settings.uses_embedded_model else settings.model
    return [
        f"rllm: model={model} engine={engine} hardware={hardware_key(settings)}",
        f"rllm: optimizations={','.join(settings.optimizations)} dataset={','.join(settings.dataset)} "
        f"arrival={settings.arrival} max_tokens={settings.max_tokens} seed={settings.seed}",
    ]


def hardware_key(settings: RllmSettings) -> str:
    if settings.hardware_key:
        return settings.hardware_key
    try:
        from pytest_rllm.hardware import detect_hardware_key
    except ImportError:
        return "unknown"
    return detect_hardware_key()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    plan = config.stash[PLAN_KEY]
    for item in items:
        for marker in item.iter_markers("rllm_needs"):
            for pair in marker.args:
                if tuple(pair) not in plan:
                    plan.append(tuple(pair))


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
    for label, workload in pytestconfig.stash[PLAN_KEY]:
        session.need(label, workload)
    pytestconfig.stash[SESSION_KEY] = session
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def rllm_run(rllm_session: Any) -> Any:
    """Fetch a cached run, turning 'cannot run here' into a skip and a failed run into a failure.

        def test_acc(rllm_run):
            assert rllm_run("baseline", "main").summary()["accuracy"] > 0.5
    """
    from pytest_rllm.session import RunFailed, RunUnavailable

    def get(label: str, workload: str = "main") -> Any:
        __tracebackhide__ = True
        try:
            return rllm_session.run(label, workload)
        except RunUnavailable as exc:
            pytest.skip(str(exc))
        except RunFailed as exc:
            pytest.fail(str(exc), pytrace=False)

    return get


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.runs:
        return
    tr = terminalreporter
    tr.write_sep("=", "rllm")
    for run in session.runs:
        tr.write_line(_run_line(run))
    t = session.timings
    total = time.perf_counter() - config.stash[START_KEY]
    tr.write_line(
        f"time: total {total:.1f}s | engine start {t.engine_start:.1f}s ({t.engines_started} engines) | "
        f"generation {t.generation:.1f}s | engine stop {t.engine_stop:.1f}s"
    )


def _run_line(run: Any) -> str:
    s = run.summary()

    def f(name: str, fmt: str = "{:.3g}") -> str:
        value = s.get(name)
        return "-" if value is None or value != value else fmt.format(value)

    status = f" FAILED: {run.error.splitlines()[0]}" if run.error else ""
    return (
        f"{run.key:<28} n={int(s['requests'])} ok={int(s['completed'])} acc={f('accuracy', '{:.1%}')} "
        f"ttfvt_p50={f('ttfvt_p50')}s e2e_p50={f('e2e_p50')}s out_tok/s={f('output_throughput', '{:.0f}')} "
        f"kv_mean={f('kv_cache_usage_mean', '{:.1%}')} kv_peak={f('kv_cache_usage_peak', '{:.1%}')}{status}"
    )
