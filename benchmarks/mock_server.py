"""A mock OpenAI-compatible streaming chat server with known timings, on loopback only.

It answers POST /v1/chat/completions like vLLM 0.32 with a reasoning parser:
a role chunk, `delta.reasoning` chunks, `delta.content` chunks, a final chunk
with finish_reason, a usage chunk with `choices: []`, then `data: [DONE]`.
Its time to first token and inter-token delay are set on the command line,
so a client's measurements can be checked against known values.

Also: GET /health, GET /v1/models, GET /metrics (Prometheus text, vLLM names),
GET /stats (JSON: every request's receive time on time.perf_counter(), which
on Linux is CLOCK_MONOTONIC and so comparable across processes on one host,
and, by request number, the TTFT it really served: from the request's arrival
to the write of its first token, which overshoots the configured TTFT by the
event loop's timer delay).

    python benchmarks/mock_server.py --port 0 --ttft 0.02 --itl 0.005 --max-seconds 120

prints ``READY <port>`` on stdout once it listens, and exits by itself after
--max-seconds (so a crashed parent never leaves it behind), on SIGTERM, or
when its stdin closes (--exit-on-stdin-eof).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

HOST = "127.0.0.1"  # loopback only, always


@dataclass
class MockConfig:
    ttft: float = 0.02  # seconds from request to the first reasoning token
    itl: float = 0.005  # seconds between tokens
    reasoning_tokens: int = 8
    answer_tokens: int = 4
    answer: str = "42"  # the answer text's last token; the rest is filler
    # vLLM sends the role chunk when the first output arrives, i.e. together
    # with the first token; a client that stamps TTFT on the first chunk (vLLM's
    # benchmark) needs that to be measured fairly. False: role chunk at once.
    role_with_first_token: bool = False
    # Append " #N" (this request's number) to the answer, so a client's record
    # can be matched to the mock's own stamps for that request (/stats).
    tag_answers: bool = False


class MockState:
    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.running = 0
        self.requests = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.received: list[float] = []  # perf_counter() at each request's arrival
        # Request number -> seconds from its arrival to the first token's write:
        # the TTFT this mock really served (its sleeps overshoot the configured one).
        self.served_ttft: dict[int, float] = {}


STATE = web.AppKey("state", MockState)


def _chunk(rid: str, created: int, model: str, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _tokens(config: MockConfig, number: int) -> tuple[list[str], list[str]]:
    reasoning = [f" step{i}" for i in range(config.reasoning_tokens)]
    last = f" Answer: {config.answer}" + (f" #{number}" if config.tag_answers else "")
    answer = [" filler"] * max(0, config.answer_tokens - 1) + ([last] if config.answer_tokens else [])
    return reasoning, answer


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def chat(request: web.Request) -> web.StreamResponse:
    state: MockState = request.app[STATE]
    t0 = time.perf_counter()
    state.received.append(t0)
    state.requests += 1
    number = state.requests
    try:
        payload = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
    config = state.config
    model = str(payload.get("model", "mock"))
    max_tokens = int(payload.get("max_tokens") or payload.get("max_completion_tokens") or 1 << 30)
    reasoning, answer = _tokens(config, number)
    pieces = [("reasoning", t) for t in reasoning] + [("content", t) for t in answer]
    finish = "stop"
    if len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], "length"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces), "total_tokens": prompt_tokens + len(pieces)}
    rid, created = f"chatcmpl-mock-{number}", int(time.time())
    state.running += 1
    state.prompt_tokens += prompt_tokens
    try:
        if not payload.get("stream"):
            # Non-streaming: the whole reply after the whole generation time.
            await _sleep_until(t0 + config.ttft + config.itl * max(0, len(pieces) - 1))
            state.generation_tokens += len(pieces)
            message = {"role": "assistant", "reasoning": "".join(t for k, t in pieces if k == "reasoning") or None,
                       "content": "".join(t for k, t in pieces if k == "content")}
            return web.json_response({"id": rid, "object": "chat.completion", "created": created, "model": model,
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        role = _chunk(rid, created, model, {"role": "assistant", "content": ""})
        if not config.role_with_first_token:
            await response.write(role)
            role = b""
        # Deadlines from t0, not sleeps chained one after another, so the
        # server's own scheduling delay does not pile up over a long reply.
        for k, (kind, text) in enumerate(pieces):
            await _sleep_until(t0 + config.ttft + k * config.itl)
            await response.write(role + _chunk(rid, created, model, {kind: text}))
            if k == 0:
                state.served_ttft[number] = time.perf_counter() - t0
            role = b""
            state.generation_tokens += 1
        await response.write(_chunk(rid, created, model, {}, finish))
        options = payload.get("stream_options") or {}
        if options.get("include_usage", True):
            await response.write(_chunk(rid, created, model, None, usage=usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    finally:
        state.running -= 1


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "mock"}]})


async def metrics(request: web.Request) -> web.Response:
    state: MockState = request.app[STATE]
    lines = [
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{model_name="mock"}} {state.running}',
        "# TYPE vllm:num_requests_waiting gauge",
        'vllm:num_requests_waiting{model_name="mock"} 0',
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f'vllm:kv_cache_usage_perc{{model_name="mock"}} {min(1.0, state.running / 256):.6f}',
        "# TYPE vllm:prompt_tokens_total counter",
        f'vllm:prompt_tokens_total{{model_name="mock"}} {state.prompt_tokens}',
        "# TYPE vllm:generation_tokens_total counter",
        f'vllm:generation_tokens_total{{model_name="mock"}} {state.generation_tokens}',
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{model_name="mock",finished_reason="stop"}} {state.requests}',
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def stats(request: web.Request) -> web.Response:
    state: MockState = request.app[STATE]
    return web.json_response({"requests": state.requests, "received": state.received,
                              "served_ttft": {str(k): v for k, v in state.served_ttft.items()}})


def create_app(config: MockConfig | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = MockState(config or MockConfig())
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    return app


@contextlib.asynccontextmanager
async def serve(config: MockConfig | None = None, port: int = 0) -> AsyncIterator[str]:
    """Run the mock in the current event loop (for tests); yields its base URL."""
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    try:
        sockets = site._server.sockets  # type: ignore[union-attr]
        yield f"http://{HOST}:{sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def _main(args: argparse.Namespace) -> None:
    config = MockConfig(ttft=args.ttft, itl=args.itl, reasoning_tokens=args.reasoning_tokens, answer_tokens=args.answer_tokens,
                        role_with_first_token=args.role_with_first_token, tag_answers=args.tag_answers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        # The parent holds our stdin: its end (even a crash) closes it.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def watch() -> None:
            while await reader.read(1024):
                pass
            stop.set()

        loop.create_task(watch())
    async with serve(config, args.port) as url:
        print(f"READY {url.rsplit(':', 1)[1]}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.max_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    parser.add_argument("--ttft", type=float, default=0.02)
    parser.add_argument("--itl", type=float, default=0.005)
    parser.add_argument("--reasoning-tokens", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=4)
    parser.add_argument("--role-with-first-token", action="store_true",
                        help="send the role chunk with the first token, as vLLM does (default: at once)")
    parser.add_argument("--tag-answers", action="store_true",
                        help="append ' #N' (the request number) to each answer, to match a client's records to /stats")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="exit after this long, whatever happens")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if args.uvloop and uvloop is not None:
        uvloop.run(_main(args))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
