"""Starting the next configuration's server beside this one's (--rllm-start-ahead).

The rules (when, which configuration, whether both fit) on plain data; the pairing's
order and failure handling with engines that only record what was asked of them (no
serving is measured there); and one session on real vLLM servers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_rllm.engines.base import EngineStartError, EngineUnsupported
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.engines.start_ahead import (
    GIB, HEADROOM_BYTES, EngineAhead, available_bytes, cpu_server_bytes, fits_beside, may_share, partner_for, refusal,
    start_pair,
)
from pytest_rllm.session import RllmSession
from pytest_rllm.settings import RllmSettings


# -- when ------------------------------------------------------------------------
def test_refusal_names_what_prevents_starting_ahead():
    allowed = dict(engine_kind="server", endpoint=None, on_gpu=False, shared_with_workers=False)
    assert refusal("auto", **allowed) is None
    assert refusal("off", **allowed) == "--rllm-start-ahead=off"
    assert "inprocess" in refusal("auto", **{**allowed, "engine_kind": "inprocess"})
    assert "endpoint" in refusal("on", **{**allowed, "endpoint": "http://h:8000"})
    assert "xdist" in refusal("on", **{**allowed, "shared_with_workers": True})
    # On a GPU two servers need a memory split, which only the user can give.
    assert "--rllm-start-ahead=on" in refusal("auto", **{**allowed, "on_gpu": True})
    assert refusal("on", **{**allowed, "on_gpu": True}) is None


def test_memory_rule_counts_weights_kv_space_and_processes(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "config.json").write_text("{}")
    assert cpu_server_bytes(str(tmp_path), {"VLLM_CPU_KVCACHE_SPACE": "2"}) == 2 * 1000 + 2 * GIB + 3 * GIB
    assert cpu_server_bytes("org/hub-name", {"VLLM_CPU_KVCACHE_SPACE": "1"}) == 4 * GIB  # no local weights to count
    assert cpu_server_bytes("org/hub-name", {}) == 7 * GIB  # vLLM's own 4 GiB default
    assert fits_beside([4 * GIB, 4 * GIB], 8 * GIB + HEADROOM_BYTES)
    assert not fits_beside([4 * GIB, 4 * GIB], 8 * GIB + HEADROOM_BYTES - 1)
    assert not fits_beside([GIB], None)  # unknown memory: no second server


def test_available_bytes_reads_memavailable():
    text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
    assert available_bytes(text) == 20000000 * 1024
    assert available_bytes("MemTotal: 5 kB\n") is None


def test_configurations_that_may_be_one_engine_are_not_started_ahead():
    base = EngineSpec("/m", "baseline", (("seed", 0),))
    on = EngineSpec("/m", "prefix-caching-on", (("seed", 0), ("enable_prefix_caching", True)))
    off = EngineSpec("/m", "prefix-caching-off", (("seed", 0), ("enable_prefix_caching", False)))
    ngram = EngineSpec("/m", "spec-ngram", (("seed", 0), ("speculative_config", {"method": "ngram"})))
    assert may_share(base, on) and may_share(base, off)
    assert not may_share(on, off) and not may_share(base, ngram)


def _session(tmp_path: Path, **values: str) -> RllmSession:
    raw = {"engine": "server", "optimizations": "spec-ngram,kv-fp8-e4m3,prefix-caching-on", "cache_dir": str(tmp_path), **values}
    return RllmSession(RllmSettings.from_values(raw))


def test_partner_is_the_next_planned_configuration_that_needs_its_own_engine(tmp_path, monkeypatch):
    import pytest_rllm.engines.platform as platform_
    import pytest_rllm.engines.start_ahead as start_ahead

    monkeypatch.setattr(platform_, "is_cpu_build", lambda: True)
    monkeypatch.setattr(start_ahead, "available_bytes", lambda: 64 * GIB)
    session = _session(tmp_path)
    for label in ("baseline", "prefix-caching-on", "spec-ngram", "kv-fp8-e4m3"):
        session.need(label, "main")
    assert partner_for(session, "baseline") == "spec-ngram"  # prefix-caching-on may be baseline's engine
    assert partner_for(session, "spec-ngram") == "baseline"
    session.engine_failures["baseline"] = object()
    assert partner_for(session, "spec-ngram") == "prefix-caching-on"
    for label in ("prefix-caching-on", "kv-fp8-e4m3"):
        session.outcomes[(label, "main")] = object()
    assert partner_for(session, "spec-ngram") is None  # nothing left that needs an engine
    assert partner_for(_session(tmp_path, start_ahead="off"), "baseline") is None
    inprocess = _session(tmp_path, engine="inprocess")
    inprocess.need("spec-ngram", "main")
    assert partner_for(inprocess, "baseline") is None
    monkeypatch.setattr(start_ahead, "available_bytes", lambda: 6 * GIB)  # not both: one is started at a time
    fresh = _session(tmp_path)
    fresh.need("spec-ngram", "main")
    assert partner_for(fresh, "baseline") is None


# -- the pairing's order, with engines that record what was asked of them -------------------------
class Recording:
    def __init__(self, name: str, calls: list[str], fail_at: str | None = None, error: type = EngineStartError):
        self.name, self.calls, self.fail_at, self.error = name, calls, fail_at, error

    def _call(self, what: str) -> None:
        self.calls.append(f"{self.name}.{what}")
        if what == self.fail_at:
            raise self.error(f"{self.name} failed at {what}", reason="why")

    def launch(self) -> None:
        self._call("launch")

    def wait_ready(self) -> None:
        self._call("wait_ready")

    def pause(self) -> None:
        self._call("pause")

    def stop(self) -> None:
        self._call("stop")


def test_both_launch_before_either_is_waited_for_and_the_second_is_paused():
    calls: list[str] = []
    ahead = start_pair(Recording("a", calls), EngineAhead("b", Recording("b", calls), beside="a"))
    assert calls == ["a.launch", "b.launch", "a.wait_ready", "b.wait_ready", "b.pause"]
    assert ahead.engine is not None and ahead.error is None


def test_a_failure_of_the_engine_started_ahead_is_kept_for_its_own_configuration():
    calls: list[str] = []
    ahead = start_pair(Recording("a", calls), EngineAhead("b", Recording("b", calls, "wait_ready", EngineUnsupported), beside="a"))
    assert ahead.engine is None and isinstance(ahead.error, EngineUnsupported)
    assert "b.pause" not in calls


def test_a_failure_of_the_engine_asked_for_raises_and_stops_the_other():
    calls: list[str] = []
    with pytest.raises(EngineStartError, match="a failed"):
        start_pair(Recording("a", calls, "wait_ready"), EngineAhead("b", Recording("b", calls), beside="a"))
    assert calls[-1] == "b.stop"


def test_the_rllm_section_names_engines_started_ahead():
    from pytest_rllm.report.terminal import shared_engine_lines, started_ahead_lines, timing_lines

    runs = [{"label": "baseline", "engine": {}}, {"label": "spec-ngram", "engine": {"started_ahead": {"beside": "baseline"}}},
            {"label": "spec-ngram", "engine": {"started_ahead": {"beside": "baseline"}}}]
    assert started_ahead_lines(runs) == ["started ahead, paused until their turn (--rllm-start-ahead): spec-ngram beside baseline"]
    assert started_ahead_lines(runs[:1]) == []
    shared = [{"label": "prefix-caching-on", "engine": {"shared_engine": {"with": "baseline", "why": "its default"}}}] * 2
    assert shared_engine_lines(shared + runs) == ["prefix-caching-on ran on baseline's engine, one engine for both (its default)"]
    lines = timing_lines([{"engine_start": 50.0, "engines_started": 2, "engines_started_ahead": 1}], 80.0)
    assert lines[1] == "  engine start (import + load, 2 engines, 1 of them beside another): 50.0s"
    assert "beside" not in timing_lines([{"engine_start": 50.0, "engines_started": 2}], 80.0)[1]


# -- on real vLLM -------------------------------------------------------------------------
def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.engine
def test_the_next_server_starts_beside_paused_and_serves_when_its_turn_comes(engine_model, tmp_path):
    settings = RllmSettings.from_values({"model": engine_model, "engine": "server", "optimizations": "spec-ngram",
                                         "num_prompts": "4", "max_tokens": "32", "warm_up": "0", "startup_timeout": "300"})
    session = RllmSession(settings, log_dir=tmp_path)
    session.need("baseline", "main")
    session.need("spec-ngram", "main")
    try:
        base = session.run("baseline", "main")
        ahead = session._ahead
        assert ahead is not None and ahead.label == "spec-ngram" and ahead.engine is not None, ahead
        pgid = ahead.engine.proc.pid
        # Paused while baseline generated: stopped ('T'), so it took no CPU from that measurement.
        assert _state(pgid) == "T"
        t0 = time.perf_counter()
        ngram = session.run("spec-ngram", "main")
        assert time.perf_counter() - t0 < 60  # continued, not started again (a start takes 25-40 s here)
    finally:
        session.close()
    assert session.started_ahead == {"spec-ngram": "baseline"}
    assert session.timings.engines_started == 2
    assert base.summary()["completed"] == 4 and ngram.summary()["completed"] == 4
    assert ngram.engine["preset"] == "spec-ngram" and ngram.engine["started_ahead"] == {"beside": "baseline"}
    assert "started_ahead" not in base.engine
    assert not _group_alive(pgid)  # stopped with the session
