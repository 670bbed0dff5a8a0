"""Train the pocket reasoning model from scratch on the procedural tasks.

    python -m pytest_rllm.pocket.train --out DIR [--seed 0] [--minutes 30] [--steps 1100]

Writes a Hugging Face folder (config, bf16 safetensors, tokenizer, chat template)
that vLLM serves, plus training_log.json with the recipe and held-out evals.

The recipe creates an accuracy *gradient* on purpose, because a converged model
solves every level and then no finding about difficulty can be checked:
- difficulties are drawn with falling weights, so the hardest levels are seen
  rarely and their long step-by-step chains stay error prone;
- no-thinking examples (answer only) are mixed into every step, so the same
  weights also hold a "plain model" that fails where a chain of thought is needed;
- the checkpoint is chosen by held-out accuracy: the best one that is still
  nearly perfect on the easiest level and clearly worse on the hardest.
Everything is seeded; on a fixed thread count a rerun gives the same weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

from pytest_rllm.pocket import tokenizer as tok
from pytest_rllm.workloads import procedural

ARCH = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
}
# Relative draw weight of each difficulty level (1..6): the hardest are rare.
LEVEL_WEIGHTS = {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.8, 5: 0.5, 6: 0.3}
# Unequal on purpose: a domain seen less often stays less accurate at the middle
# levels, so the suites' domain-preference finding has something to find.
DOMAIN_WEIGHTS = {"addition": 1.0, "subtraction": 1.0, "multiplication": 0.7, "sorting": 0.5}
THINKING_FRACTION = 0.7
# Training streams start far above the seeds the workloads draw (0, 1, ...),
# so the held-out sample and the benchmark see mostly unseen problems (the
# easiest levels have too few distinct problems to avoid all overlap).
TRAIN_SEED_BASE = 1_000_000
HELDOUT_SEED = 424242


def model_config(dtype: str = "bfloat16"):
    from transformers import LlamaConfig

    table = tok.vocab()
    return LlamaConfig(
        vocab_size=tok.VOCAB_SIZE,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=table[tok.IM_END],
        pad_token_id=table[tok.PAD],
        torch_dtype=dtype,
        **ARCH,
    )


def example(task: procedural.Task, thinking: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels; only the part the model generates is learned."""
    prompt = tok.prompt_text(task.question, thinking)
    full = tok.prompt_text(task.question, True)[: -len(tok.THINK_OPEN + "\n")] + task.completion(thinking)
    assert full.startswith(prompt), (prompt, full)
    p_ids = tok.encode(prompt)
    t_ids = tok.encode(full[len(prompt) :] + tok.IM_END)
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def draw_batch(
    step: int,
    seed: int,
    size: int,
    level_weights: dict[int, float] = LEVEL_WEIGHTS,
    thinking_fraction: float = THINKING_FRACTION,
) -> list[tuple[list[int], list[int]]]:
    """A batch that mixes every domain, level and both forms, fixed by (seed, step)."""
    rng = random.Random(f"pocket-batch/{seed}/{step}")
    cells = [(d, lvl) for d in DOMAIN_WEIGHTS for lvl in level_weights]
    weights = [DOMAIN_WEIGHTS[d] * level_weights[lvl] for d, lvl in cells]
    chosen = rng.choices(range(len(cells)), weights=weights, k=size)
    # Every cell appears at least once per step, so no level is ever absent.
    chosen = list(range(len(cells))) + chosen[: max(0, size - len(cells))]
    counts = {i: chosen.count(i) for i in set(chosen)}
    out = []
    for i, count in sorted(counts.items()):
        domain, level = cells[i]
        tasks = procedural.generate(domain, level, count, seed=TRAIN_SEED_BASE + seed * 100_000 + step)
        for task in tasks:
            out.append(example(task, rng.random() < thinking_fraction))
    rng.shuffle(out)
    return out


def collate(batch, torch):
    width = max(len(ids) for ids, _ in batch)
    pad = tok.vocab()[tok.PAD]
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids, labels, mask


