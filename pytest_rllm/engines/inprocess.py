"""vLLM's engine API in this process: no HTTP, no server, per-step token timing.

A `vllm.LLM` is built with the engine core in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0: it starts several times faster on CPU).
One thread steps the engine; requests are added between steps at the times the
arrival process chose, and each step's new tokens are stamped when the step
returns, which is when a streaming server would emit them.

How the per-step tokens are read: the engine core's outputs carry each
request's new token ids per step, which `LLMEngine.step()` then turns into
`RequestOutput`s. Asking for those per step (RequestOutputKind.DELTA) cost
throughput against `LLM.generate` (benchmarks/RESULTS.md), which asks
for the final output only: vLLM builds a CompletionOutput and a RequestOutput
per request per step on the stepping thread. So the requests are sent with
FINAL_ONLY, as `LLM.generate` sends them, and the step thread reads the core's
per-step token counts where `step()` fetches them (`_observe_new_tokens`); the
text comes whole with the final output, and the step of the first answer token
is found by decoding prefixes of the output ids. Where a vLLM release lacks
that hook the engine falls back to DELTA outputs (`info()["token_source"]`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
import itertools
import os
import queue
import threading
import time
from typing import Any

from pytest_rllm.client import SamplingOptions
from pytest_rllm.engines import platform
from pytest_rllm.engines.base import (
    EngineContext,
    EngineDied,
    EngineStartError,
    EngineUnsupported,
    exception_reason,
    is_unsupported,
)
from pytest_rllm.engines.identity import EngineIdentity, local_identity, with_module_commit
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.engines.inprocess_requests import InProcessClient, RequestStream, finish_streams
from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, series


class InProcessEngine(EngineContext):
    base_url = None  # no HTTP: requests go to the engine object
    # A registry read costs 0.14 ms of this process, and the plain reference run lasts
    # 0.17 s here: at 0.1 s it caught one KV sample, at 0.02 s 9-11 (benchmarks/RESULTS.md).
    metrics_interval = 0.02

    def __init__(self, spec: EngineSpec, *, core_token_counts: bool = True, split_thinking: bool = True) -> None:
        """`core_token_counts=False`: per-step DELTA outputs instead (the fallback; tests compare the two).

        `split_thinking=False`: the model has no thinking markers, so its text is all answer.
        """
        self.spec = spec
        self.split_thinking = split_thinking
        self.core_token_counts = core_token_counts
        self.served_model = spec.model
        self.llm: Any = None
        self.startup_seconds: float | None = None
        self._submit: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ids = itertools.count()
        self._wake = threading.Event()
        # (engine core request id, new token count) of the step being taken; None: DELTA outputs.
        self._new_tokens: list[tuple[str, int]] | None = None

    def start(self) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        for key, value in platform.cpu_engine_env({}).items():
            os.environ.setdefault(key, value)
        t0 = time.perf_counter()
        _guard_llvmlite_for_kernel_scan()
        try:
            from vllm import LLM

            kwargs = self.spec.llm_kwargs()
            kwargs.setdefault("disable_log_stats", False)  # LLM.get_metrics() needs the stat loggers
            self.llm = LLM(model=self.spec.model, **kwargs)
        except Exception as exc:  # vLLM raises many types; all mean "did not start"
            reason = exception_reason(exc)  # the whole message: pydantic puts the field and sentence after line 1
            message = f"in-process vLLM for preset {self.spec.preset!r} (model {self.spec.model}) failed to start.\nEngine's reason: {reason}"
            if self.spec.preset != "baseline" and is_unsupported(reason):
                raise EngineUnsupported(message, reason=reason) from exc
            raise EngineStartError(message, reason=reason) from exc
        self.startup_seconds = time.perf_counter() - t0
        self._new_tokens = _observe_new_tokens(self.llm.llm_engine) if self.core_token_counts else None
        self._thread = threading.Thread(target=self._step_loop, name="rllm-engine-steps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._submit.put(None)
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            del llm
            import gc

            gc.collect()

    # -- the step loop (engine thread) --------------------------------------
    def _step_loop(self) -> None:
        engine = self.llm.llm_engine
        new_tokens = self._new_tokens
        streams: dict[str, RequestStream] = {}  # by our request id
        by_core_id: dict[str, RequestStream] = {}  # by the engine core's id for it
        try:
            while True:
                while True:
                    try:
                        job = self._submit.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        # Stopped with requests in flight: end them now rather than at their timeout.
                        stopped = RuntimeError("the in-process engine was stopped")
                        for stream in streams.values():
                            stream.end(stopped)
                        return
                    if job[0] == "abort":
                        # Aborts go through the step thread: the engine is not thread-safe.
                        stream = streams.pop(job[1], None)
                        if stream is not None:
                            by_core_id.pop(stream.core_id, None)
                        engine.abort_request([job[1]])
                        continue
                    _, request_id, prompt_ids, params, stream = job
                    streams[request_id] = stream
                    core_id = engine.add_request(request_id, {"prompt_token_ids": prompt_ids}, params)
                    # vLLM 0.32 returns the id the core knows the request by (ours plus a suffix).
                    stream.core_id = core_id if isinstance(core_id, str) else request_id
                    by_core_id[stream.core_id] = stream
                if not engine.has_unfinished_requests():
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                if new_tokens is not None:
                    new_tokens.clear()  # anything another caller's steps left (LLM.generate on this engine)
                outputs = engine.step()
                now = time.perf_counter()
                if new_tokens is not None:
                    for core_id, count in new_tokens:
                        if count:
                            stream = by_core_id.get(core_id)
                            if stream is not None:
                                stream.counts.append((now, count))
                # The event loop is woken only when a request finishes, once per
                # loop per step. Waking every request's task at every step (a
                # queue put, a task switch, its bookkeeping) cost the event loop
                # CPU taken from the engine's OpenMP team on the same cores and
                # from this thread's share of the GIL.
                finished: dict[asyncio.AbstractEventLoop, list[asyncio.Future[Any]]] = {}
                for out in outputs:
                    stream = streams.get(out.request_id)
                    if stream is None:
                        continue
                    if new_tokens is None:
                        stream.outputs.append((now, out))
                    if out.finished:
                        stream.final, stream.t_done = out, now
                        del streams[out.request_id]
                        by_core_id.pop(stream.core_id, None)
                        finished.setdefault(stream.loop, []).append(stream.done)
                for loop, futures in finished.items():
                    loop.call_soon_threadsafe(finish_streams, futures)
        except BaseException as exc:  # surface to every waiting request
            self._error = exc
            for stream in streams.values():
                stream.end(exc)

    # -- the harness side (event loop) --------------------------------------
    def client(self, options: SamplingOptions) -> InProcessClient:
        return InProcessClient(self, options)

    def exited(self) -> bool:
        return False  # no process of its own: check_alive looks at the step thread

    def process_groups(self) -> list[int] | None:
        return []  # it runs in this process: all of the host's other CPU time is foreign

    def check_alive(self) -> None:
        if self.llm is None or self._thread is None or not self._thread.is_alive() or self._error is not None:
            raise EngineDied(f"in-process vLLM for preset {self.spec.preset!r} stopped: {self._error!r}")

    def metrics_text(self, only: Collection[str] | None = None) -> str | None:
        """The engine's metrics as Prometheus text (`only`: just these exposition names), for tests and benchmarks."""
        if self.llm is None:
            return None
        try:
            from prometheus_client import REGISTRY, generate_latest

            return generate_latest(REGISTRY.restricted_registry(sorted(only)) if only else REGISTRY).decode()
        except Exception:
            return None

    def samples(self) -> dict[str, float] | None:
        """The telemetry's series, read from the prometheus_client registry vLLM's in-process stat logger fills.

        A restricted view: collecting all of vLLM's metrics, histograms included,
        takes many times the CPU of SAMPLE_NAMES from the engine being measured.
        """
        if self.llm is None:
            return None
        try:
            from prometheus_client import REGISTRY

            registry = REGISTRY.restricted_registry(sorted(SAMPLE_NAMES))
            return series(sample for family in registry.collect() for sample in family.samples)
        except Exception:
            return None

    def identity(self) -> EngineIdentity:
        """The installed vLLM; vllm is imported here already, so its module may name the commit the files did not."""
        import sys

        return with_module_commit(local_identity(), sys.modules.get("vllm"))

    def info(self) -> dict[str, Any]:
        return {
            "kind": "inprocess",
            "engine": platform.engine_version_text(),
            "identity": self.identity().to_dict(),
            "preset": self.spec.preset,
            "model": self.spec.model,
            "startup_seconds": self.startup_seconds,
            "token_source": "engine-core" if self._new_tokens is not None else "delta-outputs",
            "split_thinking": self.split_thinking,
        }


