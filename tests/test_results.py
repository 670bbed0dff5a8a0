"""RunResult summaries on hand-made records and timelines (pure: no engine)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_rllm.records import RequestRecord
from pytest_rllm.results import RunResult, counter_deltas, distribution, goodput, straggler_stats, timeline_stats
from pytest_rllm.telemetry.prometheus import cache_config, parse_metrics


def rec(i, sent, first, visible, done, tokens, *, times=None, error=None, finish="stop", answer="Answer: 1", ref="1"):
    r = RequestRecord(item_id=f"i{i}", domain="addition", difficulty=1.0, reference=ref, grader="exact")
    r.t_scheduled = sent
    r.t_sent, r.t_first_token, r.t_first_visible, r.t_done = sent, first, visible, done
    r.output_tokens = tokens
    r.token_times = times if times is not None else list(np.linspace(first, done, tokens)) if first else []
    r.error, r.finish_reason, r.answer_text = error, finish, answer
    return r


def test_latency_percentiles_match_numpy():
    records = [rec(i, 0.0, 0.1 * (i + 1), 0.2 * (i + 1), 1.0 + i, 10) for i in range(10)]
    s = RunResult("baseline", "main", records).summary()
    ttft = [0.1 * (i + 1) for i in range(10)]
    assert s["ttft_p50"] == pytest.approx(np.percentile(ttft, 50))
    assert s["ttft_p99"] == pytest.approx(np.percentile(ttft, 99))
    assert s["ttfvt_mean"] == pytest.approx(np.mean([0.2 * (i + 1) for i in range(10)]))
    assert s["e2e_p90"] == pytest.approx(np.percentile([1.0 + i for i in range(10)], 90))
    # TPOT excludes the first token: (done - first) / (tokens - 1).
    assert s["tpot_mean"] == pytest.approx(np.mean([(1.0 + i - 0.1 * (i + 1)) / 9 for i in range(10)]))


def test_throughput_uses_first_send_to_last_finish_and_ignores_failures():
    records = [rec(0, 0.0, 0.1, 0.2, 2.0, 100), rec(1, 1.0, 1.1, 1.2, 4.0, 300)]
    records.append(rec(2, 0.5, None, None, None, 0, error="HTTP 500: boom"))
    s = RunResult("baseline", "main", records).summary()
    assert s["duration"] == pytest.approx(4.0)
    assert s["output_throughput"] == pytest.approx(400 / 4.0)
    assert s["request_throughput"] == pytest.approx(2 / 4.0)
    assert (s["requests"], s["completed"], s["failed"]) == (3, 2, 1)


def test_goodput_counts_requests_within_every_slo():
    records = [rec(0, 0.0, 0.5, 0.6, 2.0, 20), rec(1, 0.0, 3.0, 3.1, 4.0, 20), rec(2, 0.0, 0.1, 5.0, 5.0, 20)]
    out = goodput(records, {"ttft": 1.0, "ttfvt": 2.0}, duration=5.0)
    assert out["goodput"] == pytest.approx(1 / 5.0) and out["goodput_fraction"] == pytest.approx(1 / 3)
    assert goodput(records, {}, 5.0) == {}


def test_straggler_stats_on_a_batch_with_one_long_request():
    # Nine requests finish at 1 s, one at 10 s: the makespan is 10x the median, and
    # for 90% of it fewer than 10% of requests (i.e. < 1) ... one request runs.
    records = [rec(i, 0.0, 0.1, 0.2, 1.0, 10) for i in range(9)] + [rec(9, 0.0, 0.1, 9.0, 10.0, 200)]
    s = straggler_stats(records)
    assert s["makespan"] == pytest.approx(10.0)
    assert s["makespan_over_median_e2e"] == pytest.approx(10.0)
    assert s["tail_share"] == pytest.approx(0.9)
    assert s["output_tokens_p99_over_p50"] == pytest.approx(np.percentile([10] * 9 + [200], 99) / 10)


def test_even_batch_has_no_tail():
    records = [rec(i, 0.0, 0.1, 0.2, 1.0, 10) for i in range(10)]
    s = straggler_stats(records)
    assert s["makespan_over_median_e2e"] == pytest.approx(1.0) and s["tail_share"] == 0.0


def test_timeline_stats_and_window():
    points = [(0.0, 0.1), (1.0, 0.5), (2.0, 0.9), (3.0, 0.5)]
    s = timeline_stats(points, "kv")
    assert s["kv_mean"] == pytest.approx(0.5) and s["kv_peak"] == 0.9 and s["kv_min"] == 0.1
    assert s["kv_cv"] == pytest.approx(np.std([0.1, 0.5, 0.9, 0.5]) / 0.5)
    run = RunResult("b", "main", [rec(0, 1.0, 1.1, 1.2, 2.0, 5)], timelines={"kv_cache_usage": points}, t_start=1.0, t_end=2.0)
    assert run.summary()["kv_cache_usage_peak"] == 0.9  # only samples inside the run count
    assert run.summary()["kv_cache_usage_min"] == 0.5


def test_counter_deltas_give_hit_and_acceptance_rates():
    start = {"generation_tokens": 100.0, "prefix_cache_queries": 10.0, "prefix_cache_hits": 0.0,
             "spec_decode_num_draft_tokens": 0.0, "spec_decode_num_accepted_tokens": 0.0}
    end = {"generation_tokens": 350.0, "prefix_cache_queries": 110.0, "prefix_cache_hits": 40.0,
           "spec_decode_num_draft_tokens": 200.0, "spec_decode_num_accepted_tokens": 150.0}
    d = counter_deltas(start, end)
    assert d["engine_generation_tokens"] == 250.0
    assert d["prefix_cache_hit_rate"] == pytest.approx(0.4)
    assert d["spec_acceptance_rate"] == pytest.approx(0.75)


def test_accuracy_joins_the_summary_with_its_interval():
    records = [rec(i, 0.0, 0.1, 0.2, 1.0, 10, answer="Answer: 1" if i < 8 else "Answer: 7") for i in range(10)]
    s = RunResult("b", "main", records).summary()
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["accuracy_low"] < 0.8 < s["accuracy_high"]


def test_empty_distribution_is_nan_not_zero():
    d = distribution([], "ttft")
    assert all(math.isnan(v) for v in d.values())


def test_to_dict_makes_times_relative_and_json_safe():
    import json

    run = RunResult("b", "main", [rec(0, 101.0, 101.5, 101.6, 103.0, 5)], t_start=100.0, t_end=104.0)
    d = run.to_dict()
    assert d["records"][0]["t_sent"] == 1.0 and d["records"][0]["t_done"] == 3.0
    json.dumps(d, allow_nan=False)


METRICS = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 7.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 3.5
vllm:cache_config_info{block_size="128",cache_dtype="auto",enable_prefix_caching="True"} 1.0
"""


