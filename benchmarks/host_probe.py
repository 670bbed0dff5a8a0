"""Which host yardstick follows the engine's own speed drift? (issue 14: cross-session gating on CPU hosts)

On the 2-core CPU hosts an unchanged engine's throughput drifts 1.8x within an
hour while the single-core interpreter probe (telemetry.host.python_speed)
moves 1.13x (benchmarks/RESULTS.md), so a baseline from another session can
only be held to a 2x band. A yardstick that the engine does not run, but that
slows when the host slows the engine, would let a gate divide the drift out.

This runs the baseline main workload on the embedded model in repeated trials,
restarting the engine every --trials-per-engine trials, and around every trial
(engine idle) times candidate yardsticks:

  py1     the single-core interpreter loop (what runs today)
  py2     the same loop in two processes at once (both cores, no shared work)
  mem     a 64 MiB numpy copy (memory bandwidth, one core)
  gather  a random gather from 64 MiB (memory latency, one core)
  blas    small float32 matmuls through numpy's BLAS on every core (thread sync)
  torch   small matmuls in torch on every core, in the engine's dtype (the engine's kernels)
  pipe    round trips of one byte between two processes over pipes (cross-process wake-ups,
          what the API server, the engine core and the client do for every streamed step)
  wake    short sleeps per second (how late the host wakes a sleeping thread)

It writes one JSON line per trial and, at the end, for each yardstick the rank
correlation with output tok/s and the spread (max/min, and 90th/10th
percentile) of tok/s divided by the yardstick, against the raw spread. A
yardstick helps only if dividing by it narrows the spread.

    python benchmarks/host_probe.py --engines 4 --trials-per-engine 10 --out /tmp/probe.jsonl
    python benchmarks/host_probe.py --analyse /tmp/probe.jsonl [/tmp/probe2.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import engine_env, load_average, machine  # noqa: E402

PROBE_SECONDS = 0.15


def _timed_rate(step: Callable[[], float], seconds: float = PROBE_SECONDS) -> float:
    """Work units per second of `step` (which returns the units it did), repeated for `seconds`."""
    step()  # first call: allocation, thread start
    done = 0.0
    t0 = time.perf_counter()
    while True:
        done += step()
        now = time.perf_counter()
        if now - t0 >= seconds:
            return done / (now - t0)


def probe_py1() -> float:
    from pytest_rllm.telemetry.host import python_speed

    return python_speed(PROBE_SECONDS)


def probe_py2() -> float:
    """Sum of two concurrent interpreter loops, one per forked process."""
    from pytest_rllm.telemetry.host import python_speed

    readers = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, repr(python_speed(PROBE_SECONDS)).encode())
            os._exit(0)
        os.close(w)
        readers.append((pid, r))
    total = 0.0
    for pid, r in readers:
        with os.fdopen(r) as f:
            total += float(f.read())
        os.waitpid(pid, 0)
    return total


def probe_mem() -> float:
    import numpy as np

    src = np.ones(8 * 1024 * 1024, dtype=np.float64)  # 64 MiB
    dst = np.empty_like(src)

    def step() -> float:
        np.copyto(dst, src)
        return 2 * src.nbytes / 1e9  # read + write

    return _timed_rate(step)


def probe_gather() -> float:
    import numpy as np

    table = np.arange(16 * 1024 * 1024, dtype=np.int32)  # 64 MiB
    index = np.random.default_rng(0).integers(0, table.size, 1 << 20)

    def step() -> float:
        table.take(index)
        return index.size / 1e6

    return _timed_rate(step)


def probe_blas() -> float:
    import numpy as np

    a = np.ones((64, 512), dtype=np.float32)
    b = np.ones((512, 512), dtype=np.float32)

    def step() -> float:
        for _ in range(20):
            a @ b
        return 20 * 2 * 64 * 512 * 512 / 1e9

    return _timed_rate(step)


_TORCH: dict[str, Any] = {}


def probe_torch() -> float:
    import torch

    if not _TORCH:
        torch.set_num_threads(os.cpu_count() or 1)
        dtype = torch.bfloat16 if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else torch.float32
        _TORCH.update(a=torch.ones(64, 512, dtype=dtype), b=torch.ones(512, 512, dtype=dtype))
    a, b = _TORCH["a"], _TORCH["b"]

    def step() -> float:
        for _ in range(20):
            torch.mm(a, b)
        return 20 * 2 * 64 * 512 * 512 / 1e9

    return _timed_rate(step)


def probe_pipe() -> float:
    """Thousands of one-byte round trips per second between this process and a forked echo."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        while os.read(to_child_r, 1) == b"x":
            os.write(to_parent_w, b"x")
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)

    def step() -> float:
        for _ in range(50):
            os.write(to_child_w, b"x")
            os.read(to_parent_r, 1)
        return 50 / 1e3

    try:
        return _timed_rate(step)
    finally:
        os.write(to_child_w, b"q")
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)


def probe_wake() -> float:
    """Thousands of 100-microsecond sleeps per second: below 10 when the host wakes threads late."""

    def step() -> float:
        for _ in range(10):
            time.sleep(1e-4)
        return 10 / 1e3

    return _timed_rate(step)