def _observe_new_tokens(engine: Any) -> list[tuple[str, int]] | None:
    """Have `engine.step()` leave each request's new-token count of the step in a list; None if it cannot.

    `LLMEngine.step()` fetches the step's `EngineCoreOutputs` with
    `engine_core.get_output()`; each `EngineCoreOutput` names the request
    (the core's id) and its `new_token_ids`. Wrapping that call on this
    engine's own client object reads them with one list append per request
    per step, where DELTA outputs cost a RequestOutput each. Checked against
    the DELTA outputs of the same requests in tests/test_engines.py.
    """
    core = getattr(engine, "engine_core", None)
    get_output = getattr(core, "get_output", None)
    try:
        from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs

        fields = set(getattr(EngineCoreOutput, "__struct_fields__", ()))
        if not callable(get_output) or not {"request_id", "new_token_ids"} <= fields:
            return None
        if "outputs" not in set(getattr(EngineCoreOutputs, "__struct_fields__", ())):
            return None
    except ImportError:
        return None
    seen: list[tuple[str, int]] = []

    def get_output_observed(*args: Any, **kwargs: Any) -> Any:
        outputs = get_output(*args, **kwargs)
        seen.extend([(out.request_id, len(out.new_token_ids)) for out in outputs.outputs])
        return outputs

    core.get_output = get_output_observed
    return seen


def _guard_llvmlite_for_kernel_scan() -> None:
    """Let a second in-process engine start after numba was loaded (by the ngram proposer).

    vLLM 0.32's CPU platform registers kernel overrides at each worker start
    by scanning every loaded module's attributes and calling vars() on them.
    llvmlite's `ffi.lib` (loaded with numba) has __slots__ and a __getattr__
    that wraps any name, "__dict__" included, so vars() returns a function
    wrapper and the scan fails with "AttributeError: '_lib_fn_wrapper' object
    has no attribute 'get'": every in-process engine started after spec-ngram
    failed so. A server engine is a fresh process each time and never meets it.
    Seeding the wrapper's name table with an empty "__dict__" makes vars()
    return {} for it; llvmlite never looks that name up itself.
    """
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    table = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})
