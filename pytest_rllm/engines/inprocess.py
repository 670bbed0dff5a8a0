"""vLLM's engine API in this process: no HTTP, no server, per-step token timing.

A `vllm.LLM` is built with the engine core in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0: start-up ~3 s instead of 25-37 s on CPU).
One thread steps the engine; requests are added between steps at the times the
arrival process chose, and each step's outputs are stamped when the step
returns, which is when a streaming server would emit them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
import itertools
import os
import queue
import threading
import time
from typing import Any

from pytest_rllm.client import SamplingOptions, ThinkSplitter
from pytest_rllm.engines import platform
from pytest_rllm.engines.base import EngineDied, EngineStartError, EngineUnsupported, is_unsupported
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.records import Item, RequestRecord


class InProcessEngine:
    base_url = None

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.served_model = spec.model
        self.llm: Any = None
        self.startup_seconds: float | None = None
        self._submit: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ids = itertools.count()
        self._wake = threading.Event()

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
            reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            message = f"in-process vLLM for preset {self.spec.preset!r} (model {self.spec.model}) failed to start.\nEngine's reason: {reason}"
            if self.spec.preset != "baseline" and is_unsupported(reason):
                raise EngineUnsupported(message, reason=reason) from exc
            raise EngineStartError(message, reason=reason) from exc
        self.startup_seconds = time.perf_counter() - t0
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
        sinks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
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
                        for loop, q in sinks.values():
                            loop.call_soon_threadsafe(q.put_nowait, (time.perf_counter(), stopped))
                        return
                    if job[0] == "abort":
                        # Aborts go through the step thread: the engine is not thread-safe.
                        sinks.pop(job[1], None)
                        engine.abort_request([job[1]])
                        continue
                    _, request_id, prompt_ids, params, sink = job
                    sinks[request_id] = sink
                    engine.add_request(request_id, {"prompt_token_ids": prompt_ids}, params)
                if not engine.has_unfinished_requests():
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                outputs = engine.step()
                now = time.perf_counter()
                # One wake-up of each event loop per step, not one per request:
                # every call_soon_threadsafe writes the loop's self-pipe, and the
                # loop's work competes with this thread for the GIL.
                batches: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
                for out in outputs:
                    sink = sinks.get(out.request_id)
                    if sink is None:
                        continue
                    loop, q = sink
                    batches.setdefault(loop, []).append((q, (now, out)))
                    if out.finished:
                        sinks.pop(out.request_id, None)
                for loop, batch in batches.items():
                    loop.call_soon_threadsafe(_deliver, batch)
        except BaseException as exc:  # surface to every waiting request
            self._error = exc
            for loop, q in sinks.values():
                loop.call_soon_threadsafe(q.put_nowait, (time.perf_counter(), exc))

    # -- the harness side (event loop) --------------------------------------
    def client(self, options: SamplingOptions) -> _InProcessClient:
        return _InProcessClient(self, options)

    def check_alive(self) -> None:
        if self.llm is None or self._thread is None or not self._thread.is_alive() or self._error is not None:
            raise EngineDied(f"in-process vLLM for preset {self.spec.preset!r} stopped: {self._error!r}")

    def metrics_text(self, only: Collection[str] | None = None) -> str | None:
        """The engine's metrics as Prometheus text, so one parser serves every engine kind.

        `only`: just these exposition names, collected through the Prometheus
        registry's restricted view (vLLM's in-process stat logger fills the
        process's registry). All of vLLM's metrics, histograms included, took
        ~2.4 ms a scrape of this process's CPU, 10 times a second, from the
        engine being measured; the telemetry's SAMPLE_NAMES take 0.14 ms.
        """
        if self.llm is None:
            return None
        try:
            from prometheus_client import REGISTRY

            names = frozenset(only) if only else None
            registry = REGISTRY.restricted_registry(sorted(names)) if names else REGISTRY
            lines = []
            for family in registry.collect():
                for sample in family.samples:
                    if (sample.name in names) if names else sample.name.startswith("vllm:"):
                        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                        lines.append(f"{sample.name}{{{labels}}} {float(sample.value)}")
        except Exception:
            return None
        return "\n".join(lines) + "\n"

    def info(self) -> dict[str, Any]:
        return {
            "kind": "inprocess",
            "engine": platform.engine_version_text(),
            "preset": self.spec.preset,
            "model": self.spec.model,
            "startup_seconds": self.startup_seconds,
        }


_TIMED_OUT = object()  # posted by a request's watchdog at its deadline


def _deliver(batch: list[tuple[Any, ...]]) -> None:
    """Runs on the event loop: hands one engine step's outputs to their requests."""
    for q, item in batch:
        q.put_nowait(item)


