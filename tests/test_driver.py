"""The driver against fake send coroutines and against the mock streaming server.

Timing assertions are loose on purpose: CI and development machines share 2
cores, and a preempted process can be late by several milliseconds. What is
asserted exactly is the logic: who is sent, when it was due, how many in flight.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pytest_rllm.records import Item, RequestRecord
from pytest_rllm.workloads.arrivals import parse_arrival
from pytest_rllm.workloads.driver import drive

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def run(coro, loop: str = "asyncio"):
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


class Recorder:
    """A fake send: logs (job, t_scheduled, t_sent) and holds a slot for `hold(job)` seconds."""

    def __init__(self, hold=lambda job: 0.0) -> None:
        self.hold = hold
        self.calls: list[tuple[int, float, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled: list[int] = []

    async def __call__(self, job: int, t_scheduled: float) -> None:
        self.calls.append((job, t_scheduled, time.perf_counter()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.hold(job))
        except asyncio.CancelledError:
            self.cancelled.append(job)
            raise
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("loop", LOOPS)
def test_every_job_sent_once_at_its_offset_never_early(loop: str) -> None:
    offsets = parse_arrival("gamma:200:0.5").offsets(150, seed=2)
    order = list(range(150))
    random.Random(0).shuffle(order)  # jobs need not come sorted by offset
    shuffled = [offsets[i] for i in order]
    send = Recorder(hold=lambda job: 0.01)

    async def main():
        start = time.perf_counter() + 0.05
        return start, await drive(order, shuffled, send, run_timeout=30, start_at=start)

    start, result = run(main(), loop)
    jobs = [job for job, _, _ in send.calls]
    assert sorted(jobs) == list(range(150))
    assert jobs == sorted(jobs, key=lambda j: offsets[j])  # sent in offset order
    assert result.started == [order.index(j) for j in jobs] and not result.not_sent and not result.timed_out
    assert result.finished == 150
    for job, t_scheduled, t_sent in send.calls:
        assert t_scheduled == start + offsets[job]  # exactly: no cap, no shift
        assert t_sent >= t_scheduled  # the spin-wait never sends early
    lags = np.array([t_sent - t_sched for _, t_sched, t_sent in send.calls])
    # Typically well under 1 ms; 5 ms median only fails if the driver is broken.
    assert np.median(lags) < 0.005


def test_ties_keep_list_order() -> None:
    send = Recorder()
    run(drive([5, 3, 9, 1], [0.0, 0.0, 0.01, 0.0], send, run_timeout=10))
    assert [job for job, _, _ in send.calls] == [5, 3, 1, 9]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("cap", [1, 3, 8])
def test_concurrency_cap_is_never_exceeded(loop: str, cap: int) -> None:
    rng = random.Random(cap)
    holds = {i: rng.uniform(0.0, 0.03) for i in range(60)}
    send = Recorder(hold=holds.__getitem__)
    result = run(drive(list(range(60)), parse_arrival("poisson:400").offsets(60, 1), send,
                       max_concurrency=cap, run_timeout=30), loop)
    assert len(send.calls) == 60
    assert send.max_in_flight <= cap and result.max_in_flight <= cap
    # The cap is reached (400/s against up to 30 ms each), so it was really exercised.
    assert send.max_in_flight == cap


def test_closed_loop_keeps_n_in_flight() -> None:
    """concurrency:N: all due at 0, a new one as soon as one finishes."""
    send = Recorder(hold=lambda job: 0.02)
    spec = parse_arrival("concurrency:4")
    t0 = time.perf_counter()
    result = run(drive(list(range(20)), spec.offsets(20), send, max_concurrency=spec.cap(None), run_timeout=30))
    elapsed = time.perf_counter() - t0
    assert send.max_in_flight == 4 and len(send.calls) == 20
    # Each wave of 4 ends together and the next 4 go together: each wave's
    # release slid the schedule by about one 20 ms hold (4 waves after the first).
    assert result.capped >= 4
    assert 0.07 < result.cap_delay < 0.5
    # 20 jobs of 20 ms, 4 at a time: 5 waves, about 100 ms.
    assert 0.095 < elapsed < 1.0


def test_run_timeout_cancels_in_flight_and_lists_unsent() -> None:
    send = Recorder(hold=lambda job: 10.0)
    offsets = [0.0, 0.0, 0.05, 5.0, 6.0]
    t0 = time.perf_counter()
    result = run(drive(list(range(5)), offsets, send, run_timeout=0.3))
    elapsed = time.perf_counter() - t0
    assert result.timed_out
    assert elapsed < 2.0
    assert result.cancelled == [0, 1, 2] and sorted(send.cancelled) == [0, 1, 2]
    assert result.not_sent == [3, 4]
    assert result.finished == 0


def test_finishes_early_when_all_done() -> None:
    send = Recorder(hold=lambda job: 0.01)
    t0 = time.perf_counter()
    result = run(drive([0, 1], [0.0, 0.02], send, run_timeout=60))
    assert not result.timed_out and time.perf_counter() - t0 < 1.0


def test_send_that_raises_stops_the_run_and_reraises() -> None:
    async def send(job: int, t_scheduled: float) -> None:
        if job == 2:
            raise RuntimeError("bug in send")
        await asyncio.sleep(10)

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="bug in send"):
        run(drive(list(range(6)), [0.0, 0.0, 0.01, 5, 6, 7], send, run_timeout=60))
    assert time.perf_counter() - t0 < 2.0


def test_bad_arguments() -> None:
    send = Recorder()
    with pytest.raises(ValueError, match="2 jobs but 1 offsets"):
        run(drive([1, 2], [0.0], send))
    with pytest.raises(ValueError, match="max_concurrency"):
        run(drive([1], [0.0], send, max_concurrency=0))
    result = run(drive([], [], send, run_timeout=1))
    assert result.started == [] and not result.timed_out


# --------------------------------------------------------------------------- mock server


@pytest.mark.parametrize("loop", LOOPS)
def test_drive_the_mock_server_with_the_minimal_client(loop: str) -> None:
    from arrival_fidelity import minimal_sender
    from mock_server import MockConfig, serve

    config = MockConfig(ttft=0.02, itl=0.005, reasoning_tokens=3, answer_tokens=2)
    records = [RequestRecord(f"r{i}", "d", 1.0, "42", "exact") for i in range(40)]

    async def main():
        async with serve(config) as url, minimal_sender(url) as send:
            return await drive(records, parse_arrival("poisson:100").offsets(40, 5), send, run_timeout=30)

    result = run(main(), loop)
    assert result.finished == 40
    assert all(r.ok for r in records), [r.error for r in records if r.error]
    assert all(r.output_tokens == 5 for r in records)  # 3 reasoning + 2 answer chunks
    # The mock's known TTFT (20 ms) is a floor for what the client sees; uvloop's
    # timers have millisecond granularity and may fire up to 1 ms early.
    assert min(r.t_first_token - r.t_sent for r in records) >= 0.019
    assert all(r.t_sent >= r.t_scheduled for r in records)


def test_mock_server_streams_like_vllm() -> None:
    """Role, reasoning, content, finish_reason, usage with choices [], [DONE]."""
    import json

    import aiohttp
    from mock_server import MockConfig, serve

    async def main():
        async with serve(MockConfig(ttft=0.0, itl=0.0, reasoning_tokens=2, answer_tokens=2)) as url:
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/health") as resp:
                    assert resp.status == 200
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                        "stream_options": {"include_usage": True}}
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    lines = [line.decode().strip() async for line in resp.content if line.strip()]
                async with session.get(url + "/metrics") as resp:
                    metrics = await resp.text()
        return lines, metrics

    lines, metrics = run(main())
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [list(d) for d in deltas[1:5]] == [["reasoning"], ["reasoning"], ["content"], ["content"]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert "Answer: 42" in "".join(d.get("content", "") for d in deltas)
    assert 'vllm:generation_tokens_total{model_name="mock"} 4' in metrics


def test_drive_the_mock_server_with_the_harness_client() -> None:
    """The send is pluggable: the harness's own ChatClient, with known TTFT and TTFVT."""
    client = pytest.importorskip("pytest_rllm.client")
    from mock_server import MockConfig, serve

    config = MockConfig(ttft=0.03, itl=0.01, reasoning_tokens=4, answer_tokens=2)
    item = Item("t/0", "addition", 1.0, "Compute 40 + 2.", "42", "exact", "t")
    options = client.SamplingOptions(max_tokens=64, temperature=0.0, top_p=1.0, request_timeout=30)
    records = [RequestRecord.for_item(item) for _ in range(10)]

    async def main():
        async with serve(config) as url, client.ChatClient(url, "mock", options, split_thinking=False) as chat:

            async def send(record: RequestRecord, t_scheduled: float) -> None:
                record.t_scheduled = t_scheduled
                await chat.send(item, record)

            return await drive(records, parse_arrival("gamma:50:1").offsets(10, 0), send, run_timeout=30)

    run(main())
    for r in records:
        assert r.ok, r.error
        assert r.ttft >= 0.03  # first reasoning token
        assert r.ttfvt >= 0.03 + 4 * 0.01  # first answer token comes after the 4 reasoning tokens
        assert "Answer: 42" in r.answer_text and r.reasoning_text


