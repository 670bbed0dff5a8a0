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
from collections.abc import Callable, Collection, Iterable, Mapping
import itertools
import os
import queue
import threading
import time
from typing import Any

from pytest_rllm.client import SamplingOptions
from pytest_rllm.engines import platform
from pytest_rllm.engines.base import EngineDied, EngineStartError, EngineUnsupported, exception_reason, is_unsupported
from pytest_rllm.engines.identity import EngineIdentity, local_identity, with_module_commit
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.reasoning import ThinkSplitter, split_thinking
from pytest_rllm.records import Item, RequestRecord
from pytest_rllm.telemetry.prometheus import SAMPLE_NAMES, series


class InProcessEngine:
    base_url = None

    def __init__(self, spec: EngineSpec, *, core_token_counts: bool = True) -> None:
        """`core_token_counts=False`: per-step DELTA outputs instead (the fallback; tests compare the two)."""
        self.spec = spec
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
        streams: dict[str, _Stream] = {}  # by our request id
        by_core_id: dict[str, _Stream] = {}  # by the engine core's id for it
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
                    loop.call_soon_threadsafe(_finish, futures)
        except BaseException as exc:  # surface to every waiting request
            self._error = exc
            for stream in streams.values():
                stream.end(exc)

    # -- the harness side (event loop) --------------------------------------
    def client(self, options: SamplingOptions) -> _InProcessClient:
        return _InProcessClient(self, options)

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
        }


_TIMED_OUT = object()  # set by a request's watchdog at its deadline
_CANCELLED = object()  # the run's timeout cancelled the request


class _Stream:
    """One request in flight: what the step thread collected; `done` resolves on the event loop.

    `counts`: (perf_counter() when the step returned, new tokens in it), from
    the engine core. `outputs`: (the same stamp, DELTA RequestOutput), in the
    fallback mode instead. `final`: the finished RequestOutput. The event loop
    reads them once the request finished, or a copy at its deadline (the step
    thread may still append until it takes the abort).
    """

    __slots__ = ("loop", "done", "counts", "outputs", "final", "t_done", "core_id")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: asyncio.Future[Any] = loop.create_future()
        self.counts: list[tuple[float, int]] = []
        self.outputs: list[tuple[float, Any]] = []
        self.final: Any = None
        self.t_done: float | None = None
        self.core_id = ""

    def end(self, error: BaseException) -> None:
        """From the step thread: end the wait with `error` (engine stopped or failed)."""
        self.loop.call_soon_threadsafe(_fail, self.done, error)


def _finish(futures: list[asyncio.Future[Any]]) -> None:
    """Runs on the event loop: the requests of one engine step that finished."""
    for future in futures:
        if not future.done():
            future.set_result(None)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_result(error)


