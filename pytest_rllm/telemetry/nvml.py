"""GPU memory from NVML (pynvml, from the nvidia-ml-py package), where a GPU exists.

pynvml is imported only when sampling is asked for. Without a driver or GPU the
sampler reports itself unavailable, with the reason, and records nothing.
"""

from __future__ import annotations

import os


class NvmlMemory:
    def __init__(self, gpu_ids: list[int] | None = None) -> None:
        self.available = False
        self.reason = ""
        self._handles: list[object] = []
        self._nvml = None
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"unavailable: {type(exc).__name__}: {exc}".rstrip(": ")
            return
        if count == 0:
            self.reason = "unavailable: NVML sees no GPU"
            return
        ids = gpu_ids if gpu_ids is not None else _visible_ids(count)
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in ids if i < count]
        self._nvml = pynvml
        self.available = bool(self._handles)
        self.reason = "" if self.available else f"unavailable: none of GPUs {ids} exist (NVML sees {count})"

    def used_bytes(self) -> float | None:
        """Memory used on this worker's GPUs, summed (every process, as NVML counts it)."""
        if not self.available:
            return None
        return float(sum(self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles))

    def total_bytes(self) -> float | None:
        if not self.available:
            return None
        return float(sum(self._nvml.nvmlDeviceGetMemoryInfo(h).total for h in self._handles))

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


def _visible_ids(count: int) -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        try:
            return [int(x) for x in visible.split(",") if x.strip()]
        except ValueError:
            pass  # UUIDs: fall back to all devices
    return list(range(count))


def gpu_names_and_driver(gpu_ids: list[int] | None = None) -> tuple[list[str], str | None]:
    """(names of the engine's GPUs, driver version) from NVML; ([], None) without a driver or GPU.

    `gpu_ids`: the GPUs the engine was given; default the visible ones (CUDA_VISIBLE_DEVICES).
    """
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no GPU
        return [], None
    try:
        count = pynvml.nvmlDeviceGetCount()
        ids = gpu_ids if gpu_ids is not None else _visible_ids(count)
        names = []
        for i in ids:
            if i < count:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                names.append(name.decode() if isinstance(name, bytes) else str(name))
        driver = pynvml.nvmlSystemGetDriverVersion()
        return names, (driver.decode() if isinstance(driver, bytes) else str(driver)) if names else None
    except Exception:
        return [], None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