PROBES: dict[str, Callable[[], float]] = {
    "py1": probe_py1, "py2": probe_py2, "mem": probe_mem, "gather": probe_gather,
    "blas": probe_blas, "torch": probe_torch, "pipe": probe_pipe, "wake": probe_wake,
}


def run_probes() -> dict[str, float]:
    out = {name: probe() for name, probe in PROBES.items()}
    time.sleep(0.5)  # BLAS and OpenMP threads spin a while after their last task
    return out


def measure(args: argparse.Namespace) -> None:
    engine_env()
    from pytest_rllm.session import RllmSession
    from pytest_rllm.settings import RllmSettings

    settings = RllmSettings(num_prompts=args.num_prompts)
    print(machine(), "|", load_average(), flush=True)
    out = open(args.out, "a")
    for engine_index in range(args.engines):
        session = RllmSession(settings, log_dir=Path(tempfile.mkdtemp(prefix="rllm-probe-")))
        try:
            session.measure("baseline", "main", trials=1)  # start + warm-up + one unrecorded run
            for trial in range(args.trials_per_engine):
                before = run_probes()
                run = session.measure("baseline", "main", trials=1)
                after = run_probes()
                s = run.summary()
                row = {
                    "t": time.time(), "engine": engine_index, "trial": trial,
                    "output_throughput": s["output_throughput"],
                    "e2e_p50": s.get("e2e_p50"), "ttfvt_p50": s.get("ttfvt_p50"),
                    "makespan": run.t_end - run.t_start,
                    "held_open": bool(_held_open(run)),
                    "foreign_cpu_share": run.host.get("foreign_cpu_share"),
                    "steal_share": run.host.get("steal_share"),
                    **{f"{k}": math.sqrt(before[k] * after[k]) for k in PROBES},
                    **{f"{k}_before": before[k] for k in PROBES},
                    **{f"{k}_after": after[k] for k in PROBES},
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"engine {engine_index} trial {trial}: {row['output_throughput']:.0f} tok/s "
                      f"foreign {row['foreign_cpu_share'] or 0:.1%} "
                      + " ".join(f"{k}={row[k]:.3g}" for k in PROBES), flush=True)
        finally:
            session.close()
    out.close()


def _held_open(run: Any) -> str | None:
    from pytest_rllm.checks.serving import held_open_by

    return held_open_by(run)


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else float("nan")


def _spread(values: list[float]) -> tuple[float, float]:
    """(max/min, 90th/10th percentile) of positive values."""
    v = sorted(values)
    def pct(q: float) -> float:
        k = q * (len(v) - 1)
        lo = math.floor(k)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (k - lo)
    return v[-1] / v[0], pct(0.9) / pct(0.1)


def analyse(paths: list[str]) -> None:
    rows = [{**json.loads(line), "file": p} for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    quiet = [r for r in rows if not r["held_open"] and (r["foreign_cpu_share"] or 0) <= 0.10]
    print(f"{len(rows)} trials, {len(quiet)} quiet and not held open by a runaway request")
    tps = [r["output_throughput"] for r in quiet]
    full, inner = _spread(tps)
    print(f"raw output tok/s: {min(tps):.0f}-{max(tps):.0f}, spread max/min x{full:.2f}, p90/p10 x{inner:.2f}")
    print("yardstick | its own spread p90/p10 | rank corr. with tok/s | tok/s / yardstick: max/min, p90/p10")
    names = [n for n in PROBES if all(n in r for r in quiet)]
    for name in names:
        ys = [r[name] for r in quiet]
        own = _spread(ys)[1]
        corr = _spearman(ys, tps)
        normalised = [t / y for t, y in zip(tps, ys)]
        nf, ni = _spread(normalised)
        print(f"{name:9} | x{own:.2f} | {corr:+.2f} | x{nf:.2f}, x{ni:.2f}")
    # Across engine starts, as a baseline from another session is: the median of each start's trials.
    starts = sorted({(r["file"], r["engine"]) for r in quiet})
    medians = []
    for start in starts:
        trials = [r for r in quiet if (r["file"], r["engine"]) == start]
        medians.append({k: statistics.median(r[k] for r in trials) for k in ("output_throughput", *names)})
    tps = [m["output_throughput"] for m in medians]
    print(f"{len(starts)} engine starts; median tok/s of each: max/min x{max(tps) / min(tps):.2f}")
    for name in names:
        normalised = [m["output_throughput"] / m[name] for m in medians]
        print(f"  divided by {name}'s median: max/min x{max(normalised) / min(normalised):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=4, help="engine starts, one after another")
    parser.add_argument("--trials-per-engine", type=int, default=10)
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--out", default="/tmp/host_probe.jsonl")
    parser.add_argument("--analyse", nargs="+", metavar="JSONL", help="only analyse earlier output")
    args = parser.parse_args()
    if args.analyse:
        analyse(args.analyse)
        return
    measure(args)
    analyse([args.out])


if __name__ == "__main__":
    main()
