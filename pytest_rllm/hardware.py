"""Which machine this is (the key baselines are stored under), and which GPUs a worker owns.

Timings only compare on the same hardware, so baselines live under a key that
names it: ``gpu-<N>x<name>`` where NVML sees GPUs, else ``cpu-<model>-<isa>``.
The key is deterministic (no host name, no serial numbers) and safe as a folder
name. pynvml is imported only inside detect_hardware_key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_rllm.settings import RllmSettings

# Best first: the vector ISA decides which vLLM CPU kernels run (and e.g. whether
# an FP8 KV cache is supported), so it belongs in the key.
_ISA_FLAGS = (
    ("amx", ("amx_tile", "amx_bf16", "amx_int8")),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
    ("sve", ("sve",)),
    ("neon", ("asimd", "neon")),
)
_MAX_NAME = 100

# The flags of a CPU that computes in bf16 natively, per architecture. Without them vLLM's CPU
# kernels convert bf16 around each operation, slower than float32 throughout (benchmarks/RESULTS.md).
_NATIVE_BF16_FLAGS = {"x86": ("avx512_bf16", "amx_bf16"), "arm": ("bf16",)}


def _lower_slug(text: str) -> str:
    """'Intel(R) Xeon(R) Platinum 8480+' -> 'intel-xeon-platinum-8480'."""
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = re.sub(r"\bcpu @ .*$", "", text)  # the clock speed is marketing, not hardware identity
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text or "unknown"


def _parse_cpuinfo(cpuinfo: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text; "" and {} where absent."""
    model = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if not model and name in ("model name", "hardware", "cpu model", "processor") and not value.strip().isdigit():
            model = value.strip()
        elif not flags and name in ("flags", "features"):
            flags = set(value.split())
    return model, flags


def native_bf16(cpuinfo: str) -> tuple[list[str], tuple[str, ...]] | None:
    """(this CPU's native-bf16 flags, the flags looked for) from /proc/cpuinfo text; None where it lists no flags."""
    _, flags = _parse_cpuinfo(cpuinfo)
    if not flags:
        return None
    wanted = _NATIVE_BF16_FLAGS["arm" if "asimd" in flags else "x86"]
    return [name for name in wanted if name in flags], wanted


def cpu_model_name(cpuinfo: str, machine: str | None = None) -> str:
    """The CPU's model name as /proc/cpuinfo gives it ("Intel(R) Xeon(R) Platinum 8480+"), else the platform's."""
    model, _ = _parse_cpuinfo(cpuinfo)
    return " ".join(model.split()) or platform.processor() or machine or platform.machine() or "unknown"


def cpu_hardware_key(cpuinfo: str, machine: str | None = None) -> str:
    """The CPU key from /proc/cpuinfo text: cpu-<model-slug>-<best isa>."""
    model, flags = _parse_cpuinfo(cpuinfo)
    if not model:
        model = platform.processor() or machine or platform.machine() or "unknown"
    isa = next((label for label, names in _ISA_FLAGS if any(n in flags for n in names)), None)
    if isa is None:
        isa = _lower_slug(machine or platform.machine() or "base")
    return f"cpu-{_lower_slug(model)}-{isa}"


def gpu_hardware_key(names: list[str]) -> str:
    """gpu-<N>x<name-slug>; mixed GPUs list each kind, sorted: gpu-1xa100-1xh100."""
    if not names:
        raise ValueError("gpu_hardware_key needs at least one GPU name")
    counts: dict[str, int] = {}
    for name in names:
        slug_ = _lower_slug(name.decode() if isinstance(name, bytes) else name)
        counts[slug_] = counts.get(slug_, 0) + 1
    return "gpu-" + "-".join(f"{n}x{s}" for s, n in sorted(counts.items()))


def _gpu_names() -> list[str]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no GPU: the CPU key applies
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except Exception:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.lru_cache(maxsize=None)
def detect_hardware_key(gpus_per_worker: int | None = None) -> str:
    """gpu-<N>x<name> from NVML, else cpu-<model>-<isa>.

    With `gpus_per_worker` (what each xdist worker's engine uses, i.e.
    --rllm-gpus-per-worker), N is that count rather than every GPU in the box,
    because an engine on 1 of 8 H100s performs like one on a 1-H100 machine.
    """
    names = _gpu_names()
    if names:
        if gpus_per_worker is not None:
            names = names[: max(1, min(gpus_per_worker, len(names)))]
        return gpu_hardware_key(names)
    return cpu_hardware_key(_cpuinfo_text(), platform.machine())