def test_prometheus_text_becomes_named_series():
    values = parse_metrics(METRICS)
    assert values["kv_cache_usage"] == pytest.approx(0.5)  # mean over engines
    assert values["num_requests_running"] == 7.0  # sum over engines
    assert values["generation_tokens"] == 1234.0 and values["prefix_cache_hits"] == 7.0
    assert "time_to_first_token_seconds" not in values
    assert cache_config(METRICS)["cache_dtype"] == "auto"


def test_in_process_metric_names_without_total_parse_the_same():
    assert parse_metrics('vllm:generation_tokens{engine="0"} 5.0\n')["generation_tokens"] == 5.0


FULL_METRICS = (
    'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
    'vllm:generation_tokens_total{engine="0",model_name="m"} 99.0\n'
    'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 12.5\n'
)


def test_scraper_asks_for_the_read_series_only_where_the_server_filters():
    from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, MetricsScraper

    asked: list[str] = []

    def filtering_server(query: str) -> str:
        asked.append(query)
        return FULL_METRICS if not query else "".join(
            line + "\n" for line in FULL_METRICS.splitlines() if f"name%5B%5D={line.split('{')[0].replace(':', '%3A')}" in query
        )

    scraper = MetricsScraper(filtering_server)
    text = scraper.text(SAMPLE_NAMES)
    assert scraper.filtering is True
    assert parse_metrics(text) == {"kv_cache_usage": 0.25, "generation_tokens": 99.0}
    assert "e2e_request_latency" not in text  # the histogram was not asked for
    assert "name%5B%5D=vllm%3Akv_cache_usage_perc" in asked[0] and "vllm%3Ageneration_tokens_total" in asked[0]
    assert scraper.text() == FULL_METRICS and asked[-1] == ""  # everything, when asked for everything


