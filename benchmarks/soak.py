"""Soak: the gamma workload against a real vLLM server for minutes; nothing may be lost, memory must stay flat.

    python benchmarks/soak.py --minutes 3 [--rate 3] [--window 30] [--max-tokens 64] [--model DIR]

It starts one vLLM OpenAI server (127.0.0.1, CPU build here) on the embedded
pocket model (or --model; a random-weight model when pocket is not shipped),
then drives the session's gamma workload (Gamma arrivals, burstiness 0.5)
through the harness's own path (RllmSession, streaming client, driver) in
back-to-back windows until --minutes are up. Per window and in total it prints
requests sent, completed, failed and *lost* (sent but with neither an answer
nor a recorded error; must be 0), the engine's own count of finished requests,
and the RSS of this (driving) process. Exit status 1 if anything was lost or
if RSS kept growing across windows beyond --rss-slack-mib.

Bounded: every window has a run timeout, the whole soak a deadline, and the
server is stopped (its process group killed) on every way out.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def finished_by_engine(metrics: str | None) -> float:
    """vLLM's own count of requests it finished (any reason), from /metrics."""
    if not metrics:
        return float("nan")
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", metrics, re.M))


def pick_model(given: str | None, scratch: Path) -> str:
    if given:
        return given
    from pytest_rllm.pocket import MODEL_DIR

    if (Path(MODEL_DIR) / "model.safetensors").exists():
        return str(MODEL_DIR)
    # No shipped model: a random-weight Llama with the pocket tokenizer (plumbing only).
    import torch
    from transformers import LlamaForCausalLM

    from pytest_rllm.pocket import tokenizer, train

    out = scratch / "random-model"
    tokenizer.build(out)
    torch.manual_seed(0)
    LlamaForCausalLM(train.model_config()).to(torch.bfloat16).save_pretrained(out)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to keep the load on (default 3)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of arrivals per window (default 30)")
    parser.add_argument("--rate", type=float, default=3.0, help="mean requests per second (default 3)")
    parser.add_argument("--burstiness", type=float, default=0.5, help="Gamma shape; below 1 is burstier (default 0.5)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded pocket model)")
    parser.add_argument("--rss-slack-mib", type=float, default=64.0,
                        help="RSS growth allowed from the first to the last window (default 64 MiB)")
    args = parser.parse_args(argv)

    from pytest_rllm.runner import Workload
    from pytest_rllm.session import RllmSession
    from pytest_rllm.settings import RllmSettings

    scratch = Path(tempfile.mkdtemp(prefix="rllm-soak-"))
    model = pick_model(args.model, scratch)
    per_window = max(1, round(args.rate * args.window))
    settings = RllmSettings.from_values({
        "model": model,
        "optimizations": "baseline",
        "dataset": "procedural",
        "num_prompts": str(per_window),
        "max_tokens": str(args.max_tokens),
        "arrival": f"gamma:{args.rate:g}:{args.burstiness:g}",
        # A window may overrun its arrivals while the backlog drains, but never hang the soak.
        "run_timeout": f"{max(60.0, 3 * args.window):g}s",
        "request_timeout": "120s",
        "startup_timeout": "600s",
    })
    session = RllmSession(settings, log_dir=scratch)
    totals = {"sent": 0, "completed": 0, "failed": 0, "lost": 0}
    rss: list[float] = []
    print(f"soak: model={model} rate={args.rate:g}/s burstiness={args.burstiness:g} window={args.window:g}s "
          f"({per_window} requests) for {args.minutes:g} min; max_tokens={args.max_tokens}", flush=True)
    try:
        t0 = time.perf_counter()
        engine = session._engine_for("baseline")
        print(f"engine up in {time.perf_counter() - t0:.1f}s at {engine.base_url}", flush=True)
        deadline = time.monotonic() + args.minutes * 60  # the load time, not counting the engine's start
        rss_start = rss_mib()
        window = 0
        while time.monotonic() < deadline:
            window += 1
            engine_before = finished_by_engine(engine.metrics_text())
            # A fresh workload value per window: the session caches runs by name, the soak wants new ones.
            outcome = session._run_workload(engine, "baseline", Workload(f"gamma-{window}", arrival="gamma"))
            result = outcome.result
            records = result.records
            sent = sum(1 for r in records if r.t_sent)
            completed = sum(1 for r in records if r.ok)
            failed = sum(1 for r in records if r.t_sent and r.error is not None)
            lost = sent - completed - failed
            engine_done = finished_by_engine(engine.metrics_text()) - engine_before
            # Keep the totals, drop the records: the soak measures the harness, not its own bookkeeping.
            session.runs.clear()
            del outcome, result, records
            gc.collect()
            rss.append(rss_mib())
            for key, value in (("sent", sent), ("completed", completed), ("failed", failed), ("lost", lost)):
                totals[key] += value
            print(f"window {window}: sent {sent} completed {completed} failed {failed} lost {lost} "
                  f"engine-finished {engine_done:.0f} rss {rss[-1]:.1f} MiB", flush=True)
            if session._engine is None:
                print("the engine died; stopping the soak", flush=True)
                break
    finally:
        session.close()
    growth_total = (rss[-1] - rss_start) if rss else float("nan")
    growth_steady = (rss[-1] - rss[0]) if rss else float("nan")
    print(f"total: sent {totals['sent']} completed {totals['completed']} failed {totals['failed']} "
          f"lost {totals['lost']}")
    print(f"rss of the driving process: {rss_start:.1f} MiB after engine start, {rss[0] if rss else float('nan'):.1f} "
          f"after window 1, {rss[-1] if rss else float('nan'):.1f} at the end (growth {growth_total:+.1f} MiB in all, "
          f"{growth_steady:+.1f} MiB from window 1 to the last)")
    ok = totals["lost"] == 0 and totals["sent"] > 0 and (len(rss) < 2 or growth_steady <= args.rss_slack_mib)
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
