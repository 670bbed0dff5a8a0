"""Streaming OpenAI chat client: one request in, one filled RequestRecord out.

It reads the server-sent events of /v1/chat/completions and stamps, on
time.perf_counter(), the send, the first token, the first *visible* token
(answer content, as opposed to reasoning) and every chunk that carried text.

Reasoning arrives as `delta.reasoning` (vLLM 0.32) or `delta.reasoning_content`
(SGLang, older vLLM). A server started without a reasoning parser streams the
thinking as content; `reasoning.ThinkSplitter` then splits it at the end-of-thinking
marker, so TTFVT stays the time to the first token *after* the thinking.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from pytest_rllm.reasoning import ThinkSplitter
from pytest_rllm.records import Item, RequestRecord, StreamedText

# Statuses where nothing was generated and the server asks us to come back:
# retrying is safe. A 500 or a broken stream is not retried: it may recur or
# have cost generation, and the record must show it.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int
    temperature: float
    top_p: float
    request_timeout: float
    max_retries: int = 3
    retry_backoff: float = 0.5  # seconds, doubled per retry, with jitter


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """The harness's event loop. "auto": uvloop where it is installed (vLLM depends on it), else asyncio's.

    uvloop's per-request cost on loopback is lower (the HTTP reads and writes
    are the client's main CPU cost), which is what raises the rate the load
    generator can keep to its schedule (benchmarks/load_ceiling.py prints both).
    Its timers have 1 ms resolution; the driver's spin lead covers that.
    """
    if kind not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop kind must be auto, uvloop or asyncio, got {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def chat_body(model: str, item: Item, options: SamplingOptions, *, thinking: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": item.prompt}],
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if not thinking:
        # Qwen3-style templates (and the embedded model) switch thinking off
        # here; vLLM and SGLang pass it to the chat template.
        body["chat_template_kwargs"] = {"enable_thinking": False}
    return body


class ChatClient:
    """Sends chat requests over one shared aiohttp session (connection reuse, no per-request setup)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        options: SamplingOptions,
        *,
        api_key: str | None = None,
        split_thinking: bool | None = None,
    ) -> None:
        # split_thinking: True when the server has no reasoning parser, False when
        # it has one, None (external endpoints) to split only when the stream's
        # content starts before any reasoning field appears.
        self.split_thinking = split_thinking
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.options = options
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: Any = None

    async def __aenter__(self) -> ChatClient:
        import aiohttp

        # No connection cap: the arrival process, not the pool, decides concurrency.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, read_bufsize=1 << 16)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, item: Item, record: RequestRecord) -> None:
        """Fills `record` in place. Never raises for request failures: they go to record.error."""
        import aiohttp

        body = json.dumps(chat_body(self.model, item, self.options, thinking=record.thinking)).encode()
        timeout = aiohttp.ClientTimeout(total=self.options.request_timeout)
        backoff = self.options.retry_backoff
        record.t_sent = time.perf_counter()
        for attempt in range(self.options.max_retries + 1):
            try:
                async with self._session.post(self.url, data=body, headers=self._headers, timeout=timeout) as resp:
                    if resp.status != 200:
                        text = (await resp.text())[:300]
                        if resp.status in RETRYABLE_STATUSES and attempt < self.options.max_retries:
                            record.retries += 1
                            await asyncio.sleep(backoff * (1 + random.random()))
                            backoff *= 2
                            continue
                        record.error = f"HTTP {resp.status}: {text.strip() or resp.reason}"
                        record.t_done = None
                        return
                    await self._read_stream(resp, record)
                    return
            except (aiohttp.ClientConnectionError, ConnectionError) as exc:
                # Refused before any byte of a response: nothing was generated, safe to retry.
                if record.t_first_token is None and attempt < self.options.max_retries and _before_response(exc):
                    record.retries += 1
                    await asyncio.sleep(backoff * (1 + random.random()))
                    backoff *= 2
                    continue
                record.error = f"connection error: {type(exc).__name__}: {exc}"
                return
            except aiohttp.ClientPayloadError as exc:
                # The stream broke after the response began (the server died mid-answer): not
                # retried, since generation had started; without this the error escaped the
                # record and cancelled the whole run.
                record.error = f"stream broken: {type(exc).__name__}: {exc}"
                return
            except asyncio.TimeoutError:
                record.error = f"timeout: no complete answer within --rllm-request-timeout={self.options.request_timeout:g}s"
                return

    async def _read_stream(self, resp: Any, record: RequestRecord) -> None:
        splitter: ThinkSplitter | None = None
        text = StreamedText(record)
        saw_done = False
        async for raw in resp.content:
            now = time.perf_counter()
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                saw_done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                record.error = f"malformed server-sent event: {data[:120]!r}"
                break
            if "error" in chunk and not chunk.get("choices"):
                record.error = f"server error in stream: {json.dumps(chunk['error'])[:300]}"
                break
            usage = chunk.get("usage")
            if usage:
                record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                record.output_tokens = int(usage.get("completion_tokens") or 0)
                details = usage.get("completion_tokens_details") or {}
                if details.get("reasoning_tokens"):
                    record.reasoning_tokens = int(details["reasoning_tokens"])
            choices = chunk.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
            content = delta.get("content") or ""
            if (
                content
                and splitter is None
                and record.thinking
                and self.split_thinking is not False
                and not reasoning
                and not text.reasoning
                and not text.answer
            ):
                # Content before any reasoning field: the server splits nothing, so we do.
                splitter = ThinkSplitter(thinking=True)
            if splitter is not None and content:
                reasoning, content = splitter.feed(content)
                if not reasoning and not content:
                    # Text held back while it may be the marker: it still is a token arrival.
                    text.token_arrived(now)
                    continue
            if reasoning or content:
                text.token_arrived(now)
            text.add(now, reasoning, content)
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        text.close(*(splitter.flush() if splitter is not None else ("", "")))
        if record.error is None:
            if not saw_done and record.finish_reason is None:
                record.error = "stream ended before the server finished the response"
            else:
                record.t_done = time.perf_counter()


def _before_response(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError))