# --------------------------------------------------------------------------- spin lead, fidelity metric


def test_spin_lead_adapts_to_oversleep_within_bounds() -> None:
    from pytest_rllm.workloads import driver

    lead = driver._Lead(None)
    assert lead.value == driver.INITIAL_SPIN
    for _ in range(64):
        lead.observe(0.0004)
    assert lead.value == pytest.approx(0.0004 + driver.SPIN_MARGIN)
    for _ in range(64):
        lead.observe(0.05)  # a preempted host: capped, not chased
    assert lead.value == driver.MAX_SPIN
    for _ in range(64):
        lead.observe(0.0)
    assert lead.value == driver.MIN_SPIN
    fixed = driver._Lead(0.001)
    for _ in range(64):
        fixed.observe(0.05)
    assert fixed.value == 0.001


def test_fixed_spin_is_reported_and_negative_rejected() -> None:
    send = Recorder()
    assert run(drive([1], [0.0], send, spin=0.0007)).spin == 0.0007
    with pytest.raises(ValueError, match="spin"):
        run(drive([1], [0.0], send, spin=-1))


def test_ks_above_a_floor() -> None:
    from arrival_fidelity import ks_above
    from scipy import stats

    gaps = np.random.default_rng(0).gamma(0.25, 0.02, 5000)
    cdf = stats.gamma(a=0.25, scale=0.02).cdf
    # With no floor it is the ordinary KS statistic.
    assert ks_above(gaps, cdf, 0.0) == pytest.approx(stats.kstest(gaps, cdf).statistic)
    # Gaps that cannot go below 0.2 ms: a huge raw KS, a small one above 1 ms.
    floored = np.maximum(gaps, 2e-4)
    assert stats.kstest(floored, cdf).statistic > 0.3
    assert ks_above(floored, cdf, 1e-3) < 0.03
