"""The fixed names options accept: optimization presets, SLO metrics, update modes, finding thresholds.

The lowest floor of the settings: parsers check values against these, and the
engines, the session and the finding checks read them, so they import nothing.
"""

from __future__ import annotations

# The embedded default model (see pytest_rllm/pocket). Resolved lazily to a path.
EMBEDDED_MODEL = "pocket"

PRESETS = (
    "baseline",
    "prefix-caching-on",
    "prefix-caching-off",
    "spec-ngram",
    "spec-draft",
    "kv-fp8-e4m3",
    "kv-fp8-e5m2",
    "quant-fp8",
    "quant-int8",
    "quant-awq",
    "quant-gptq",
)
QUANTIZED_CHECKPOINT_METHODS = ("awq", "gptq")
SLO_METRICS = ("ttft", "ttfvt", "tpot", "itl", "e2e")
UPDATE_MODES = ("none", "changed", "all")
REFERENCE = "reference"  # the plain-LLM reference configuration (--rllm-reference-model)

CANDIDATE_ENGINES = ("auto", "both", "one")  # --rllm-candidate-engines
START_AHEAD = ("auto", "on", "off")  # --rllm-start-ahead
DTYPES = ("auto", "float32", "bfloat16", "float16")  # --rllm-dtype

# Finding thresholds: name -> (default, meaning). Accuracy thresholds are in percentage points.
# Kept beside the options so --rllm-threshold names are checked before anything runs.
THRESHOLDS: dict[str, tuple[float, str]] = {
    "accuracy_points": (10.0, "an optimization may lose at most this many accuracy points against baseline (paired, 95%)"),
    # 0: "significantly better" (the study's claim); a margin on top is a policy a user can set.
    "reasoning_gain_points": (0.0, "with thinking, accuracy beats the plain (no-thinking) reference: the paired 95% interval lies above this many points"),
    "kv_area_ratio": (2.0, "KV-cache memory-time (usage x seconds) of the reasoning run over the plain reference run, at least"),
    "kv_cv": (0.3, "coefficient of variation of KV-cache usage during the reasoning run, at least"),
    "makespan_over_median": (1.2, "batch makespan over the median request's E2E, at least (stragglers dominate)"),
    "length_tail_ratio": (1.5, "output length p99 over p50, at least"),
    "spearman_p": (0.01, "p-value of the Spearman correlation between difficulty and output length / E2E, at most"),
    "spec_e2e_ratio": (1.0, "speculative decoding's E2E p50 over baseline's, at most"),
    "spec_acceptance_self_draft": (0.9, "acceptance rate when the model drafts for itself, at least"),
    "prefix_hit_rate": (0.0, "prefix-cache hit rate with caching on, above"),
    # 0.9, not 1.0: one run's throughput moves a few percent by itself.
    "slowdown_ratio": (0.9, "an optimization's output throughput over baseline's below this is flagged as slower"),
    # Candidate engine (suites/test_candidate_engine.py): each is the smallest change that matters;
    # the 95% interval of the paired effect carries the noise (pytest_rllm/candidate.py).
    "candidate_throughput_pct": (10.0, "candidate engine: output throughput within this % of the reference's (ratio of interleaved trials, 95%) is the same; entirely below, regressed"),
    "candidate_latency_pct": (10.0, "candidate engine: TTFVT and E2E p50/p99 within this % of the reference's (95%) are the same; entirely above, regressed"),
    "candidate_kv_capacity_pct": (0.0, "candidate engine: a KV capacity (tokens) smaller than the reference's by more than this % is regressed"),
    "candidate_failed": (0.0, "candidate engine: failed requests it may add over the reference's (out of the same requests)"),
    "candidate_truncated_points": (2.0, "candidate engine: percentage points of requests cut at max_tokens it may add (paired per request, 95%)"),
}
