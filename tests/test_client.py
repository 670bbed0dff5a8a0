"""The streaming client against a scripted OpenAI server on loopback (no engine: pure protocol)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from pytest_rllm.client import ChatClient, SamplingOptions, ThinkSplitter
from pytest_rllm.records import Item, RequestRecord

ITEM = Item(id="t1", domain="addition", difficulty=1.0, prompt="What is 1+1?", reference="2", grader="exact")
OPTIONS = SamplingOptions(max_tokens=64, temperature=0.6, top_p=0.95, request_timeout=5.0, retry_backoff=0.01)


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(reasoning=None, content=None, field="reasoning", finish=None):
    delta = {}
    if reasoning is not None:
        delta[field] = reasoning
    if content is not None:
        delta["content"] = content
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 3}}}


async def serve(script, run):
    """Start an aiohttp app whose /v1/chat/completions plays `script(request, response)`."""
    seen = []

    async def handler(request):
        seen.append(await request.json())
        return await script(request, len(seen))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        return await run(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


def streaming(events, delay=0.0):
    async def script(request, n):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await asyncio.sleep(delay)
            await resp.write(sse(event) if isinstance(event, dict) else event)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return script


def send_one(script, *, thinking=True, split=False, options=OPTIONS, api_key=None):
    record = RequestRecord.for_item(ITEM, thinking=thinking)

    async def run(url, seen):
        async with ChatClient(url, "m", options, split_thinking=split, api_key=api_key) as client:
            await client.send(ITEM, record)
        return seen

    seen = asyncio.run(serve(script, run))
    return record, seen


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_and_answer_are_kept_apart_and_timed(field):
    events = [
        chunk(content=None, reasoning=None) | {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]},
        chunk("1+1", field=field),
        chunk(" is 2", field=field),
        chunk(content="Answer: 2"),
        chunk(content="", finish="stop"),
        USAGE,
    ]
    record, seen = send_one(streaming(events, delay=0.02))
    assert record.error is None and record.finish_reason == "stop"
    assert record.reasoning_text == "1+1 is 2" and record.answer_text == "Answer: 2"
    assert record.t_sent < record.t_first_token < record.t_first_visible <= record.t_done
    # The first visible token came two reasoning chunks (>= 2 x 20 ms) after the first token.
    assert record.t_first_visible - record.t_first_token >= 0.03
    assert len(record.token_times) == 3
    assert (record.prompt_tokens, record.output_tokens, record.reasoning_tokens) == (11, 5, 3)
    body = seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and "chat_template_kwargs" not in body


def test_thinking_off_asks_the_template_to_skip_it():
    record, seen = send_one(streaming([chunk(content="Answer: 2", finish="stop"), USAGE]), thinking=False)
    assert seen[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert record.answer_text == "Answer: 2" and record.reasoning_text == ""


def test_without_a_server_parser_the_client_splits_at_the_marker():
    # The marker is cut across chunks: no fragment of it may leak into either text.
    pieces = ["Let me", " add.</th", "ink>\n\nAns", "wer: 2"]
    events = [chunk(content=p) for p in pieces] + [chunk(content="", finish="stop"), USAGE]
    record, _ = send_one(streaming(events, delay=0.01), split=True)
    assert record.reasoning_text == "Let me add."
    assert record.answer_text == "Answer: 2"
    assert record.t_first_visible > record.t_first_token


def test_answer_cut_inside_reasoning_has_no_visible_token():
    events = [chunk("thinking and thinking"), chunk(" more", finish="length"), USAGE]
    record, _ = send_one(streaming(events))
    assert record.finish_reason == "length" and record.answer_text == "" and record.t_first_visible is None
    assert record.ok  # the request completed; grading decides it is wrong


def test_server_error_is_recorded_not_retried():
    calls = []

    async def script(request, n):
        calls.append(n)
        return web.Response(status=500, text="boom")

    record, _ = send_one(script)
    assert record.error == "HTTP 500: boom" and record.retries == 0 and len(calls) == 1
    assert not record.ok


def test_rate_limited_requests_are_retried_and_counted():
    ok = streaming([chunk(content="Answer: 2", finish="stop"), USAGE])

    async def script(request, n):
        if n <= 2:
            return web.Response(status=429, text="slow down")
        return await ok(request, n)

    record, seen = send_one(script)
    assert record.error is None and record.retries == 2 and len(seen) == 3


def test_unauthorised_names_the_status():
    async def script(request, n):
        assert request.headers["Authorization"] == "Bearer s3cret"
        return web.Response(status=401, text="bad key")

    record, _ = send_one(script, api_key="s3cret")
    assert record.error.startswith("HTTP 401") and "s3cret" not in record.error


def test_request_timeout_is_recorded():
    fast = SamplingOptions(max_tokens=8, temperature=0.0, top_p=1.0, request_timeout=0.3)
    record, _ = send_one(streaming([chunk("slow")] * 5, delay=0.2), options=fast)
    assert record.error.startswith("timeout") and record.t_done is None


def test_a_stream_cut_before_the_end_is_an_error():
    async def script(request, n):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chunk("half a thought")))
        return resp  # no finish_reason, no [DONE]

    record, _ = send_one(script)
    assert "stream ended" in record.error


def test_connection_refused_is_retried_then_recorded():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = RequestRecord.for_item(ITEM)

    async def run():
        async with ChatClient(f"http://127.0.0.1:{port}", "m", OPTIONS) as client:
            await client.send(ITEM, record)

    asyncio.run(run())
    assert record.error.startswith("connection error") and record.retries == OPTIONS.max_retries


@pytest.mark.parametrize(
    "pieces, thinking, reasoning, answer",
    [
        (["a</think>b"], True, "a", "b"),
        (["<think>a", "</", "think>", "\nb"], True, "a", "b"),
        (["no marker at all"], True, "no marker at all", ""),
        (["plain answer"], False, "", "plain answer"),
        (["x <", "/notthink> y</think>z"], True, "x </notthink> y", "z"),
    ],
)
def test_think_splitter(pieces, thinking, reasoning, answer):
    splitter = ThinkSplitter(thinking)
    got_r, got_a = "", ""
    for p in pieces:
        r, a = splitter.feed(p)
        got_r, got_a = got_r + r, got_a + a
    r, a = splitter.flush()
    assert (got_r + r, got_a + a) == (reasoning, answer)


def test_the_harness_loop_is_uvloop_where_installed_and_asyncio_on_request():
    from pytest_rllm.client import new_event_loop

    uvloop = pytest.importorskip("uvloop")
    for kind, expected in (("auto", uvloop.Loop), ("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(kind)
        try:
            assert isinstance(loop, expected)
            assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
        finally:
            loop.close()
    with pytest.raises(ValueError, match="event loop kind must be auto, uvloop or asyncio, got 'trio'"):
        new_event_loop("trio")


# The in-process engine finds the step of the first answer token by decoding
# prefixes of the output ids (engines/inprocess.py); here a "token" is a piece
# of text and decoding joins them.
@pytest.mark.parametrize(
    ("steps", "thinking", "expected"),
    [
        ([["<think>a"], ["b</th"], ["ink>"], ["\n\n"], ["Answer"], [": 4"]], True, 4),  # marker split across steps
        ([["r", "</think>", "\n", "A"], ["B"]], True, 0),  # several tokens in one step (spec decoding)
        ([["reasoning"], [" only"]], True, None),  # cut inside the reasoning
        ([["r</think>"], ["  "], ["\n"]], True, None),  # an answer of blanks is not visible
        ([[" "], ["Hi"]], False, 1),  # thinking off: the first non-blank text
        ([["x</think>"], ["\ufffd"], ["é"]], True, 2),  # half a character is held back, not shown
    ],
)
def test_first_visible_step_from_token_counts(steps, thinking, expected):
    from pytest_rllm.engines.inprocess_requests import first_visible_step

    token_ids = [piece for step in steps for piece in step]
    decoded = []
    found = first_visible_step([len(step) for step in steps], token_ids, thinking, lambda ids: decoded.append(len(ids)) or "".join(ids))
    assert found == expected
    # A binary search: a few decodes, not one per step (the reason it exists).
    assert len(decoded) <= 1 + max(1, len(steps) - 1).bit_length()
