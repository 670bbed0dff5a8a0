"""Load-generator ceiling and timing accuracy: our harness against vLLM's benchmark client, on one mock.

    python benchmarks/load_ceiling.py            # ~3 min
    python benchmarks/load_ceiling.py --quick    # ~1 min

Both tools drive the same mock OpenAI server (benchmarks/mock_server.py, known
TTFT and inter-token delay, the role chunk sent with the first token as vLLM
does), one after the other in this process: vLLM's on asyncio's default loop, ours
on the harness's loop (uvloop when installed; --loop to choose).

1. Ceiling: for each request rate (Poisson, b=1), each tool's achieved rate
   and inter-arrival CV, from its own client-side send stamps (the
   perf_counter() each takes just before posting), against the schedule that
   tool drew. A rate passes when both are within 5%; the ceiling is the
   highest rate up to which every rate passed.
2. Send lag (sent - scheduled) p50/p99 at 200 req/s for b=1 and b=0.25. The
   peer's schedule is rebuilt exactly from its own gamma draws and start time
   (see _common.PeerSchedule).
3. TTFT error: each measured TTFT minus the TTFT the mock really served that
   request (the mock's own stamp, from the request's arrival to the write of
   its first token; matched through the request number the mock appends to
   each answer), mean and p99, in the 200 req/s b=1 case. Against the
   configured TTFT as well, which adds the mock's own timer overshoot.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from pytest_rllm.client import ChatClient, SamplingOptions, new_event_loop  # noqa: E402
from pytest_rllm.records import Item, RequestRecord  # noqa: E402
from pytest_rllm.workloads.arrivals import parse_arrival  # noqa: E402
from pytest_rllm.workloads.driver import drive  # noqa: E402

PROMPT = "Compute 17 + 25. Think step by step, then give the answer."
TOLERANCE = 0.05


def _served(url: str, ttfts: list[float], texts: list[str]) -> tuple[list[float], list[float]]:
    """(measured TTFT, the TTFT the mock really served) for each answer carrying the mock's request tag."""
    served = C.mock_served_ttft(url)
    pairs = [(t, served.get(C.mock_request_number(text) or -1)) for t, text in zip(ttfts, texts)]
    pairs = [(t, s) for t, s in pairs if s is not None]
    return [t for t, _ in pairs], [s for _, s in pairs]


def _stats(sent: list[float], scheduled: list[float], drawn: list[float], ttfts: list[float], true_ttft: float,
           errors: int, matched: tuple[list[float], list[float]]) -> dict[str, Any]:
    import numpy as np

    order = np.argsort(sent)
    times = np.asarray(sent)[order]
    gaps = np.diff(times)
    drawn_gaps = np.diff(np.asarray(drawn))
    n = len(drawn)
    lags = np.asarray(sent) - np.asarray(scheduled)
    err = np.asarray(ttfts) - true_ttft
    measured, served = matched
    served_err = np.asarray(measured) - np.asarray(served)
    out = {
        "n": n,
        "errors": errors,
        "drawn_rate": (n - 1) / (drawn[-1] - drawn[0]) if drawn[-1] > drawn[0] else math.nan,
        "achieved_rate": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else math.nan,
        "drawn_cv": C.cv(drawn_gaps),
        "achieved_cv": C.cv(gaps),
        "lag_p50_ms": C.pct(lags, 50) * 1e3,
        "lag_p99_ms": C.pct(lags, 99) * 1e3,
        # Against the configured TTFT: includes the mock's own timer overshoot.
        "cfg_err_mean_ms": float(err.mean()) * 1e3 if len(err) else math.nan,
        "cfg_err_p99_ms": C.pct(err, 99) * 1e3,
        # Against the TTFT the mock really served (its stamp, from the request's
        # arrival to its first token's write): the client's own error.
        "ttft_err_mean_ms": float(served_err.mean()) * 1e3 if len(served_err) else math.nan,
        "ttft_err_p99_ms": C.pct(served_err, 99) * 1e3,
        "served_mean_ms": float(np.mean(served)) * 1e3 if len(served) else math.nan,
        "matched": len(served),
    }
    out["rate_ok"] = abs(out["achieved_rate"] / out["drawn_rate"] - 1) <= TOLERANCE
    out["cv_ok"] = abs(out["achieved_cv"] / out["drawn_cv"] - 1) <= TOLERANCE
    out["ok"] = out["rate_ok"] and out["cv_ok"] and errors == 0
    return out


