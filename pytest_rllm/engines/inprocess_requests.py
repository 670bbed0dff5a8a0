"""The event-loop side of the in-process engine: a client whose requests the step thread serves.

Each request is a RequestStream the step thread fills; once it finishes, its
record is filled from the engine core's per-step token counts (or, in the
fallback, from per-step DELTA outputs), as a streaming reader would have seen it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_rllm.client import SamplingOptions
from pytest_rllm.reasoning import ThinkSplitter, split_thinking
from pytest_rllm.records import Item, RequestRecord, StreamedText

if TYPE_CHECKING:
    from pytest_rllm.engines.inprocess import InProcessEngine


_TIMED_OUT = object()  # set by a request's watchdog at its deadline
_CANCELLED = object()  # the run's timeout cancelled the request


class RequestStream:
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
        self.loop.call_soon_threadsafe(fail_stream, self.done, error)


def finish_streams(futures: list[asyncio.Future[Any]]) -> None:
    """Runs on the event loop: the requests of one engine step that finished."""
    for future in futures:
        if not future.done():
            future.set_result(None)


def fail_stream(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_result(error)


class InProcessClient:
    def __init__(self, engine: InProcessEngine, options: SamplingOptions) -> None:
        self.engine = engine
        self.options = options
        self._tokenizer: Any = None
        self._params: Any = None
        self._prompts: dict[tuple[str, bool], list[int]] = {}

    async def __aenter__(self) -> InProcessClient:
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
        stream = RequestStream(loop)
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
            # A model without thinking markers answers in plain text: nothing to split off.
            thinks = record.thinking and self.engine.split_thinking
            if self.engine._new_tokens is not None:
                _fill_from_counts(record, stream, self._decode, thinks)
            else:
                _fill_from_outputs(record, stream, thinks)

    def _decode(self, token_ids: list[int]) -> str:
        # As vLLM's detokenizer does by default (SamplingParams.skip_special_tokens).
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)


def _fill_from_counts(record: RequestRecord, stream: RequestStream, decode: Callable[[list[int]], str], thinks: bool) -> None:
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
    record.reasoning_text, record.answer_text = split_thinking(completion.text, thinks)
    step = first_visible_step([count for _, count in counts], token_ids, thinks, decode)
    if step is not None:
        record.t_first_visible = counts[step][0]


def first_visible_step(counts: list[int], token_ids: list[int], thinking: bool, decode: Callable[[list[int]], str]) -> int | None:
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


def _fill_from_outputs(record: RequestRecord, stream: RequestStream, thinks: bool) -> None:
    """Stamps and text from per-step DELTA outputs (the fallback), as a streaming reader sees them."""
    splitter = ThinkSplitter(thinking=thinks)
    text = StreamedText(record)
    for now, out in list(stream.outputs):  # a copy: see _fill_from_counts
        completion = out.outputs[0]
        if completion.token_ids:
            record.output_tokens += len(completion.token_ids)
            text.token_arrived(now)
        text.add(now, *splitter.feed(completion.text))
        if out.finished:
            record.finish_reason = completion.finish_reason
            record.t_done = now
            break
    text.close(*splitter.flush())
