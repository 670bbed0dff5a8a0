"""The regression gate on real vLLM, within one session: an engine made uniformly slower fails it, with the metric named; the unchanged one passes.

One server, one session shape: record the serving baseline from --rllm-trials=7
runs (what a 2-core host needs for the 1.25x band), check seven more unchanged runs against it, then cap the engine's
processes at CPU_CAPS[0] cores with a cgroup (tighter where that is not 1.45x slower) (the harness keeps the whole machine)
and check seven more against a baseline recorded from the unchanged ones. The serving gate is the code suites/test_serving.py runs:
serving_metrics and speed_noise, judged by BaselineCheck, with the within-session band
(WITHIN_SESSION_BAND) on throughput: across sessions the host's own drift (1.8x in an
hour, benchmarks/RESULTS.md) is wider than the 1.5x slowdown, and suites/test_serving.py
uses the cross-session band.

Cross-session repeats of the same (record in one pytest session, check in
others) are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os

import pytest

from cpu_cap import CpuCap
from pytest_rllm.baseline_store import BaselineStore
from pytest_rllm.baselines import BaselineCheck
from pytest_rllm.checks.serving import SPEED_METRICS, TRIALS_FOR_TIGHT, WITHIN_SESSION_BAND, speed_noise, serving_metrics
from pytest_rllm.hardware import detect_hardware_key
from pytest_rllm.session import RllmSession
from pytest_rllm.settings import RllmSettings

# Alone: under -n 2 another worker's engine would slow both runs, the gate's own measure.
pytestmark = [pytest.mark.engine, pytest.mark.alone]

# Two cores unchanged; a cap of 1.4 cores made the embedded model's runs about 1.5x slower
# on the AVX2 and AMX kinds (1.25 cores: 1.6x, 1.6 cores: 1.3x; RESULTS.md), the slowdown the
# gate must catch. On the AVX-512 AMD kind 1.4 cores gave only 1.15x (a fresh-clone CI run,
# 2026-12-04), so the cap is tightened until the run is at least SLOWDOWN slower.
CPU_CAPS = (1.4, 1.0, 0.7)
SLOWDOWN = 1.45


def gate(root, update: str = "none") -> BaselineCheck:
    return BaselineCheck(BaselineStore(root), hardware_key=detect_hardware_key(), model="pocket",
                         module="gate", test_id="baseline", update=update)


def check(root, run, update: str = "none"):
    # Recorded and checked minutes apart on one engine: the within-session band,
    # not the cross-session one (the host drifts 1.8x in an hour; checks/serving.py).
    metrics = serving_metrics(run)
    tolerances = {k: WITHIN_SESSION_BAND for k in ("output_throughput", "request_throughput") if k in metrics}
    data = {k: m for k, m in metrics.items() if k in tolerances or k not in SPEED_METRICS}
    return gate(root, update).check(data, tolerances=tolerances, speed_noise=speed_noise(run))


def test_the_gate_fails_a_capped_engine_and_passes_the_unchanged_one(tmp_path):
    problem = CpuCap.unavailable()
    if problem:
        pytest.skip(f"cannot slow the engine here: {problem}")
    settings = RllmSettings.from_values({"trials": str(TRIALS_FOR_TIGHT), "optimizations": "baseline"})
    session = RllmSession(settings)
    try:
        recorded = session.run("baseline", "main")
        noise = speed_noise(recorded)
        if noise:
            pytest.skip(f"the baseline would be recorded on a busy host: {noise}")
        check(tmp_path, recorded, update="changed")

        unchanged = session.measure("baseline", "main")
        outcome = check(tmp_path, unchanged)  # pytest.fail here: the gate failed an unchanged engine
        assert not outcome.failed

        # The capped run is judged against a baseline of the run just before it: the host
        # drifted at least 1.36x between two unchanged runs minutes apart once (a fresh-clone CI run
        # beside other load), which hid the cap behind the first baseline.
        check(tmp_path / "latest", unchanged, update="changed")

        engine = session.engine("baseline")
        pgid = engine.proc.pid
        for cores in CPU_CAPS:
            with CpuCap(cores) as cap:
                for pid in _group(pgid):
                    cap.add(pid)
                assert cap.members(), "no engine process went into the cgroup"
                slowed = session.measure("baseline", "main")
            ratio = unchanged.summary()["output_throughput"] / slowed.summary()["output_throughput"]
            print(f"capped at {cores} cores: output throughput x1/{ratio:.2f}")
            if ratio >= SLOWDOWN:
                break
        else:
            pytest.fail(f"a cap of {CPU_CAPS[-1]} cores slowed the engine only x1/{ratio:.2f}: no engine "
                        f"{SLOWDOWN}x slower to gate")
        noise = speed_noise(slowed)
        if noise:
            pytest.skip(f"the capped run met a busy host, so the gate may only call it inconclusive: {noise}")
        with pytest.raises(pytest.fail.Exception) as failed:
            check(tmp_path / "latest", slowed)
        message = str(failed.value)
        assert "output_throughput" in message and "| fail" in message, message
    finally:
        session.close()


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids
