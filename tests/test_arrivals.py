"""Arrival processes on plain data: the sampler's statistics, seeding, edge cases, parse errors."""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest
from scipy import stats

from pytest_rllm.workloads.arrivals import ArrivalSpec, parse_arrival, sample_gaps
from pytest_rllm.workloads.driver import drive


def gaps_of(spec: str, n: int = 20001, seed: int = 1) -> np.ndarray:
    return np.diff(parse_arrival(spec).offsets(n, seed))


@pytest.mark.parametrize("rate, b", [(4.0, 0.25), (4.0, 0.5), (200.0, 1.0), (10.0, 2.0), (1.5, 8.0)])
def test_gamma_mean_and_cv_match_vllm_semantics(rate: float, b: float) -> None:
    gaps = gaps_of(f"gamma:{rate}:{b}")
    # 20k draws: the sample mean's relative s.e. is CV/sqrt(n) <= 1.4%, the CV's
    # a little more for small b; 5% and 6% tolerances are several s.e. wide.
    assert np.mean(gaps) == pytest.approx(1.0 / rate, rel=0.05)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0 / math.sqrt(b), rel=0.06)
    # The whole shape, not just two moments: KS against Gamma(b, 1/(rate*b)).
    ks = stats.kstest(gaps, stats.gamma(a=b, scale=1.0 / (rate * b)).cdf)
    assert ks.pvalue > 1e-3


def test_offsets_start_at_zero_and_accumulate_gaps() -> None:
    offsets = parse_arrival("gamma:5:0.5").offsets(50, seed=3)
    assert offsets[0] == 0.0
    assert all(b >= a for a, b in zip(offsets, offsets[1:]))
    np.testing.assert_allclose(np.diff(offsets), sample_gaps(49, 5.0, 0.5, 3))


def test_same_seed_reproduces_exactly_and_other_seeds_differ() -> None:
    spec = parse_arrival("gamma:20:0.5")
    assert spec.offsets(500, seed=7) == spec.offsets(500, seed=7)
    assert spec.offsets(500, seed=7) != spec.offsets(500, seed=8)
    # A longer draw extends the shorter one: adding repeats does not reshuffle the start.
    assert spec.offsets(800, seed=7)[:500] == spec.offsets(500, seed=7)
    # Parsing the same text twice gives an equal, hashable spec (it keys cached runs).
    assert parse_arrival("gamma:20:0.5") == spec and hash(parse_arrival("gamma:20:0.5")) == hash(spec)


@pytest.mark.parametrize("text", ["gamma:8:inf", "gamma:8:INF", "gamma:8:1e400"])
def test_infinite_burstiness_gives_constant_gaps(text: str) -> None:
    gaps = gaps_of(text, n=100)
    np.testing.assert_allclose(gaps, 1.0 / 8.0)


def test_large_burstiness_approaches_constant() -> None:
    assert np.std(gaps_of("gamma:8:10000")) / (1 / 8) < 0.02


def test_b1_and_poisson_are_exponential() -> None:
    for text in ("gamma:50:1", "poisson:50"):
        gaps = gaps_of(text)
        assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.04)
        assert stats.kstest(gaps, stats.expon(scale=1 / 50).cdf).pvalue > 1e-3
    # poisson:R is gamma:R:1, draw for draw.
    assert parse_arrival("poisson:50").offsets(100, 4) == parse_arrival("gamma:50:1").offsets(100, 4)


def test_b_below_one_is_not_exponential() -> None:
    # The check above must be able to fail: b=0.25 is far from exponential.
    gaps = gaps_of("gamma:50:0.25")
    assert stats.kstest(gaps, stats.expon(scale=1 / 50).cdf).pvalue < 1e-6


@pytest.mark.parametrize("text", ["batch", "concurrency:4"])
def test_closed_processes_send_everything_at_zero(text: str) -> None:
    spec = parse_arrival(text)
    assert spec.offsets(5, seed=1) == [0.0] * 5
    assert spec.offsets(0, seed=1) == []


def test_cap_combines_spec_and_option() -> None:
    assert parse_arrival("concurrency:4").cap(None) == 4
    assert parse_arrival("concurrency:4").cap(2) == 2
    assert parse_arrival("poisson:3").cap(None) is None
    assert parse_arrival("poisson:3").cap(6) == 6


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "unknown arrival process"),
        ("uniform:3", "unknown arrival process"),
        ("batch:3", "takes no parameters"),
        ("concurrency", "concurrency:N"),
        ("concurrency:0", "above 0"),
        ("concurrency:two", "whole number"),
        ("poisson", "poisson:RATE"),
        ("poisson:-1", "above 0"),
        ("poisson:abc", "must be a number"),
        ("poisson:inf", "finite"),
        ("gamma:4", "gamma:RATE:BURSTINESS"),
        ("gamma:4:0", "BURSTINESS must be above 0"),
        ("gamma:4:-2", "BURSTINESS must be above 0"),
        ("gamma:0:1", "RATE"),
        ("gamma:4:nan", "must be a number"),
        ("gamma:4:1:9", "gamma:RATE:BURSTINESS"),
        ("trace:", "trace:PATH"),
    ],
)
def test_parse_errors_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        parse_arrival(text)


