"""Measure the shipped pocket model under real vLLM on CPU: the numbers of its model card.

    python benchmarks/pocket_card.py [--model DIR] [--per-cell 25] [--seed 0] [--json out.json]

Prints, for the plugin's default sampling (temperature 0.6, top_p 0.95):
- accuracy per domain x difficulty, with thinking and without;
- mean output and thinking tokens per difficulty level;
- output tokens/s for one batch of 64 requests.
The items are the procedural data set's own (seeded), so they match what the
suites send. Only the in-process engine is used, to keep start-up short.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# vLLM reads these at import time; set them before anything imports it.
_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "OMP_NUM_THREADS": "2",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _setup_env() -> None:
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    scratch = tempfile.mkdtemp(prefix="pocket_card_")
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(scratch, "vllm"))
    os.environ.setdefault("HF_HOME", os.path.join(scratch, "hf"))


def grade(text: str, reference: str, thinking: bool) -> bool:
    """Correct only with a closed think block (thinking on) and the exact answer line."""
    from pytest_rllm.workloads.procedural import parse_answer

    if thinking:
        if "</think>" not in text:
            return False  # cut off inside <think>: wrong, never parsed
        text = text.split("</think>", 1)[1]
    return parse_answer(text) == reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped pocket model)")
    parser.add_argument("--per-cell", type=int, default=25, help="items per domain x difficulty and mode")
    parser.add_argument("--seed", type=int, default=0, help="data seed and engine seed")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--dtype", default="auto", help="engine dtype (auto = the config's, bfloat16)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--throughput-only", action="store_true", help="only the batch-of-64 throughput (e.g. to compare dtypes)")
    args = parser.parse_args(argv)

    _setup_env()
    from pytest_rllm.pocket import MODEL_DIR
    from pytest_rllm.workloads import procedural

    model = args.model or str(MODEL_DIR)
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=model, seed=args.seed, enforce_eager=True, dtype=args.dtype, max_model_len=8192)
    load_s = time.perf_counter() - t0
    tokenizer = llm.get_tokenizer()
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    # Seeding the engine, never SamplingParams(seed=...): that crashes on CPU.
    params = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=args.max_tokens)

    tasks = [
        t
        for d in procedural.DOMAINS
        for lvl in procedural.DIFFICULTIES
        for t in procedural.generate(d, lvl, args.per_cell, seed=args.seed)
    ]
    results: dict = {"model": model, "per_cell": args.per_cell, "seed": args.seed, "load_seconds": round(load_s, 1)}
    for thinking in () if args.throughput_only else (True, False):
        messages = [[{"role": "user", "content": t.question}] for t in tasks]
        outs = llm.chat(messages, params, use_tqdm=False, chat_template_kwargs={"enable_thinking": thinking})
        cells: dict[str, list[int]] = {}
        out_tokens: dict[int, list[int]] = {}
        think_tokens: dict[int, list[int]] = {}
        for t, out in zip(tasks, outs):
            c = out.outputs[0]
            ids = list(c.token_ids)
            cells.setdefault(f"{t.domain}/{t.difficulty}", []).append(int(grade(c.text, t.answer, thinking)))
            cells.setdefault(f"all/{t.difficulty}", []).append(int(grade(c.text, t.answer, thinking)))
            out_tokens.setdefault(t.difficulty, []).append(len(ids))
            if thinking:
                think_tokens.setdefault(t.difficulty, []).append(ids.index(think_close) if think_close in ids else len(ids))
        key = "thinking" if thinking else "no_thinking"
        results[key] = {
            "accuracy": {k: sum(v) / len(v) for k, v in cells.items()},
            "mean_output_tokens": {lvl: statistics.mean(v) for lvl, v in out_tokens.items()},
            "mean_thinking_tokens": {lvl: statistics.mean(v) for lvl, v in think_tokens.items()},
        }

    # Throughput: one closed batch of 64 thinking requests over every cell.
    batch = procedural.items(64, seed=args.seed + 1)
    messages = [[{"role": "user", "content": it.prompt}] for it in batch]
    llm.chat(messages[:4], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.chat(messages, params, use_tqdm=False, chat_template_kwargs={"enable_thinking": True})
    wall = time.perf_counter() - t0
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    results["batch64"] = {"output_tokens": generated, "seconds": round(wall, 2), "tok_per_s": round(generated / wall, 1)}

    if args.throughput_only:
        b = results["batch64"]
        print(f"dtype {args.dtype}: batch of 64, {b['output_tokens']} output tokens in {b['seconds']} s = {b['tok_per_s']} tok/s")
    else:
        print(render(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, sort_keys=True, default=str)
    return 0


def render(results: dict) -> str:
    from pytest_rllm.workloads.procedural import DIFFICULTIES, DOMAINS

    lines = [f"Accuracy under vLLM CPU ({results['per_cell']} items per cell, temperature 0.6, top_p 0.95, seed {results['seed']})", ""]
    head = "| domain | mode | " + " | ".join(f"d{lvl}" for lvl in DIFFICULTIES) + " |"
    lines += [head, "|" + "---|" * (len(DIFFICULTIES) + 2)]
    for domain in (*DOMAINS, "all"):
        for key, label in (("thinking", "think"), ("no_thinking", "no think")):
            acc = results[key]["accuracy"]
            row = " | ".join(f"{100 * acc[f'{domain}/{lvl}']:.0f}%" for lvl in DIFFICULTIES)
            lines.append(f"| {domain} | {label} | {row} |")
    lines += ["", "| per level | " + " | ".join(f"d{lvl}" for lvl in DIFFICULTIES) + " |", "|" + "---|" * (len(DIFFICULTIES) + 1)]
    t, n = results["thinking"], results["no_thinking"]
    lines.append("| mean thinking tokens | " + " | ".join(f"{t['mean_thinking_tokens'][lvl]:.0f}" for lvl in DIFFICULTIES) + " |")
    lines.append("| mean output tokens, thinking | " + " | ".join(f"{t['mean_output_tokens'][lvl]:.0f}" for lvl in DIFFICULTIES) + " |")
    lines.append("| mean output tokens, no thinking | " + " | ".join(f"{n['mean_output_tokens'][lvl]:.0f}" for lvl in DIFFICULTIES) + " |")
    b = results["batch64"]
    lines += ["", f"Batch of 64 (thinking on): {b['output_tokens']} output tokens in {b['seconds']} s = {b['tok_per_s']} tok/s"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
