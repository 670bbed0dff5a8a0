"""Agreement with vLLM's own serving benchmark: same server, same prompts, same arrival schedule.

    python benchmarks/agreement.py           # ~4 min (server start included)
    python benchmarks/agreement.py --quick

One vLLM OpenAI server (the embedded pocket model, reasoning parser qwen3),
started by the harness. vLLM's benchmark client (`vllm.benchmarks.serve`,
openai-chat backend, --skip-chat-template so the server applies the chat
template as it does for our client) runs a Poisson schedule with --seed; its
exact gaps are recorded (see _common.PeerSchedule) and replayed by our
harness as a trace arrival, so both tools send the same prompts at the same
gaps. Temperature 0 on both sides, so both generate the same tokens. Rounds
alternate which tool goes first; the medians of per-round ratios are printed.

Definitions, where they differ (the ratios below are of the figures each tool reports):
- TTFT. vLLM: the first SSE chunk with `choices`, which vLLM's server sends (the
  role chunk) in the same step as the first generated token, so the first
  *reasoning* token. Ours `ttft`: the first chunk carrying reasoning or
  content text: the same token. Ours also has `ttfvt`, the first *answer*
  (visible) token, which vLLM's tool does not measure.
- TPOT. Both (E2E - TTFT) / (output tokens - 1), reasoning tokens included.
  vLLM's E2E ends at the last chunk with `choices` (the finish chunk); ours
  ends at `data: [DONE]` (after the usage chunk), a fraction of a ms later.
- ITL. vLLM: gaps between every chunk with `choices`, the finish chunk included;
  ours: gaps between chunks that carried text (reasoning included).
- E2E. vLLM's `e2el` as above; ours `e2e` = done - sent.
- Throughput. vLLM: output tokens / benchmark duration, which starts before
  its first scheduled gap (it draws a gap before the first request too).
  Ours: output tokens / (last done - first sent). Also shown: ours on vLLM's
  clock (from our schedule start minus its first gap), which removes that
  difference.
- Output tokens: both from the server's `usage.completion_tokens`.

Two executions of one schedule differ by +-20% per round on these VMs, so the
medians above carry that swing. The engine-normalized lines remove it: each
tool's mean TTFT/TPOT/E2E over the engine's own histogram mean
(vllm:time_to_first_token_seconds, ..._request_time_per_output_token_seconds,
..._e2e_request_latency_seconds) for the requests of that same run. The engine
counts from the request's arrival in the engine, so both tools sit above 1.0x
by the API server's own share; what matters is whether they sit at the same place.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

# The engine's own per-request histograms (server side, same requests as the
# tool's run): each tool's mean over the engine's mean for its own run cancels
# the run-to-run swing that two executions of one schedule show on these VMs
# (+-20% per round measured), leaving the difference that the clients make.
ENGINE_MEANS = (
    # (label, our per-record attribute, vLLM result key (ms), the engine's histogram)
    ("TTFT", "ttft", "mean_ttft_ms", "vllm:time_to_first_token_seconds"),
    ("TPOT", "tpot", "mean_tpot_ms", "vllm:request_time_per_output_token_seconds"),
    ("E2E", "e2e", "mean_e2el_ms", "vllm:e2e_request_latency_seconds"),
)


def engine_means(before: str, after: str) -> dict[str, float]:
    """The engine's mean of each ENGINE_MEANS histogram over the requests between two scrapes."""
    from pytest_rllm.telemetry.prometheus import histogram_totals

    b, a = histogram_totals(before), histogram_totals(after)
    out = {}
    for label, _, _, name in ENGINE_MEANS:
        total = a.get(name, (0.0, 0.0))[0] - b.get(name, (0.0, 0.0))[0]
        count = a.get(name, (0.0, 0.0))[1] - b.get(name, (0.0, 0.0))[1]
        out[label] = total / count if count else float("nan")
    return out


