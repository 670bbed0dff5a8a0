"""Small run dicts, as a saved --rllm-report holds them, for the A/B comparison tests.

Both sides of a comparison are built from the same seed, so they answer the same
items with the same per-item difficulty; `slow` scales every time, `wrong` makes
that many of the first items wrong.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from pytest_rllm.records import RequestRecord
from pytest_rllm.results import RunResult


def run_dict(label: str = "baseline", workload: str = "main", *, n: int = 40, slow: float = 1.0,
             wrong: int = 8, seed: int = 0, trials: int = 0) -> dict[str, Any]:
    """RunResult.to_dict() of a closed batch of `n` graded requests; `trials` adds per-trial summaries."""
    data = run_result(label, workload, n=n, slow=slow, wrong=wrong, seed=seed).to_dict()
    if trials:
        throughput = data["summary"]["output_throughput"]
        noise = np.random.default_rng(seed).normal(1.0, 0.02, size=trials)
        data["trials"] = [{"summary": {"output_throughput": float(throughput * x)}} for x in noise]
    return data


def run_result(label: str = "baseline", workload: str = "main", *, n: int = 40, slow: float = 1.0,
               wrong: int = 8, seed: int = 0, truncated: int = 0, kv_blocks: int = 512) -> RunResult:
    """A RunResult of a closed batch of `n` graded requests (the first `truncated` cut at max_tokens)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        tokens = rng.randint(40, 200)
        ttft = rng.uniform(0.05, 0.3)
        gaps = [rng.uniform(0.004, 0.006) for _ in range(tokens - 1)]
        first_visible = ttft + sum(gaps[: tokens * 3 // 4])
        t_first = ttft * slow
        token_times = [t_first]
        for gap in gaps:
            token_times.append(token_times[-1] + gap * slow)
        records.append(RequestRecord(
            item_id=f"item-{i}", domain="arithmetic", difficulty=float(1 + i % 4), reference=str(i), grader="exact",
            t_scheduled=0.0, t_sent=0.0, t_first_token=t_first, t_first_visible=first_visible * slow,
            t_done=token_times[-1], token_times=token_times, output_tokens=tokens,
            answer_text=str(i + 1 if i < wrong else i), finish_reason="length" if i < truncated else "stop"))
    return RunResult(label, workload, records, t_start=0.0, t_end=max(r.t_done for r in records),
                     engine={"preset": label, "cache_config": {"num_gpu_blocks": str(kv_blocks), "block_size": "32"}})