def hardware_key_for(settings: RllmSettings) -> str:
    """The key this session's baselines are stored under: --rllm-hardware-key, else the detected one."""
    return settings.hardware_key or detect_hardware_key(settings.gpus_per_worker)


# --------------------------------------------------------------------------- names


def safe_name(text: str, *, keep_case: bool = True) -> str:
    """A filesystem-safe name for any text (all platforms); injective where it must change text.

    Characters outside [A-Za-z0-9._=+,@[]-] become '_'. Whenever the text had to
    change (or is too long), a short hash of the original is appended, so
    'test[a/b]' and 'test[a_b]' never share a file.
    """
    original = text
    text = text if keep_case else text.lower()
    cleaned = re.sub(r"[^A-Za-z0-9._=+,@\[\]-]", "_", text)
    cleaned = cleaned.lstrip(".") or "_"  # no hidden files, no '.' or '..'
    if cleaned.upper().split(".")[0] in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    if cleaned != text or len(cleaned) > _MAX_NAME:
        digest = hashlib.sha1(original.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[: _MAX_NAME - 9]}-{digest}"
    return cleaned


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def slug(model: str) -> str:
    """Model -> folder name: 'org/name' -> 'org--name'; a local folder -> its folder name."""
    text = str(model).strip()
    is_hub_id = (
        text.count("/") == 1
        and not text.startswith(("/", ".", "~"))
        and not os.path.isdir(os.path.expanduser(text))
    )
    if is_hub_id:
        org, name = text.split("/")
        return safe_name(f"{org}--{name}")
    if "/" in text or os.sep in text:
        text = os.path.basename(os.path.normpath(os.path.expanduser(text))) or text
    return safe_name(text)


# --------------------------------------------------------------------------- GPUs per worker


def worker_index(worker_id: str | None) -> int:
    """'gw3' -> 3; 'master', '' or None (no xdist) -> 0."""
    if not worker_id or worker_id == "master":
        return 0
    match = re.fullmatch(r"gw(\d+)", worker_id.strip())
    if not match:
        raise ValueError(f"unexpected xdist worker id {worker_id!r}; expected 'gw<N>' or 'master'")
    return int(match.group(1))


def gpu_ids_for_worker(worker_id: str | None, gpus_per_worker: int, total: int) -> list[int]:
    """GPUs [i*k, i*k+k) for xdist worker gw<i>; [0, k) without xdist."""
    if gpus_per_worker < 1:
        raise ValueError(f"--rllm-gpus-per-worker must be at least 1, got {gpus_per_worker}")
    index = worker_index(worker_id)
    if total < 1:
        raise ValueError(
            "no GPU is visible to this process (check the driver and CUDA_VISIBLE_DEVICES), "
            "so no GPU can be given to xdist worker " + (worker_id or "master")
        )
    first = index * gpus_per_worker
    if first + gpus_per_worker > total:
        workers = total // gpus_per_worker
        fix = (
            f"run with -n {workers} or fewer" if workers >= 1 else "run without -n"
        ) + (f", or lower --rllm-gpus-per-worker (now {gpus_per_worker})" if gpus_per_worker > 1 else "")
        raise ValueError(
            f"xdist worker {worker_id or 'master'} needs GPUs {first}..{first + gpus_per_worker - 1} "
            f"(--rllm-gpus-per-worker={gpus_per_worker}) but only {total} GPU(s) are visible; {fix}"
        )
    return list(range(first, first + gpus_per_worker))


def worker_gpu_ids(gpus_per_worker: int) -> list[int] | None:
    """The GPUs this xdist worker owns (see gpu_ids_for_worker); None where NVML sees no GPU."""
    from pytest_rllm.telemetry.nvml import NvmlMemory

    probe = NvmlMemory([])
    if probe._nvml is None:
        return None
    count = probe._nvml.nvmlDeviceGetCount()
    probe.close()
    return gpu_ids_for_worker(os.environ.get("PYTEST_XDIST_WORKER", "master"), gpus_per_worker, count)
