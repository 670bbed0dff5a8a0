"""Real vLLM (the CPU build here) behind the harness: measurements agree with the engine's counters.

These start real engines with a small model (the embedded pocket model when it is
shipped), so they are marked `engine`. One server start is shared by the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rllm.session import RllmSession, RunUnavailable
from pytest_rllm.settings import RllmSettings
from pytest_rllm.telemetry.prometheus import histogram_totals

pytestmark = pytest.mark.engine


def make_session(model: str, tmp_path: Path, **options: str) -> RllmSession:
    raw = {"model": model, "num_prompts": "12", "max_tokens": "160", "seed": "0", "startup_timeout": "300", **options}
    return RllmSession(RllmSettings.from_values(raw), log_dir=tmp_path)


@pytest.fixture(scope="module")
def server_run(engine_model, tmp_path_factory):
    # The server's histograms are compared with one run's records: no warm-up requests in between.
    session = make_session(engine_model, tmp_path_factory.mktemp("logs"), warm_up="0")
    try:
        before = None
        engine = session._engine_for("baseline")
        before = engine.metrics_text()
        result = session.run("baseline", "main")
        after = engine.metrics_text()
        yield session, result, before, after
    finally:
        session.close()


def test_client_token_counts_equal_the_engine_counter(server_run):
    _, result, _, _ = server_run
    assert all(r.ok for r in result.records), [r.error for r in result.records if not r.ok]
    s = result.summary()
    assert s["output_tokens_total"] == s["engine_generation_tokens"] > 0
    assert sum(r.prompt_tokens for r in result.records) == s["engine_prompt_tokens"]


def test_client_ttft_is_at_least_the_servers(server_run):
    _, result, before, after = server_run
    total0, count0 = histogram_totals(before)["vllm:time_to_first_token_seconds"]
    total1, count1 = histogram_totals(after)["vllm:time_to_first_token_seconds"]
    assert count1 - count0 == len(result.records)
    server_mean = (total1 - total0) / (count1 - count0)
    client_mean = result.summary()["ttft_mean"]
    # The client sees the server's TTFT plus HTTP and queueing on our side, never less.
    assert client_mean >= server_mean * 0.98


def test_every_record_is_timed_in_order(server_run):
    _, result, _, _ = server_run
    for r in result.records:
        assert r.t_scheduled <= r.t_sent <= r.t_first_token <= r.t_done
        assert r.token_times == sorted(r.token_times) and r.token_times[0] == r.t_first_token
        if r.t_first_visible is not None:
            assert r.t_first_token <= r.t_first_visible <= r.t_done


def test_kv_cache_usage_is_sampled_during_the_run(server_run):
    _, result, _, _ = server_run
    s = result.summary()
    assert len(result.timelines["kv_cache_usage"]) >= 2
    assert s["kv_cache_usage_peak"] > 0 and s["num_requests_running_peak"] >= 1


def test_server_metrics_filter_returns_the_read_series_at_a_fraction_of_the_size(server_run):
    from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, parse_metrics

    session, _, _, _ = server_run
    engine = session._engine_for("baseline")
    full, filtered = engine.metrics_text(), engine.metrics_text(SAMPLE_NAMES)
    assert engine._scraper.filtering is True  # vLLM's /metrics honours name[]
    assert set(parse_metrics(filtered)) == set(parse_metrics(full))
    assert "vllm:cache_config_info{" in filtered
    assert len(filtered) * 10 < len(full)  # no histograms: measured 62 KB -> ~2 KB


def test_trained_model_separates_reasoning_from_answer(server_run):
    session, result, _, _ = server_run
    from pytest_rllm.pocket import MODEL_DIR

    if Path(session.model) != Path(MODEL_DIR):
        pytest.skip("the pocket model is not shipped yet; a random model writes no answers")
    answered = [r for r in result.records if r.finish_reason == "stop"]
    assert answered and all(r.reasoning_text.strip() for r in answered)
    assert sum(r.answer_text.strip().startswith("Answer:") for r in answered) >= len(answered) * 0.8
    assert all("</think>" not in r.answer_text and "</think>" not in r.reasoning_text for r in answered)


def test_in_process_engines_start_one_after_another_and_agree_with_counters(engine_model, tmp_path):
    # spec-ngram first: its proposer loads numba/llvmlite, after which vLLM 0.32's
    # kernel scan crashed every later in-process start (inprocess._guard_llvmlite_for_kernel_scan).
    session = make_session(engine_model, tmp_path, engine="inprocess", optimizations="baseline,spec-ngram,kv-fp8-e4m3")
    try:
        drafted = session.run("spec-ngram", "main")
        assert drafted.records and all(r.error is None for r in drafted.records)
        result = session.run("baseline", "main")
        assert all(r.ok for r in result.records)
        s = result.summary()
        assert s["output_tokens_total"] == s["engine_generation_tokens"] > 0
        assert all(r.ttft is not None and r.ttft > 0 for r in result.records)
        flags = Path("/proc/cpuinfo").read_text()
        if " avx512f " in flags or " amx_tile " in flags:
            return  # this CPU can run the FP8 KV cache; nothing to skip here
        with pytest.raises(RunUnavailable, match="FP8 KV cache on CPU requires x86 with AVX-512 or AMX"):
            session.run("kv-fp8-e4m3", "main")
    finally:
        session.close()


def test_in_process_core_token_counts_agree_with_vllms_delta_outputs(engine_model, tmp_path, monkeypatch):
    """The engine-core hook (FINAL_ONLY requests) reads what per-step DELTA outputs would have streamed.

    At temperature 0 the two runs generate the same tokens; without speculative
    decoding every step adds one token per request, so the first answer
    token's position in the stream does not depend on how the requests were
    batched into steps.
    """
    from functools import partial

    from pytest_rllm.engines import inprocess

    runs = {}
    for source in ("engine-core", "delta-outputs"):
        if source == "delta-outputs":
            monkeypatch.setattr(inprocess, "InProcessEngine", partial(inprocess.InProcessEngine, core_token_counts=False))
        session = make_session(engine_model, tmp_path / source, engine="inprocess", temperature="0")
        try:
            result = session.run("baseline", "main")
            assert result.engine["token_source"] == source  # the installed vLLM has the hook
            s = result.summary()
            assert s["output_tokens_total"] == s["engine_generation_tokens"] > 0
            runs[source] = result.records
        finally:
            session.close()
    core, delta = runs["engine-core"], runs["delta-outputs"]
    assert [r.item_id for r in core] == [r.item_id for r in delta]
    for a, b in zip(core, delta):
        assert a.ok and b.ok, (a.error, b.error)
        assert (a.output_tokens, a.finish_reason, a.reasoning_text, a.answer_text) == (
            b.output_tokens, b.finish_reason, b.reasoning_text, b.answer_text)
        assert len(a.token_times) == len(b.token_times) == a.output_tokens
        assert a.token_times[0] == a.t_first_token and a.token_times[-1] == a.t_done
        position = [r.token_times.index(r.t_first_visible) if r.t_first_visible is not None else None for r in (a, b)]
        assert position[0] == position[1]
    assert any(r.t_first_visible is not None for r in core)
