"""Checks the NVML sampler on a real GPU: allocate known amounts with torch, see them in the timeline.

    python benchmarks/nvml_check.py      (needs a CUDA GPU, torch and nvidia-ml-py)

Prints the sampled memory steps next to the allocated sizes; exits 1 if a step
is off by more than 5% (or 64 MiB), 2 when there is no GPU.
"""

from __future__ import annotations

import sys
import time

from pytest_rllm.telemetry.nvml import NvmlMemory
from pytest_rllm.telemetry.sampler import TelemetrySampler

GIB = 1 << 30


def main() -> int:
    import torch

    nvml = NvmlMemory([0])
    print("nvml:", "available" if nvml.available else nvml.reason)
    if not nvml.available or not torch.cuda.is_available():
        return 2
    torch.cuda.init()
    torch.empty(1, device="cuda")  # the CUDA context costs memory too: take it before the baseline
    torch.cuda.synchronize()
    sampler = TelemetrySampler(lambda: None, 0.05, nvml)
    sampler.start()
    marks = []
    held = []
    for gib in (1, 2, 4):
        time.sleep(0.5)
        marks.append((time.perf_counter(), gib))
        held.append(torch.empty(gib * GIB, dtype=torch.uint8, device="cuda"))
        torch.cuda.synchronize()
    time.sleep(0.5)
    del held
    torch.cuda.empty_cache()
    time.sleep(0.5)
    timeline = sampler.stop()["gpu_memory_used_bytes"]
    nvml.close()

    def level(t0: float, t1: float) -> float:
        values = [v for t, v in timeline if t0 <= t <= t1]
        return sum(values) / len(values)

    base = level(marks[0][0] - 0.4, marks[0][0] - 0.05)
    failures = 0
    total = 0
    for i, (t, gib) in enumerate(marks):
        total += gib
        end = marks[i + 1][0] - 0.05 if i + 1 < len(marks) else t + 0.45
        seen = level(t + 0.2, end) - base
        ok = abs(seen - total * GIB) <= max(0.05 * total * GIB, 64 << 20)
        failures += not ok
        print(f"allocated {total} GiB -> NVML shows +{seen / GIB:.3f} GiB {'ok' if ok else 'OFF'}")
    after = timeline[-1][1] - base
    print(f"after free: +{after / GIB:.3f} GiB; {len(timeline)} samples")
    failures += abs(after) > (256 << 20)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
