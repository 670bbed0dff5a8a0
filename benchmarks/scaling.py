"""Scaling: the harness's own CPU time and memory as a run grows (100, 1,000, 10,000 requests).

    python benchmarks/scaling.py            # ~2 min
    python benchmarks/scaling.py --quick    # 100 and 1,000 only

Against the mock server (benchmarks/mock_server.py, in its own process, so its
CPU is not counted), through the harness's own path: ChatClient + drive, as
runner.Runner._drive runs them, closed loop at --concurrency in flight; then the
analysis (RunResult.summary() and to_dict(), what the reports call).

Per size it prints, per request:
- client CPU (this process's CPU time during the run / requests), in µs;
- analysis CPU (summary + to_dict), in µs;
- retained memory: bytes still allocated after the run that the records hold
  (tracemalloc, in a second pass of the same size, so its cost stays out of the
  CPU figure), and the RSS growth of the first pass.
Flat per-request figures mean the harness costs O(n).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from pytest_rllm.client import ChatClient, SamplingOptions, new_event_loop  # noqa: E402
from pytest_rllm.records import Item, RequestRecord  # noqa: E402
from pytest_rllm.results import RunResult  # noqa: E402
from pytest_rllm.workloads.arrivals import parse_arrival  # noqa: E402
from pytest_rllm.workloads.driver import drive  # noqa: E402

ITEM = Item("bench/0", "arithmetic", 1.0, "Compute 17 + 25. Think step by step, then give the answer.", "42", "math", "bench")


def one_run(url: str, n: int, concurrency: int) -> tuple[list[RequestRecord], float, float]:
    """(records, client CPU seconds, wall seconds)."""
    options = SamplingOptions(max_tokens=64, temperature=0.6, top_p=0.95, request_timeout=120.0)
    records = [RequestRecord.for_item(ITEM) for _ in range(n)]
    spec = parse_arrival(f"concurrency:{concurrency}")
    offsets = spec.offsets(n, 0)

    async def main() -> None:
        async with ChatClient(url, "mock", options, split_thinking=False) as client:

            async def send(index: int, t_scheduled: float) -> None:
                record = records[index]
                record.t_scheduled = t_scheduled
                await client.send(ITEM, record)

            await drive(list(range(n)), offsets, send, max_concurrency=spec.cap(), run_timeout=900)

    loop = new_event_loop()  # the harness's own loop (uvloop where installed)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        loop.run_until_complete(main())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        loop.close()
    failed = sum(1 for r in records if not r.ok)
    if failed:
        raise RuntimeError(f"{failed} of {n} requests failed: {[r.error for r in records if r.error][:3]}")
    return records, cpu, wall


def analysis_cpu(records: list[RequestRecord]) -> float:
    run = RunResult(label="baseline", workload="scaling", records=records, t_start=records[0].t_sent or 0.0,
                    t_end=max(r.t_done or 0.0 for r in records))
    cpu0 = time.process_time()
    run.summary()
    run.to_dict()
    return time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "100,1000"
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    C.header("scaling: harness CPU and memory per request (mock server, closed loop)")
    print(f"mock: TTFT 5 ms, inter-token 1 ms, 8 reasoning + 4 answer tokens (12 SSE token chunks per request); "
          f"concurrency {args.concurrency}", flush=True)
    rows: list[dict[str, Any]] = []
    with C.mock_server(ttft=0.005, itl=0.001, reasoning_tokens=8, answer_tokens=4) as url:
        one_run(url, 200, args.concurrency)  # warm: imports, first connections, allocator pools
        for n in sizes:
            gc.collect()
            rss0 = C.rss_bytes()
            records, cpu, wall = one_run(url, n, args.concurrency)
            rss1 = C.rss_bytes()
            acpu = analysis_cpu(records)
            del records
            gc.collect()
            # Second pass under tracemalloc: what the run leaves allocated (the records).
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            records, _, _ = one_run(url, n, args.concurrency)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            del records
            gc.collect()
            row = {"n": n, "cpu_us": cpu / n * 1e6, "analysis_us": acpu / n * 1e6, "retained_b": retained / n,
                   "rss_b": (rss1 - rss0) / n, "rate": n / wall, "cpu_pct": 100 * cpu / wall}
            rows.append(row)
            print(f"{n:>6} requests: client CPU {row['cpu_us']:7.0f} µs/request ({row['cpu_pct']:.0f}% of a core at "
                  f"{row['rate']:.0f} req/s)  analysis {row['analysis_us']:6.1f} µs/request  retained "
                  f"{row['retained_b']:7.0f} B/request  RSS growth {row['rss_b']:8.0f} B/request  [{C.load_average()}]",
                  flush=True)
    first, last = rows[0], rows[-1]
    print(f"at end: {C.load_average()}")
    print("== summary")
    print(f"client CPU per request {first['n']} -> {last['n']} requests: {first['cpu_us']:.0f} -> {last['cpu_us']:.0f} µs "
          f"({last['cpu_us'] / first['cpu_us']:.2f}x); analysis {first['analysis_us']:.1f} -> {last['analysis_us']:.1f} µs "
          f"({last['analysis_us'] / first['analysis_us']:.2f}x); retained memory {first['retained_b']:.0f} -> "
          f"{last['retained_b']:.0f} B/request ({last['retained_b'] / first['retained_b']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
