"""Client overhead: output tok/s through the harness against the engine's own offline throughput.

    python benchmarks/client_overhead.py             # ~10 min: both modes, 7 rounds each
    python benchmarks/client_overhead.py --quick     # ~2 min
    python benchmarks/client_overhead.py --mode inprocess

Same engine, same prompts (the procedural data set, --num-prompts), same
sampling. Temperature 0 on every side, so each side generates the same tokens
and the tok/s ratio is a time ratio (the token totals are printed to show it);
max_tokens is fixed and ignore_eos is off everywhere.

- In-process mode: one `vllm.LLM` (the embedded pocket model). Offline is
  `LLM.generate` on the chat-templated prompt ids; the harness is
  `RllmSession.run("baseline", "main")` with --rllm-engine=inprocess, batch
  arrival, telemetry sampling on, as a test session runs it. The two alternate
  on the same engine (the harness's step thread is paused while offline runs).
  Goal: >= 0.98x offline.
- Server mode: one vLLM OpenAI server started by the harness (reasoning parser
  qwen3). Ours is `RllmSession.run` against it; the peer is vLLM's own
  benchmark client (`vllm.benchmarks.serve`, openai-chat, the same prompts,
  --skip-chat-template so the server applies the template as it does for us).
  Goal: >= 1.0x the peer. Both are also shown against offline.

Throughput is each tool's own figure: ours output tokens / (last response done
- first request sent); vLLM's output tokens / its benchmark duration.

One round's tok/s swings +-10% on these VMs even on a quiet host, so besides
the median the summary gives the geometric mean of the paired rounds' ratios
with a 95% Student-t interval (on log ratios): the goal is shown met only
where the interval's low end clears it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def settings_for(engine: str, args: argparse.Namespace, model: str) -> Any:
    from pytest_rllm.settings import RllmSettings

    return RllmSettings(
        model=model, engine=engine, optimizations=("baseline",), num_prompts=args.num_prompts,
        max_tokens=args.max_tokens, temperature=0.0, top_p=0.95, seed=args.seed, arrival="batch",
        startup_timeout=300.0, request_timeout=600.0, run_timeout=1800.0,
    )


def harness_run(session: Any, *, telemetry: bool = True) -> tuple[float, int, float, float, float]:
    """(tok/s as the harness reports it, output tokens, CPU seconds of this process during the run,
    CPU seconds of this thread, which runs the harness's event loop, and the run's wall seconds).

    The event loop's CPU is the client's own work, and unlike tok/s it does not
    swing with the host: in-process, the rest of the process's CPU is the engine.
    """
    session.outcomes.pop(("baseline", "main"), None)  # the session caches runs: measure afresh
    saved = session.settings
    if not telemetry:
        # One scrape at the start, then none: isolates what 10 Hz /metrics scraping costs the server.
        session.settings = saved.replace(metrics_interval=3600.0)
    cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    try:
        result = session.run("baseline", "main")
    finally:
        session.settings = saved
    cpu, loop_cpu, wall = time.process_time() - cpu0, time.thread_time() - loop0, time.perf_counter() - wall0
    summary = result.summary()
    if summary["failed"]:
        raise RuntimeError(f"{summary['failed']:.0f} requests failed: {[r.error for r in result.records if r.error][:3]}")
    return summary["output_throughput"], int(summary["output_tokens_total"]), cpu, loop_cpu, wall


# ----------------------------------------------------------------------------- in-process


def _pause(engine: Any) -> None:
    """Stop the harness's step thread: LLM.generate steps the same engine from this thread.

    The harness's hook on the engine core (it reads the per-step token counts)
    comes off too, so offline runs vLLM's own code path untouched.
    """
    engine._submit.put(None)
    engine._wake.set()
    engine._thread.join(timeout=30)
    engine.llm.llm_engine.engine_core.__dict__.pop("get_output", None)


def _resume(engine: Any) -> None:
    from pytest_rllm.engines.inprocess import _observe_new_tokens

    if engine._new_tokens is not None:
        engine._new_tokens = _observe_new_tokens(engine.llm.llm_engine)
    engine._thread = threading.Thread(target=engine._step_loop, name="rllm-engine-steps", daemon=True)
    engine._thread.start()


def offline_run(llm: Any, prompts: list[list[int]], max_tokens: int, *, main_thread: bool = False) -> tuple[float, int]:
    """LLM.generate's own tok/s, stepped from a fresh thread like the harness's step thread.

    Why a thread: vLLM's CPU worker pins the OpenMP team of the thread that
    built the engine (the main thread) to VLLM_CPU_OMP_THREADS_BIND. Measured
    here on a loaded host (load 7-8 on 2 cores), the same LLM.generate ran
    ~4.5x slower from the main thread (133-158 tok/s) than from a fresh thread
    (638-714 tok/s). The harness steps from a thread, so offline does too:
    otherwise the ratio would measure pinning, not the client.
    """
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=0.95)
    box: dict[str, Any] = {}

    def work() -> None:
        t0 = time.perf_counter()
        box["out"] = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        box["elapsed"] = time.perf_counter() - t0

    if main_thread:
        work()
    else:
        thread = threading.Thread(target=work, name="offline-generate")
        thread.start()
        thread.join()
    tokens = sum(len(o.outputs[0].token_ids) for o in box["out"])
    return tokens / box["elapsed"], tokens


def prompt_ids(llm: Any, items: list[Any]) -> list[list[int]]:
    """The prompt ids the in-process client sends (its own chat-template call)."""
    from collections.abc import Mapping

    tok = llm.get_tokenizer()
    out = []
    for item in items:
        ids = tok.apply_chat_template([{"role": "user", "content": item.prompt}], tokenize=True, add_generation_prompt=True)
        out.append(list(ids["input_ids"] if isinstance(ids, Mapping) else ids))
    return out


def inprocess(args: argparse.Namespace, model: str) -> dict[str, Any]:
    from pytest_rllm.session import RllmSession

    session = RllmSession(settings_for("inprocess", args, model))
    try:
        t0 = time.perf_counter()
        harness_run(session)  # starts the engine; also the warm-up pass
        print(f"in-process engine up and warm in {time.perf_counter() - t0:.1f}s", flush=True)
        engine = session._engine
        ids = prompt_ids(engine.llm, session.items())
        _pause(engine)
        offline_run(engine.llm, ids, args.max_tokens)  # warm the offline path too
        _resume(engine)
        rows = []
        for k in range(args.rounds):
            order = ["offline", "harness"] if k % 2 == 0 else ["harness", "offline"]
            got: dict[str, tuple[float, int]] = {}
            loop_share = 0.0
            for side in order:
                if side == "offline":
                    _pause(engine)
                    got[side] = offline_run(engine.llm, ids, args.max_tokens)
                    _resume(engine)
                else:
                    tps, tokens, _, loop_cpu, wall = harness_run(session)
                    got[side] = (tps, tokens)
                    loop_share = loop_cpu / wall
            r = got["harness"][0] / got["offline"][0]
            rows.append((got["offline"], got["harness"], r, loop_share))
            print(f"  in-process round {k + 1}: offline {got['offline'][0]:8.1f} tok/s ({got['offline'][1]} tokens)  "
                  f"harness {got['harness'][0]:8.1f} tok/s ({got['harness'][1]} tokens)  ratio {r:.3f}x  "
                  f"event-loop CPU {100 * loop_share:.1f}% of the run  [{C.load_average()}]", flush=True)
        return {
            "offline": statistics.median(r[0][0] for r in rows),
            "harness": statistics.median(r[1][0] for r in rows),
            "ratio": statistics.median(r[2] for r in rows),
            "ratios": [r[2] for r in rows],
            "loop_share": statistics.median(r[3] for r in rows),
            "tokens_equal": all(r[0][1] == r[1][1] for r in rows),
        }
    finally:
        session.close()


# ----------------------------------------------------------------------------- server


def server(args: argparse.Namespace, model: str, offline: float | None) -> dict[str, Any]:
    from pytest_rllm.session import RllmSession

    session = RllmSession(settings_for("server", args, model))
    tmp = tempfile.mkdtemp(prefix="rllm-overhead-")
    try:
        t0 = time.perf_counter()
        harness_run(session)  # starts the server; also the warm-up pass
        print(f"server up and warm in {time.perf_counter() - t0:.1f}s", flush=True)
        engine = session._engine
        dataset = C.write_prompts([item.prompt for item in session.items()], tmp)
        peer_args = C.vllm_bench_args(
            url=engine.base_url, model=engine.served_model, tokenizer=model, dataset=dataset,
            num_prompts=args.num_prompts, output_len=args.max_tokens, rate=None, seed=args.seed,
            temperature=0.0, top_p=0.95,
        )
        C.run_vllm_bench(peer_args)  # its warm-up (imports, tokenizer)
        rows = []
        for k in range(args.rounds):
            order = ["vllm", "ours"] if k % 2 == 0 else ["ours", "vllm"]
            got: dict[str, tuple[float, int]] = {}
            cpus: dict[str, float] = {}
            for side in order:
                if side == "vllm":
                    cpu0 = time.process_time()
                    result = C.run_vllm_bench(peer_args)
                    cpus[side] = time.process_time() - cpu0
                    if result.get("failed"):
                        raise RuntimeError(f"vLLM's benchmark: {result['failed']} requests failed")
                    got[side] = (result["output_throughput"], int(result["total_output_tokens"]))
                else:
                    tps, tokens, cpu, _, _ = harness_run(session)
                    got[side] = (tps, tokens)
                    cpus[side] = cpu
            if args.telemetry_off:
                got["quiet"] = harness_run(session, telemetry=False)[:2]
            r = got["ours"][0] / got["vllm"][0]
            rows.append((got["vllm"], got["ours"], r))
            quiet = f"  ours without telemetry {got['quiet'][0]:8.1f} tok/s" if "quiet" in got else ""
            print(f"  server round {k + 1}: vLLM bench {got['vllm'][0]:8.1f} tok/s ({got['vllm'][1]} tokens, client CPU {cpus['vllm']:.2f}s)  "
                  f"ours {got['ours'][0]:8.1f} tok/s ({got['ours'][1]} tokens, client CPU {cpus['ours']:.2f}s)  ratio {r:.3f}x{quiet}  [{C.load_average()}]",
                  flush=True)
        out = {
            "vllm": statistics.median(r[0][0] for r in rows),
            "ours": statistics.median(r[1][0] for r in rows),
            "ratio": statistics.median(r[2] for r in rows),
            "ratios": [r[2] for r in rows],
            "tokens_equal": all(r[0][1] == r[1][1] for r in rows),
        }
        if offline:
            out["ours_vs_offline"] = out["ours"] / offline
            out["vllm_vs_offline"] = out["vllm"] / offline
        return out
    finally:
        session.close()


def ratio_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of paired ratios and its 95% interval: a t-interval on the logs, exponentiated."""
    from pytest_rllm.stats import mean_interval

    mean, low, high = mean_interval([math.log(r) for r in ratios])
    return math.exp(mean), math.exp(low), math.exp(high)