class _InProcessClient:
    def __init__(self, engine: InProcessEngine, options: SamplingOptions) -> None:
        self.engine = engine
        self.options = options
        self._tokenizer: Any = None
        self._params: Any = None
        self._prompts: dict[tuple[str, bool], list[int]] = {}

    async def __aenter__(self) -> _InProcessClient:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._tokenizer = self.engine.llm.get_tokenizer()
        self._params = SamplingParams(
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
            # FINAL_ONLY as LLM.generate asks, unless the engine core's token counts cannot be read.
            output_kind=RequestOutputKind.FINAL_ONLY if self.engine._new_tokens is not None else RequestOutputKind.DELTA,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._prompts.clear()

    def prepare(self, jobs: Iterable[tuple[Item, bool]]) -> None:
        """Apply the chat template to every (item, thinking) before the schedule starts.

        Offline `LLM.generate` is handed token ids; tokenizing at send time put
        Python work per request on the event loop while the engine ran,
        and a batch's first step could start before the rest were tokenized.
        A server tokenizes on arrival, but in-process mode measures the engine,
        not an API server.
        """
        for item, thinking in jobs:
            key = (item.prompt, thinking)
            if key not in self._prompts:
                self._prompts[key] = self._prompt_ids(item, thinking)

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
        stream = _Stream(loop)
        request_id = f"rllm-{next(engine._ids)}"
        prompt_ids = self._prompts.get((item.prompt, record.thinking)) or self._prompt_ids(item, record.thinking)
        record.prompt_tokens = len(prompt_ids)
        record.t_sent = time.perf_counter()
        engine._submit.put(("add", request_id, prompt_ids, self._params, stream))
        engine._wake.set()
        deadline = record.t_sent + self.options.request_timeout
        # One watchdog timer per request, re-armed each second: it ends the
        # wait at the deadline, or when the step thread died and no output
        # will ever come.
        watchdog: list[asyncio.TimerHandle] = []

        def watch() -> None:
            if stream.done.done():
                return
            now = time.perf_counter()
            thread = engine._thread
            if engine._error is not None or thread is None or not thread.is_alive():
                stream.done.set_result(engine._error or RuntimeError("the engine's step thread is not running"))
            elif now >= deadline:
                stream.done.set_result(_TIMED_OUT)
            else:
                watchdog[:] = [loop.call_later(min(1.0, deadline - now), watch)]

        watchdog.append(loop.call_later(min(1.0, max(0.0, deadline - time.perf_counter())), watch))
        outcome: Any = None
        try:
            outcome = await stream.done
        except asyncio.CancelledError:
            # The run timed out (the session names that): free the engine's slot, keep what came.
            outcome = _CANCELLED
            raise
        finally:
            for handle in watchdog:
                handle.cancel()
            if outcome is _TIMED_OUT or outcome is _CANCELLED:
                engine._submit.put(("abort", request_id))
                engine._wake.set()
            if outcome is _TIMED_OUT:
                record.error = f"timeout: no complete answer within --rllm-request-timeout={self.options.request_timeout:g}s"
            elif isinstance(outcome, BaseException):
                record.error = f"engine error: {type(outcome).__name__}: {outcome}"
            if self.engine._new_tokens is not None:
                _fill_from_counts(record, stream, self._decode)
            else:
                _fill_from_outputs(record, stream)

    def _decode(self, token_ids: list[int]) -> str:
        # As vLLM's detokenizer does by default (SamplingParams.skip_special_tokens).
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)


def _fill_from_counts(record: RequestRecord, stream: _Stream, decode: Callable[[list[int]], str]) -> None:
    """Stamps from the engine core's per-step token counts; text and ids from the final output."""
    counts = list(stream.counts)  # a copy: until the step thread takes an abort it may still append
    if counts:
        record.t_first_token = counts[0][0]
        record.token_times = [now for now, _ in counts]
    record.output_tokens = sum(count for _, count in counts)
    final = stream.final
    if final is None:
        return  # timed out, cancelled or failed: stamps only, no text
    completion = final.outputs[0]
    token_ids = list(completion.token_ids)
    record.output_tokens = len(token_ids)
    record.finish_reason = completion.finish_reason
    record.t_done = stream.t_done
    record.reasoning_text, record.answer_text = split_thinking(completion.text, record.thinking)
    step = _first_visible_step([count for _, count in counts], token_ids, record.thinking, decode)
    if step is not None:
        record.t_first_visible = counts[step][0]


def _first_visible_step(counts: list[int], token_ids: list[int], thinking: bool, decode: Callable[[list[int]], str]) -> int | None:
    """The first step after which the streamed answer holds a non-space character, or None.

    What a stream's reader sees after step j is the text of the first
    counts[0] + ... + counts[j] tokens; that it holds a visible answer is
    monotone in j, so a binary search over steps needs ~log2(steps) decodes
    instead of one per step. A prefix ending inside a multi-byte character
    decodes to U+FFFD there, which a streaming detokenizer holds back.
    """
    bounds = list(itertools.accumulate(counts))

    def visible(step: int) -> bool:
        text = decode(token_ids[: bounds[step]]).rstrip("\ufffd")
        return bool(split_thinking(text, thinking)[1].strip())

    if not bounds or not visible(len(bounds) - 1):
        return None
    low, high = 0, len(bounds) - 1
    while low < high:
        middle = (low + high) // 2
        if visible(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _fill_from_outputs(record: RequestRecord, stream: _Stream) -> None:
    """Stamps and text from per-step DELTA outputs (the fallback), as a streaming reader sees them."""
    splitter = ThinkSplitter(thinking=record.thinking)
    reasoning_parts: list[str] = []
    answer_parts: list[str] = []
    for now, out in list(stream.outputs):  # a copy: see _fill_from_counts
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
    reasoning, answer = splitter.flush()
    record.reasoning_text = "".join(reasoning_parts) + reasoning
    record.answer_text = "".join(answer_parts) + answer


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
