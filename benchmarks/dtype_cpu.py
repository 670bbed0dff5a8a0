"""float32 against bfloat16 on this CPU: output tok/s of the same batch, side by side in one run.

    python benchmarks/dtype_cpu.py [--model DIR] [--batch 64] [--max-tokens 192] [--rounds 3] [--emulate-avx2]

The default model is the embedded one (pytest_rllm/pocket/model). Each dtype gets
its own in-process engine (one at a time), an unmeasured warm-up batch, then
`--batches` timed batches of `--batch` prompts that all run to `--max-tokens`
(ignore_eos), so both dtypes produce the same number of tokens. The engines start
in the order float32, bfloat16, bfloat16, float32, ... (`--rounds` pairs), so a
drift of the host's speed falls on both. Printed: each engine's batches, the
bfloat16/float32 ratio of each round (its two engines' medians), and the ratio of
the medians over all batches: above 1, bf16 is faster here.

`--emulate-avx2` runs an AVX2-only CPU's code paths on a newer one: torch and
oneDNN are capped at AVX2 and vLLM loads its AVX2 kernel library, as it does on
a CPU without AVX-512 (the ISA, not the micro-architecture, is emulated).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import engine_env, header, load_average, model_dir  # noqa: E402

DTYPES = ("float32", "bfloat16")


def emulate_avx2() -> None:
    """Before torch and vLLM load: the AVX2 code paths of torch, oneDNN and vLLM's CPU kernels."""
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    import torch

    # vLLM's CpuPlatform.import_kernels and its kernel choices ask these three.
    for name in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        setattr(torch.cpu, name, lambda: False)


def kernel_library() -> str:
    """Which of vLLM's CPU kernel libraries this process loaded (_C, _C_AVX512 or _C_AVX2)."""
    with open("/proc/self/maps") as maps:
        names = {Path(line.split()[-1]).name for line in maps if "/vllm/_C" in line}
    return ", ".join(sorted(n.split(".")[0] for n in names)) or "none"


def conversations(n: int) -> list[list[dict[str, str]]]:
    """n chat requests: the procedural data set's questions (what the suites send), every domain and level."""
    from pytest_rllm.workloads import procedural

    cells = [(d, lvl) for d in procedural.DOMAINS for lvl in procedural.DIFFICULTIES]
    tasks = [procedural.generate(d, lvl, n // len(cells) + 1, seed=0) for d, lvl in cells]
    flat = [task for round_ in zip(*tasks) for task in round_][:n]
    return [[{"role": "user", "content": t.question}] for t in flat]


def measure(model: str, dtype: str, batch: list[list[dict[str, str]]], *, max_tokens: int, batches: int) -> list[float]:
    """tok/s of each timed batch on a fresh in-process engine in `dtype`."""
    from vllm import LLM, SamplingParams

    from pytest_rllm.engines.spec import EMBEDDED_PROFILE
    from pytest_rllm.pocket import MODEL_DIR

    extra = EMBEDDED_PROFILE if Path(model).resolve() == Path(MODEL_DIR).resolve() else {}
    llm = LLM(model=model, dtype=dtype, seed=0, enforce_eager=True, max_model_len=max(1024, 2 * max_tokens),
              disable_log_stats=True, **extra)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.6, top_p=0.95, ignore_eos=True)
    try:
        llm.chat(batch[: max(1, len(batch) // 4)], params, use_tqdm=False)  # warm-up, not measured
        rates = []
        for _ in range(batches):
            t0 = time.perf_counter()
            outputs = llm.chat(batch, params, use_tqdm=False)
            elapsed = time.perf_counter() - t0
            rates.append(sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed)
        return rates
    finally:
        del llm
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded pocket model)")
    parser.add_argument("--batch", type=int, default=64, help="prompts per timed batch")
    parser.add_argument("--max-tokens", type=int, default=192, help="output tokens per prompt (every prompt runs to it)")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per engine")
    parser.add_argument("--rounds", type=int, default=3, help="float32/bfloat16 pairs, started in ABBA order")
    parser.add_argument("--emulate-avx2", action="store_true", help="run an AVX2-only CPU's code paths")
    args = parser.parse_args(argv)

    engine_env()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in process: the kernel library is this process's
    if args.emulate_avx2:
        emulate_avx2()
    from pytest_rllm.engines.spec import choose_dtype
    from pytest_rllm.hardware import _cpuinfo_text, native_bf16

    header("dtype on CPU: float32 vs bfloat16" + (" (AVX2 emulated)" if args.emulate_avx2 else ""))
    model = args.model or model_dir()
    found = native_bf16(_cpuinfo_text())
    print(f"model: {model}")
    print(f"native bf16 flags: {found[0] if found else 'unknown'}; auto here: "
          f"{choose_dtype('auto', (), cpu_build=True, cpuinfo=_cpuinfo_text()).text}")
    batch = conversations(args.batch)
    order = [DTYPES[(i + (i // 2)) % 2] for i in range(2 * args.rounds)]  # f32, bf16, bf16, f32, ...
    rates: dict[str, list[float]] = {d: [] for d in DTYPES}
    round_ratios = []
    for i, dtype in enumerate(order):
        got = measure(model, dtype, batch, max_tokens=args.max_tokens, batches=args.batches)
        rates[dtype] += got
        print(f"{dtype:<9} tok/s: {', '.join(f'{r:.0f}' for r in got)}  (kernels: {kernel_library()}; {load_average()})",
              flush=True)
        if i % 2 == 1:
            pair = {order[i - 1]: statistics.median(rates[order[i - 1]][-args.batches:]), dtype: statistics.median(got)}
            round_ratios.append(pair["bfloat16"] / pair["float32"])
    medians = {d: statistics.median(v) for d, v in rates.items()}
    print(f"bfloat16/float32 per round: {', '.join(f'{r:.2f}x' for r in round_ratios)}")
    print(f"median tok/s: float32 {medians['float32']:.0f}, bfloat16 {medians['bfloat16']:.0f}; "
          f"bfloat16/float32 = {medians['bfloat16'] / medians['float32']:.2f}x")
    print(f"at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