class _InProcessClient:
    def __init__(self, engine: InProcessEngine, options: SamplingOptions) -> None:
        self.engine = engine
        self.options = options
        self._tokenizer: Any = None
        self._params: Any = None

    async def __aenter__(self) -> _InProcessClient:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._tokenizer = self.engine.llm.get_tokenizer()
        self._params = SamplingParams(
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            output_kind=RequestOutputKind.DELTA,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _prompt_ids(self, item: Item, thinking: bool) -> list[int]:
        messages = [{"role": "user", "content": item.prompt}]
        kwargs = {} if thinking else {"enable_thinking": False}
        ids = self._tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **kwargs)
        # transformers 5 returns a BatchEncoding (a Mapping), older releases a list.
        return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)

    async def send(self, item: Item, record: RequestRecord) -> None:
        engine = self.engine
        if engine._error is not None:
            record.error = f"engine stopped: {engine._error!r}"
            return
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Any] = asyncio.Queue()
        request_id = f"rllm-{next(engine._ids)}"
        prompt_ids = self._prompt_ids(item, record.thinking)
        record.prompt_tokens = len(prompt_ids)
        splitter = ThinkSplitter(thinking=record.thinking)
        reasoning_parts: list[str] = []
        answer_parts: list[str] = []
        record.t_sent = time.perf_counter()
        engine._submit.put(("add", request_id, prompt_ids, self._params, (loop, q)))
        engine._wake.set()
        deadline = record.t_sent + self.options.request_timeout
        # One watchdog timer per request, re-armed each second, instead of a
        # wait_for (a new task and timer) per token: it ends the wait at the
        # deadline, or when the step thread died and no output will ever come.
        watchdog: list[asyncio.TimerHandle] = []

        def watch() -> None:
            now = time.perf_counter()
            thread = engine._thread
            if engine._error is not None or thread is None or not thread.is_alive():
                q.put_nowait((now, engine._error or RuntimeError("the engine's step thread is not running")))
            elif now >= deadline:
                q.put_nowait((now, _TIMED_OUT))
            else:
                watchdog[:] = [loop.call_later(min(1.0, deadline - now), watch)]

        watchdog.append(loop.call_later(min(1.0, max(0.0, deadline - time.perf_counter())), watch))
        try:
            while True:
                now, out = await q.get()
                if out is _TIMED_OUT:
                    raise asyncio.TimeoutError
                if isinstance(out, BaseException):
                    record.error = f"engine error: {type(out).__name__}: {out}"
                    return
                completion = out.outputs[0]
                if completion.token_ids:
                    record.output_tokens += len(completion.token_ids)
                    if record.t_first_token is None:
                        record.t_first_token = now
                    record.token_times.append(now)
                reasoning, answer = splitter.feed(completion.text)
                if reasoning:
                    reasoning_parts.append(reasoning)
                if answer:
                    if record.t_first_visible is None and answer.strip():
                        record.t_first_visible = now
                    answer_parts.append(answer)
                if out.finished:
                    record.finish_reason = completion.finish_reason
                    record.t_done = now
                    break
        except asyncio.TimeoutError:
            record.error = f"timeout: no complete answer within --rllm-request-timeout={self.options.request_timeout:g}s"
            engine._submit.put(("abort", request_id))
            engine._wake.set()
        finally:
            for handle in watchdog:
                handle.cancel()
            reasoning, answer = splitter.flush()
            record.reasoning_text = "".join(reasoning_parts) + reasoning
            record.answer_text = "".join(answer_parts) + answer


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