def verdict(ratios: list[float], goal: float) -> str:
    mean, low, high = ratio_interval(ratios)
    if low >= goal:
        word = "met"
    elif high < goal:
        word = "missed"
    else:
        word = "not shown either way"
    return f"geometric mean {mean:.3f}x, 95% interval {low:.3f}-{high:.3f}x: goal >= {goal:g}x {word}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("both", "inprocess", "server"), default="both")
    # 256: with 64 prompts a run lasted ~3 s here and one round swung +-15%; 256 run ~11 s, +-7%.
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=256)
    # Seven: one round's tok/s swings +-15% on these VMs, quiet or not; the median of 7 is the figure.
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="32 prompts, 128 tokens, 1 round")
    parser.add_argument("--telemetry-off", action="store_true", help="server mode: also run ours with no /metrics scraping")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_prompts, args.max_tokens, args.rounds = 32, 128, 1
    C.engine_env()
    C.header("client overhead: harness vs offline LLM.generate (in-process) and vs vLLM's benchmark client (server)")
    model = C.model_dir()
    print(f"model {model}; {args.num_prompts} prompts, max_tokens {args.max_tokens}, temperature 0 everywhere, "
          f"batch arrival, {args.rounds} alternating rounds (medians below)", flush=True)
    results: dict[str, Any] = {}
    if args.mode in ("both", "inprocess"):
        results["inprocess"] = inprocess(args, model)
    if args.mode in ("both", "server"):
        offline = results.get("inprocess", {}).get("offline")
        results["server"] = server(args, model, offline)
    print(f"at end: {C.load_average()}")
    print("== summary")
    if "inprocess" in results:
        r = results["inprocess"]
        print(f"in-process: harness {r['harness']:.1f} tok/s vs offline LLM.generate {r['offline']:.1f} tok/s = "
              f"{r['ratio']:.3f}x (rounds {', '.join(f'{x:.3f}' for x in r['ratios'])}; goal >= 0.98x; "
              f"same tokens both sides: {r['tokens_equal']}); the harness's event loop used "
              f"{100 * r['loop_share']:.1f}% of one core during its runs (median)")
        print(f"  in-process: {verdict(r['ratios'], 0.98)}")
    if "server" in results:
        r = results["server"]
        extra = ""
        if "ours_vs_offline" in r:
            extra = f"; vs offline: ours {r['ours_vs_offline']:.3f}x, vLLM bench {r['vllm_vs_offline']:.3f}x"
        print(f"server: ours {r['ours']:.1f} tok/s vs vLLM bench {r['vllm']:.1f} tok/s = {r['ratio']:.3f}x "
              f"(rounds {', '.join(f'{x:.3f}' for x in r['ratios'])}; goal >= 1.0x; same tokens both sides: "
              f"{r['tokens_equal']}){extra}")
        print(f"  server: {verdict(r['ratios'], 1.0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