def run_ours(url: str, rate: float, b: float, n: int, seed: int, true_ttft: float, loop_kind: str) -> dict[str, Any]:
    """The harness's own path (runner.Runner._drive): ChatClient + drive on the harness's event loop."""
    item = Item("bench/0", "arithmetic", 1.0, PROMPT, "42", "exact", "bench")
    options = SamplingOptions(max_tokens=64, temperature=0.6, top_p=0.95, request_timeout=60.0)
    records = [RequestRecord.for_item(item) for _ in range(n)]
    offsets = parse_arrival(f"gamma:{rate:g}:{b:g}").offsets(n, seed)

    async def main() -> None:
        # split_thinking=False: our servers run with a reasoning parser, as the mock does.
        async with ChatClient(url, "mock", options, split_thinking=False) as client:

            async def send(index: int, t_scheduled: float) -> None:
                record = records[index]
                record.t_scheduled = t_scheduled
                await client.send(item, record)

            await drive(list(range(n)), offsets, send, run_timeout=n / rate + 60)

    loop = new_event_loop(loop_kind)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    ok = [r for r in records if r.ok]
    sent = [r for r in records if r.t_sent is not None]
    timed = [r for r in ok if r.ttft is not None]
    return _stats([r.t_sent for r in sent], [r.t_scheduled for r in sent], offsets,
                  [r.ttft for r in timed], true_ttft, n - len(ok),
                  _served(url, [r.ttft for r in timed], [r.answer_text for r in timed]))


def run_peer(url: str, rate: float, b: float, n: int, seed: int, true_ttft: float, dataset: str, tokenizer: str) -> dict[str, Any]:
    argv = C.vllm_bench_args(url=url, model="mock", tokenizer=tokenizer, dataset=dataset, num_prompts=n,
                             output_len=64, rate=rate, burstiness=b, seed=seed, temperature=0.6, top_p=0.95)
    with C.record_peer_schedule() as schedule:
        result = C.run_vllm_bench(argv)
    delays = schedule.offsets(n, rate)
    start = schedule.start_perf()
    starts = list(result["start_times"])
    scheduled = [start + d for d in delays] if start is not None else [math.nan] * n
    errors = sum(1 for e in result.get("errors", []) if e)
    fine = [(t, text) for t, text, e in zip(result["ttfts"], result["generated_texts"], result.get("errors", [""] * n))
            if not e]
    ttfts = [t for t, _ in fine]
    return _stats(starts, scheduled, delays, ttfts, true_ttft, errors, _served(url, ttfts, [x for _, x in fine]))


def fmt_row(tool: str, rate: float, b: float, s: dict[str, Any]) -> str:
    return (f"{tool:>5} {rate:>6g}/s b={b:<4g} rate {s['achieved_rate']:8.1f} / drawn {s['drawn_rate']:8.1f} "
            f"({s['achieved_rate'] / s['drawn_rate']:.3f}x)  CV {s['achieved_cv']:.3f} / drawn {s['drawn_cv']:.3f} "
            f"({s['achieved_cv'] / s['drawn_cv']:.3f}x)  lag p50 {s['lag_p50_ms']:6.2f} p99 {s['lag_p99_ms']:6.2f} ms  "
            f"TTFT err mean {s['ttft_err_mean_ms']:+.2f} p99 {s['ttft_err_p99_ms']:+.2f} ms "
            f"(vs configured {s['cfg_err_mean_ms']:+.2f} / {s['cfg_err_p99_ms']:+.2f})  errors {s['errors']}  "
            f"{'PASS' if s['ok'] else 'fail'}")