def test_settings_turn_parse_errors_into_setting_errors() -> None:
    from pytest_rllm.parsers import SettingError
    from pytest_rllm.settings import RllmSettings

    with pytest.raises(SettingError, match="--rllm-arrival.*BURSTINESS"):
        RllmSettings.from_values({"arrival": "gamma:4:0"})
    assert RllmSettings.from_values({"arrival": " gamma:4:0.5 "}).arrival == "gamma:4:0.5"


# --------------------------------------------------------------------------- trace


def write(tmp_path, lines: list[str]) -> str:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_trace_replays_timestamps_from_the_first(tmp_path) -> None:
    path = write(tmp_path, ['{"timestamp": 100.5, "x": 1}', "", '{"timestamp": 101.0}', '{"timestamp": 103}'])
    spec = parse_arrival(f"trace:{path}")
    assert spec.offsets(3, seed=0) == [0.0, 0.5, 2.5]
    # Longer than the trace: replayed one mean gap (1.25 s) after its end.
    assert spec.offsets(5, seed=0) == [0.0, 0.5, 2.5, 3.75, 4.25]
    assert spec.offsets(5, seed=0) == spec.offsets(5, seed=99)


@pytest.mark.parametrize(
    "lines, words",
    [
        (['{"timestamp": 1}', "{not json"], "line 2: not valid JSON"),
        (['{"timestamp": 1}', '{"t": 2}'], "line 2: field 'timestamp' is missing"),
        (['{"timestamp": "soon"}'], "line 1: field 'timestamp' must be a finite number"),
        (['{"timestamp": 5}', '{"timestamp": 4}'], "line 2: field 'timestamp' goes back in time"),
        (["[1, 2]"], "line 1: expected a JSON object"),
        ([""], "no arrivals"),
    ],
)
def test_trace_errors_name_file_line_and_field(tmp_path, lines: list[str], words: str) -> None:
    path = write(tmp_path, lines)
    with pytest.raises(ValueError) as info:
        parse_arrival(f"trace:{path}")
    assert path in str(info.value) and words in str(info.value)


def test_missing_trace_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match=f"{missing}.*cannot be read"):
        parse_arrival(f"trace:{missing}")


def test_single_arrival_trace_cannot_be_replayed(tmp_path) -> None:
    spec = parse_arrival(f"trace:{write(tmp_path, [json.dumps({'timestamp': 3})])}")
    assert spec.offsets(1, 0) == [0.0]
    with pytest.raises(ValueError, match="at least 2 arrivals"):
        spec.offsets(2, 0)


# --------------------------------------------------------------------------- cap + rate rule


def test_cap_with_rate_preserves_gaps_instead_of_bursting() -> None:
    """Cap 4, requests due every 10 ms, each ending on a shared 50 ms step: several
    slots free at the same moment again and again, with a backlog waiting. vLLM's client would then
    send four queued requests at once; the gap-preserving rule releases each at
    least the drawn 10 ms after the one before."""
    offsets = parse_arrival("gamma:100:inf").offsets(24, seed=0)
    scheduled: list[float] = []
    sent: list[float] = []

    t0 = time.perf_counter()

    async def send(job: int, t_scheduled: float) -> None:
        scheduled.append(t_scheduled)
        sent.append(time.perf_counter())
        # Finish on the next 50 ms "step" boundary at least 40 ms on, as a batch
        # of decodes does: requests in flight together finish together.
        steps = math.ceil((sent[-1] - t0 + 0.04) / 0.05)
        await asyncio.sleep(t0 + steps * 0.05 - time.perf_counter())

    async def main():
        return await drive(list(range(24)), offsets, send, max_concurrency=4, run_timeout=30)

    result = asyncio.run(main())
    assert len(sent) == 24 and result.max_in_flight == 4
    # The situation that bursts in vLLM's client really happened: the cap held requests back.
    assert result.capped >= 5 and result.cap_delay > 0.05
    # The rule, exactly: released due times are never closer than the drawn gaps.
    assert np.diff(scheduled).min() >= 0.01 - 1e-9
    # And the actual sends follow it. A preempted send (shared CI cores) can
    # shorten one gap, so allow one; a burst would shorten a gap in every group of 4.
    gaps = np.diff(sent)
    assert np.median(gaps) >= 0.0095
    assert (gaps < 0.003).sum() <= 1


def test_spec_is_a_plain_frozen_value() -> None:
    spec = ArrivalSpec("gamma", rate=2.0, burstiness=0.5, text="gamma:2:0.5")
    with pytest.raises(Exception):
        spec.rate = 3.0  # type: ignore[misc]
    assert spec.is_open_loop and not parse_arrival("batch").is_open_loop