def heldout(per_cell: int) -> list[procedural.Task]:
    return [
        t
        for d in procedural.DOMAINS
        for lvl in procedural.DIFFICULTIES
        for t in procedural.generate(d, lvl, per_cell, seed=HELDOUT_SEED)
    ]


def evaluate(model, tasks, thinking: bool, torch, max_new: int = 320) -> dict[str, float]:
    """Greedy held-out accuracy per 'domain/level' (and per level), with KV-cached decoding."""
    model.eval()
    eos = tok.vocab()[tok.IM_END]
    decode = {i: t for t, i in tok.vocab().items()}
    correct: dict[str, list[int]] = {}
    lengths: dict[int, list[int]] = {}
    by_level: dict[int, list[procedural.Task]] = {}
    for t in tasks:
        by_level.setdefault(t.difficulty, []).append(t)
    with torch.no_grad():
        for level, group in sorted(by_level.items()):
            prompts = [tok.encode(tok.prompt_text(t.question, thinking)) for t in group]
            width = max(map(len, prompts))
            # Left padding, so every row's next token sits in the last column.
            ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts]).to(model.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]).to(model.device)
            # About 1.5x the longest correct chain of the level: a model that
            # loops is cut off (and scored wrong) without wasting eval time.
            limit = min(max_new, 40 + 30 * level) if thinking else 24
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=limit,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=0,
            )
            for t, row in zip(group, out[:, width:].tolist()):
                if eos in row:
                    row = row[: row.index(eos)]
                text = "".join(decode.get(i, "") for i in row)
                visible = text.split(tok.THINK_CLOSE, 1)[1] if thinking and tok.THINK_CLOSE in text else text
                ok = (not thinking or tok.THINK_CLOSE in text) and procedural.parse_answer(visible) == t.answer
                correct.setdefault(f"{t.domain}/{level}", []).append(int(ok))
                correct.setdefault(f"level/{level}", []).append(int(ok))
                lengths.setdefault(level, []).append(len(row))
    model.train()
    result = {k: sum(v) / len(v) for k, v in correct.items()}
    result.update({f"tokens/{lvl}": sum(v) / len(v) for lvl, v in lengths.items()})
    return result


def profile_score(ev: dict[str, float]) -> float | None:
    """How well a checkpoint has the wanted profile; None when it is not eligible.

    Eligible: >= 95% on the easiest level. Among those, prefer high mean accuracy
    but penalise a hardest level above 70%, where the gradient starts to vanish.
    """
    levels = procedural.DIFFICULTIES
    easy, hard = ev[f"level/{levels[0]}"], ev[f"level/{levels[-1]}"]
    if easy < 0.95:
        return None
    mean = sum(ev[f"level/{lvl}"] for lvl in levels) / len(levels)
    return mean - 2.0 * max(0.0, hard - 0.70)