def ceiling(rows: list[tuple[float, dict[str, Any]]]) -> float:
    best = 0.0
    for rate, s in sorted(rows, key=lambda x: x[0]):
        if not s["ok"]:
            break
        best = rate
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,400,800,1200,1600,2400", help="ceiling ladder, req/s")
    parser.add_argument("--n", type=int, default=1500, help="requests per ceiling case")
    parser.add_argument("--lag-n", type=int, default=2000, help="requests per 200 req/s case")
    parser.add_argument("--ttft", type=float, default=0.005, help="the mock's TTFT, seconds")
    parser.add_argument("--itl", type=float, default=0.002, help="the mock's inter-token delay, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer rates and requests (~1 min)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="our event loop (auto: the harness's choice, uvloop when installed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.n, args.lag_n = "200,800,1600", 600, 800
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    C.engine_env()
    C.header("load-generator ceiling and timing accuracy (ours vs vLLM's benchmark client, same mock)")
    print(f"mock: TTFT {args.ttft * 1e3:g} ms, inter-token {args.itl * 1e3:g} ms, 4 reasoning + 2 answer tokens; "
          f"role chunk with the first token (as vLLM)", flush=True)
    probe = new_event_loop(args.loop)
    print(f"our event loop: {type(probe).__module__}.{type(probe).__name__} (--loop {args.loop}); "
          f"vLLM's client: asyncio's default", flush=True)
    probe.close()
    tokenizer = C.model_dir()
    importlib.import_module("vllm.benchmarks.serve")  # import vLLM once, outside every timed case

    tmp = tempfile.mkdtemp(prefix="rllm-ceiling-")
    n_max = max(args.n, args.lag_n)
    dataset = C.write_prompts([PROMPT] * n_max, tmp)
    ours_rows: list[tuple[float, dict[str, Any]]] = []
    peer_rows: list[tuple[float, dict[str, Any]]] = []
    lag: dict[tuple[str, float], dict[str, Any]] = {}
    with C.mock_server(ttft=args.ttft, itl=args.itl, reasoning_tokens=4, answer_tokens=2, tag_answers=True) as url:
        print("-- ceiling (b=1): achieved vs drawn, client-side send stamps", flush=True)
        for rate in rates:
            # Alternate which tool goes first, so neither always meets a warmer host.
            pair = [("ours", lambda: run_ours(url, rate, 1.0, args.n, args.seed, args.ttft, args.loop)),
                    ("vllm", lambda: run_peer(url, rate, 1.0, args.n, args.seed, args.ttft, dataset, tokenizer))]
            if len(ours_rows) % 2:
                pair.reverse()
            for tool, fn in pair:
                s = fn()
                (ours_rows if tool == "ours" else peer_rows).append((rate, s))
                print(fmt_row(tool, rate, 1.0, s), flush=True)
        print("-- send lag and TTFT accuracy at 200 req/s", flush=True)
        for b in (1.0, 0.25):
            for tool in ("ours", "vllm"):
                if tool == "ours":
                    s = run_ours(url, 200.0, b, args.lag_n, args.seed, args.ttft, args.loop)
                else:
                    s = run_peer(url, 200.0, b, args.lag_n, args.seed, args.ttft, dataset, tokenizer)
                lag[(tool, b)] = s
                print(fmt_row(tool, 200.0, b, s), flush=True)
    ours_ceiling, peer_ceiling = ceiling(ours_rows), ceiling(peer_rows)
    print(f"at end: {C.load_average()}")
    print("== summary                         ours      vLLM bench   goal")
    print(f"ceiling (rate and CV within 5%)  {ours_ceiling:>6g}/s    {peer_ceiling:>6g}/s     >= 800/s"
          f"   (highest rate tried {max(rates):g}/s)")
    for b in (1.0, 0.25):
        o, p = lag[("ours", b)], lag[("vllm", b)]
        print(f"send lag p99, 200/s, b={b:<4g}      {o['lag_p99_ms']:6.2f} ms   {p['lag_p99_ms']:6.2f} ms      < 2 ms")
    o, p = lag[("ours", 1.0)], lag[("vllm", 1.0)]
    print(f"TTFT error mean, vs served        {o['ttft_err_mean_ms']:+6.2f} ms   {p['ttft_err_mean_ms']:+6.2f} ms      < 1 ms")
    print(f"TTFT error p99, vs served         {o['ttft_err_p99_ms']:+6.2f} ms   {p['ttft_err_p99_ms']:+6.2f} ms      < 5 ms")
    print(f"TTFT error mean/p99, vs configured {args.ttft * 1e3:g} ms: ours {o['cfg_err_mean_ms']:+.2f} / {o['cfg_err_p99_ms']:+.2f} ms, "
          f"vLLM {p['cfg_err_mean_ms']:+.2f} / {p['cfg_err_p99_ms']:+.2f} ms (the mock served {o['served_mean_ms']:.2f} ms "
          f"on average: its timer overshoot is in this line, not in the two above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