def test_scraper_falls_back_to_everything_when_the_filter_returns_nothing():
    from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, MetricsScraper

    asked: list[str] = []

    def unfilterable_server(query: str) -> str:  # prometheus_client multiprocess mode: a restricted view is empty
        asked.append(query)
        return "" if query else FULL_METRICS

    scraper = MetricsScraper(unfilterable_server)
    assert parse_metrics(scraper.text(SAMPLE_NAMES))["kv_cache_usage"] == 0.25
    assert scraper.filtering is False
    asked.clear()
    assert parse_metrics(scraper.text(SAMPLE_NAMES))["generation_tokens"] == 99.0
    assert asked == [""]  # remembered: no filtered try on every scrape


def test_unreachable_metrics_stay_unknown_and_return_none():
    from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, MetricsScraper

    scraper = MetricsScraper(lambda query: None)
    assert scraper.text(SAMPLE_NAMES) is None
    assert scraper.filtering is None


def test_a_server_that_refuses_the_filtered_path_is_scraped_plainly():
    from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, MetricsScraper

    scraper = MetricsScraper(lambda query: None if query else FULL_METRICS)  # e.g. 404 on /metrics/
    assert parse_metrics(scraper.text(SAMPLE_NAMES))["kv_cache_usage"] == 0.25
    assert scraper.filtering is False


def test_histogram_totals_add_sum_and_count_over_label_sets():
    from pytest_rllm.telemetry.prometheus import histogram_totals

    text = (
        '# TYPE vllm:time_to_first_token_seconds histogram\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1"} 3.0\n'
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5\n'
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 4.0\n'
        'vllm:time_to_first_token_seconds_sum{engine="1",model_name="m"} 0.5\n'
        'vllm:time_to_first_token_seconds_count{engine="1",model_name="m"} 1.0\n'
        'vllm:kv_cache_usage_perc{engine="0"} 0.25\n'
    )
    assert histogram_totals(text) == {"vllm:time_to_first_token_seconds": (2.0, 5.0)}


def test_accuracy_check_skips_where_the_reference_leaves_no_room_for_a_loss():
    import pytest

    from pytest_rllm.checks.finding import accuracy_check

    def run(label, answers):
        return RunResult(label, "shared-prefix", [rec(i, 0.0, 0.1, 0.2, 1.0, 10, answer=a) for i, a in enumerate(answers)])

    wrong = run("prefix-caching-off", ["Answer: 9"] * 40)
    # 0% on the reference: no candidate could lose 10 points, so the check would pass whatever happened.
    with pytest.raises(pytest.skip.Exception, match=r"reference answers 0.0%, so a loss of 10 points cannot occur"):
        accuracy_check(wrong, run("prefix-caching-on", ["Answer: 9"] * 40), 10.0, flag_only=True)
    # A reference that answers: the comparison runs, and a real loss fails it.
    right = run("baseline", ["Answer: 1"] * 40)
    with pytest.raises(pytest.fail.Exception, match="failed"):
        accuracy_check(right, run("quant-int8", ["Answer: 9"] * 40), 10.0, flag_only=False)
    # The reasoning-gain form (0 points: the candidate must be better) is never skipped.
    with pytest.raises(pytest.fail.Exception):
        accuracy_check(wrong, run("thinking", ["Answer: 9"] * 40), -0.0, flag_only=False)


def test_accuracy_check_skips_a_run_too_small_to_judge_and_names_the_fix():
    import pytest

    from pytest_rllm.checks.finding import MIN_PAIRS, accuracy_check

    def run(label, answers):
        return RunResult(label, "main", [rec(i, 0.0, 0.1, 0.2, 1.0, 10, answer=a) for i, a in enumerate(answers)])

    few = MIN_PAIRS - 4
    with pytest.raises(pytest.skip.Exception, match=rf"cannot be judged on {few} paired items .*Raise --rllm-num-prompts"):
        accuracy_check(run("baseline", ["Answer: 1"] * few), run("quant-int8", ["Answer: 1"] * few), 10.0, flag_only=False)
    # Enough pairs to judge: a loss fails; at exactly MIN_PAIRS equal answers are still inconclusive
    # (95% interval +-16 points), which fails, and 60 of them pass.
    with pytest.raises(pytest.fail.Exception, match="is inconclusive"):
        accuracy_check(run("baseline", ["Answer: 1"] * MIN_PAIRS), run("quant-int8", ["Answer: 1"] * MIN_PAIRS), 10.0, flag_only=False)
    accuracy_check(run("baseline", ["Answer: 1"] * 60), run("quant-int8", ["Answer: 1"] * 60), 10.0, flag_only=False)
    with pytest.raises(pytest.fail.Exception, match="failed"):
        accuracy_check(run("baseline", ["Answer: 1"] * MIN_PAIRS), run("quant-int8", ["Answer: 9"] * MIN_PAIRS), 10.0, flag_only=False)