def save(model, out: Path, log: dict, torch) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.build(out)
    half = copy.deepcopy(model).cpu().to(torch.bfloat16)
    half.config.torch_dtype = "bfloat16"
    half.save_pretrained(out, safe_serialization=True)
    (out / "training_log.json").write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_rllm.pocket.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps (the cosine schedule's length)")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock cap; training stops early past it")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-from", type=int, default=500, help="first step at which checkpoints are evaluated")
    parser.add_argument("--eval-per-cell", type=int, default=4)
    parser.add_argument("--level-weights", default=",".join(str(w) for w in LEVEL_WEIGHTS.values()),
                        help="draw weight of each difficulty level, comma separated")
    parser.add_argument("--thinking-fraction", type=float, default=THINKING_FRACTION)
    parser.add_argument("--init", default=None,
                        help="start from the weights of an earlier run's folder (a second training phase)")
    parser.add_argument("--device", default="cpu", help="torch device; the shipped model was trained on 'cpu'")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.level_weights.split(",")]
    if len(weights) != len(procedural.DIFFICULTIES) or min(weights) < 0:
        parser.error(f"--level-weights needs {len(procedural.DIFFICULTIES)} non-negative numbers")
    level_weights = dict(zip(procedural.DIFFICULTIES, weights))

    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = LlamaForCausalLM(model_config("float32")).float()
    if args.init:
        from safetensors.torch import load_file

        state = load_file(str(Path(args.init) / "model.safetensors"))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        # Tied embeddings: the saved file holds embed_tokens only, lm_head shares it.
        assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
        model.tie_weights()
    model = model.to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    params = sum(p.numel() for p in model.parameters())
    log: dict = {
        "seed": args.seed,
        "params": params,
        "arch": ARCH,
        "vocab_size": tok.VOCAB_SIZE,
        "recipe": {
            "optimizer": "AdamW(betas=(0.9, 0.98), weight_decay=0.01), grad clip 1.0",
            "lr": args.lr,
            "schedule": f"linear warmup {warmup} steps, cosine to 5% over {args.steps} steps",
            "batch_sequences": args.batch,
            "level_weights": level_weights,
            "domain_weights": DOMAIN_WEIGHTS,
            "thinking_fraction": args.thinking_fraction,
            "loss": "cross-entropy on the generated (assistant) tokens only",
            "threads": args.threads,
            "device": args.device,
        },
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "evals": [],
        "steps_done": 0,
        "tokens_seen": 0,
        "train_seconds": 0.0,
    }
    best, best_state = None, None

    tasks = heldout(args.eval_per_cell)
    began = time.monotonic()
    model.train()
    for step in range(args.steps):
        if time.monotonic() - began > args.minutes * 60:
            # Past the cap the best checkpoint so far is shipped, and the log says so.
            log["stopped_by_time_cap"] = True
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = draw_batch(step, args.seed, args.batch, level_weights, args.thinking_fraction)
        batch.sort(key=lambda b: len(b[0]))
        # Two length-sorted halves: far less padding than one ragged batch.
        halves = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        n_target = sum(sum(1 for y in labels if y != -100) for _, labels in batch)
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for half in halves:
            ids, labels, mask = collate(half, torch)
            ids, labels = ids.to(args.device), labels.to(args.device)
            # Right padding under a causal mask never leaks into real tokens,
            # so no attention mask is needed (and SDPA takes its fast path).
            logits = model(input_ids=ids).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            )
            (loss / n_target).backward()
            loss_sum += loss.item()
            log["tokens_seen"] += int(mask.sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log["steps_done"] = step + 1
        log["train_seconds"] = time.monotonic() - began
        if step % 25 == 0:
            print(f"step {step} loss {loss_sum / n_target:.4f} lr {lr_at(step):.2e} "
                  f"{log['tokens_seen'] / log['train_seconds']:.0f} tok/s {log['train_seconds']:.0f}s", flush=True)
        done = step + 1
        if done >= args.eval_from and (done % args.eval_every == 0 or done == args.steps):
            t0 = time.monotonic()
            ev = evaluate(model, tasks, True, torch)
            score = profile_score(ev)
            entry = {"step": done, "seconds": round(log["train_seconds"], 1), "score": score,
                     **{k: round(v, 4) for k, v in ev.items()}}
            log["evals"].append(entry)
            print("eval", json.dumps(entry), f"({time.monotonic() - t0:.0f}s)", flush=True)
            if score is not None and (best is None or score > best["score"]):
                best, best_state = entry, copy.deepcopy(model.state_dict())
            # Evaluation time is not training time; keep the cap about training.
            began += time.monotonic() - t0

    if best_state is not None:
        model.load_state_dict(best_state)
        log["chosen"] = best
    else:
        last = log["evals"][-1] if log["evals"] and log["evals"][-1]["step"] == log["steps_done"] else {}
        log["chosen"] = {**last, "step": log["steps_done"], "note": "no eligible checkpoint; the last one is shipped"}
    log["chosen_no_thinking"] = {k: round(v, 4) for k, v in evaluate(model, tasks, False, torch).items()}
    save(model, Path(args.out), log, torch)
    print("chosen", json.dumps(log["chosen"]), flush=True)
    print("no-thinking", json.dumps(log["chosen_no_thinking"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