METRICS = (
    # (label, ours summary key, vLLM result key, scale vLLM -> seconds)
    ("TTFT median", "ttft_p50", "median_ttft_ms", 1e-3),
    ("TPOT median", "tpot_p50", "median_tpot_ms", 1e-3),
    ("ITL median", "itl_p50", "median_itl_ms", 1e-3),
    ("E2E median", "e2e_p50", "median_e2el_ms", 1e-3),
    ("TTFT p99", "ttft_p99", "p99_ttft_ms", 1e-3),
    ("output tok/s", "output_throughput", "output_throughput", 1.0),
    ("requests/s", "request_throughput", "request_throughput", 1.0),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rate", type=float, default=3.0, help="Poisson requests per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="24 prompts, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_prompts, args.rounds = 24, 1
    C.engine_env()
    C.header("agreement with vLLM's serving benchmark (same server, prompts, schedule, seed)")
    model = C.model_dir()
    from pytest_rllm.session import RllmSession
    from pytest_rllm.settings import RllmSettings

    tmp = Path(tempfile.mkdtemp(prefix="rllm-agreement-"))
    trace = tmp / "schedule.jsonl"
    base = RllmSettings(
        model=model, engine="server", optimizations=("baseline",), num_prompts=args.num_prompts,
        max_tokens=args.max_tokens, temperature=0.0, top_p=0.95, seed=args.seed, arrival="batch",
        startup_timeout=300.0, request_timeout=600.0, run_timeout=1800.0,
    )
    session = RllmSession(base)
    print(f"model {model}; {args.num_prompts} prompts, max_tokens {args.max_tokens}, temperature 0, "
          f"Poisson {args.rate:g} req/s (vLLM's draw, seed {args.seed}), {args.rounds} round(s)", flush=True)
    try:
        t0 = time.perf_counter()
        session.run("baseline", "main")  # starts the server and warms it (batch, not compared)
        print(f"server up and warm in {time.perf_counter() - t0:.1f}s", flush=True)
        engine = session._engine
        dataset = C.write_prompts([item.prompt for item in session.items()], tmp)
        peer_args = C.vllm_bench_args(
            url=engine.base_url, model=engine.served_model, tokenizer=model, dataset=dataset,
            num_prompts=args.num_prompts, output_len=args.max_tokens, rate=args.rate, seed=args.seed,
            temperature=0.0, top_p=0.95,
        )
        rounds: list[tuple[dict[str, float], dict[str, Any], float]] = []
        normalized: list[dict[str, tuple[float, float]]] = []  # per round: label -> (ours/engine, vLLM/engine)
        first_gap = None
        for k in range(args.rounds):
            order = ["vllm", "ours"] if k % 2 == 0 else ["ours", "vllm"]
            if first_gap is None:
                order = ["vllm", "ours"]  # the schedule comes from vLLM's draw
            got: dict[str, Any] = {}
            engine_side: dict[str, dict[str, float]] = {}
            for side in order:
                before = engine.metrics_text() or ""
                if side == "vllm":
                    with C.record_peer_schedule() as schedule:
                        peer = C.run_vllm_bench(peer_args)
                    if peer.get("failed"):
                        raise RuntimeError(f"vLLM's benchmark: {peer['failed']} requests failed")
                    delays = schedule.offsets(args.num_prompts, args.rate)
                    if first_gap is None:
                        first_gap = delays[0]
                        with open(trace, "w") as handle:
                            for d in delays:
                                handle.write(json.dumps({"timestamp": d}) + "\n")
                        session.settings = base.replace(arrival=f"trace:{trace}")
                    got["vllm"] = peer
                else:
                    session.outcomes.pop(("baseline", "main"), None)  # runs are cached: measure afresh
                    result = session.run("baseline", "main")
                    summary = dict(result.summary())
                    if summary["failed"]:
                        raise RuntimeError(f"ours: {summary['failed']:.0f} requests failed")
                    # On vLLM's clock: from its benchmark start, one first gap before our first send.
                    done = [r for r in result.records if r.ok]
                    start = min(r.t_scheduled for r in done) - (first_gap or 0.0)
                    span = max(r.t_done for r in done) - start
                    summary["output_throughput_vllm_clock"] = summary["output_tokens_total"] / span
                    for label, attr, _, _ in ENGINE_MEANS:
                        values = [getattr(r, attr) for r in done if getattr(r, attr) is not None]
                        summary[f"mean_{attr}"] = statistics.fmean(values) if values else float("nan")
                    got["ours"] = summary
                engine_side[side] = engine_means(before, engine.metrics_text() or "")
            ours, peer = got["ours"], got["vllm"]
            same = int(ours["output_tokens_total"]) == int(peer["total_output_tokens"])
            rounds.append((ours, peer, same))
            line = "  ".join(f"{label} {ours[o] / (peer[v] * scale):.3f}x" for label, o, v, scale in METRICS[:4])
            print(f"  round {k + 1} ({' then '.join(order)}): {line}  same tokens: {same}  [{C.load_average()}]", flush=True)
            norm = {}
            for label, attr, key, _ in ENGINE_MEANS:
                norm[label] = (ours[f"mean_{attr}"] / engine_side["ours"][label], peer[key] / 1e3 / engine_side["vllm"][label])
            normalized.append(norm)
            print("      each tool's mean over the engine's mean for the same requests: " + "  ".join(
                f"{label} ours {o:.3f}x vLLM {v:.3f}x" for label, (o, v) in norm.items()), flush=True)
    finally:
        session.close()
    print(f"at end: {C.load_average()}")
    print("== summary (medians over rounds; times in ms)")
    print(f"{'metric':<16}{'ours':>12}{'vLLM bench':>12}{'ratio':>9}   goal: within 5%")
    for label, o, v, scale in METRICS:
        ours_v = statistics.median(r[0][o] for r in rounds)
        peer_v = statistics.median(r[1][v] * scale for r in rounds)
        ratio = statistics.median(r[0][o] / (r[1][v] * scale) for r in rounds)
        unit = 1e3 if scale != 1.0 else 1.0
        flag = "ok" if abs(ratio - 1) <= 0.05 else "OFF"
        print(f"{label:<16}{ours_v * unit:>12.2f}{peer_v * unit:>12.2f}{ratio:>9.3f}   {flag}")
    print("engine-normalized (each tool's mean over the engine's own histogram mean for the same requests;")
    print("the run-to-run swing cancels; ratio = ours-normalized / vLLM-normalized):")
    for label, _, _, _ in ENGINE_MEANS:
        o = statistics.median(n[label][0] for n in normalized)
        v = statistics.median(n[label][1] for n in normalized)
        ratio = statistics.median(n[label][0] / n[label][1] for n in normalized)
        flag = "ok" if abs(ratio - 1) <= 0.05 else "OFF"
        print(f"  {label + ' mean':<14} ours {o:.3f}x engine   vLLM {v:.3f}x engine   ratio {ratio:.3f}   {flag}")
    ours_clock = statistics.median(r[0]["output_throughput_vllm_clock"] / r[1]["output_throughput"] for r in rounds)
    ttfvt = statistics.median(r[0]["ttfvt_p50"] for r in rounds)
    print(f"{'output tok/s on vLLM clock':<28} ratio {ours_clock:.3f}")
    print(f"ours only: TTFVT median {ttfvt * 1e3:.2f} ms (first answer token; vLLM's tool has no such figure)")
    print(f"same output tokens on both sides in every round: {all(r[2] for r in rounds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