def test_kv_statistics_count_their_samples_and_too_few_are_named():
    from pytest_rllm.checks.finding import MIN_KV_SAMPLES, too_few_kv_samples

    def run_with(samples: int) -> RunResult:
        run = RunResult("baseline", "no-thinking", [], t_start=0.0, t_end=1.0)
        run.timelines = {"kv_cache_usage": [(0.1 * i, 0.2) for i in range(samples)]}
        return run

    assert run_with(MIN_KV_SAMPLES + 4).summary()["kv_cache_usage_samples"] == MIN_KV_SAMPLES + 4
    assert too_few_kv_samples(run_with(MIN_KV_SAMPLES), run_with(9)) is None
    reason = too_few_kv_samples(run_with(9), run_with(MIN_KV_SAMPLES - 1))
    assert reason.startswith(f"baseline/no-thinking caught {MIN_KV_SAMPLES - 1} KV-usage sample(s)") and "--rllm-num-prompts" in reason
    assert "caught 0 KV-usage sample(s)" in too_few_kv_samples(run_with(0))


def batch(last_tokens: int, *, last_done: float = 3.0, trial: int = 0) -> RunResult:
    """A 100-reply batch like the embedded model's: replies of 30-151 tokens done by 1.8 s, then the last one."""
    records = [rec(i, 0.0, 0.3, 0.5 + 0.01 * i, 0.7 + 0.011 * i, 30 + (i * 121) // 98) for i in range(99)]
    records.append(rec(99, 0.0, 0.3, 1.5, last_done, last_tokens))
    return RunResult("baseline", "main", records, trial=trial)


def test_a_chance_long_last_reply_is_named_and_a_normal_batch_is_not():
    from pytest_rllm.checks.finding import lone_reply, one_reply_shaped

    # Measured shapes: the longest reply 151-158 tokens (8 of 11 sessions), or one of 238-439 finishing last.
    assert lone_reply(batch(158, last_done=1.8)) is None
    assert one_reply_shaped(batch(158, last_done=1.8)) is None
    why = lone_reply(batch(439))
    assert why == "one reply (i99, 439 tokens, x3.0 the run's p95 of 146) ran on alone for 41% of the makespan"
    # A long last reply that finished right after the others held nothing open.
    assert lone_reply(batch(439, last_done=1.85)) is None
    shaped = one_reply_shaped(batch(151, last_done=1.8), batch(439))
    assert shaped.startswith("baseline/main: in the run one reply (i99, 439 tokens") and "--rllm-trials=3" in shaped
    # A long reply that finished before others held nothing open.
    early = batch(158, last_done=1.8)
    early.records[5].output_tokens, early.records[5].t_done = 439, 1.0
    assert lone_reply(early) is None
    # Too few replies for a p95 that is not the longest reply itself.
    small = RunResult("baseline", "main", batch(439).records[-10:])
    assert lone_reply(small) is None


def test_trials_take_the_median_batch_shape_and_a_minority_of_long_replies_is_not_named():
    from pytest_rllm.checks.finding import one_reply_shaped
    from pytest_rllm.results import combine_trials

    normal = [batch(151, last_done=1.8, trial=t) for t in (0, 2)]
    combined = combine_trials([normal[0], batch(439, trial=1), normal[1]])
    s = combined.summary()
    assert s["makespan_over_median_e2e"] == pytest.approx(normal[0].summary()["makespan_over_median_e2e"])
    assert s["tail_share"] == pytest.approx(normal[0].summary()["tail_share"])
    assert one_reply_shaped(combined) is None
    mostly = combine_trials([batch(439, trial=0), batch(439, trial=1), normal[1]])
    assert "in 2 of 3 trials one reply" in one_reply_shaped(mostly)
