"""Bad input fails clearly, and before any engine starts: a malformed data set line, a wrong endpoint, HTTP errors.

The endpoint cases run the session's real endpoint path (ExternalEndpoint, then
the streaming client) against `ScriptedEndpoint`, a small OpenAI-like aiohttp
server on 127.0.0.1 whose answers each test scripts. No engine is started here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Callable

import pytest
from aiohttp import web

from pytest_rllm.session import RllmSession, RunFailed
from pytest_rllm.settings import RllmSettings

MODEL = "scripted-model"


class ScriptedEndpoint:
    """An OpenAI-compatible chat server in a background thread, on loopback only.

    chat(n, body) -> None streams a normal answer (reasoning, then content, then
    usage); an int answers with that HTTP status instead. `models` is "openai"
    or "html" (a web page where an API should be); `served` are the ids that GET
    /v1/models lists, in order. With `api_key`, every route answers 401 unless the
    request carries "Authorization: Bearer <key>". /metrics is not served (404).
    """

    def __init__(self, *, chat: Callable[[int, dict], int | None] | None = None, models: str = "openai",
                 api_key: str | None = None, tokens: int = 6, itl: float = 0.0,
                 served: tuple[str, ...] = (MODEL,)) -> None:
        self.chat_script = chat or (lambda n, body: None)
        self.models = models
        self.served = tuple(served)
        self.api_key = api_key
        self.tokens = tokens
        self.itl = itl
        self.calls: list[tuple[float, dict]] = []  # (perf_counter at arrival, request body)
        self.headers_seen: list[dict[str, str]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedEndpoint:
        self._thread.start()
        assert self._ready.wait(10), "the scripted endpoint did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        self.headers_seen.append(dict(request.headers))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid API key", "code": 401}}, status=401)
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _models(self, request: web.Request) -> web.Response:
        if self.models == "html":
            return web.Response(text="<!doctype html><html><body><h1>Welcome</h1></body></html>", content_type="text/html")
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.served]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append((time.perf_counter(), body))
        status = self.chat_script(len(self.calls), body)
        if status is not None:
            return web.json_response({"error": {"message": f"scripted {status}", "code": status}}, status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> None:
            chunk: dict = {"object": "chat.completion.chunk", "model": body.get("model", MODEL),
                           "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                chunk["usage"] = usage
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await event({"role": "assistant"})
        for i in range(self.tokens):
            await asyncio.sleep(self.itl)
            await event({"reasoning": f" step{i}"})
        await event({"content": "Answer: 4"}, finish="stop")
        await event(None, usage={"prompt_tokens": 10, "completion_tokens": self.tokens + 1})
        await resp.write(b"data: [DONE]\n\n")
        return resp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_session(url: str, **options: str) -> RllmSession:
    # The scripted endpoint answers requests in the order they come: no warm-up batch takes the script's first answers.
    raw = {"endpoint": url, "num_prompts": "3", "max_tokens": "32", "optimizations": "baseline", "warm_up": "0", **options}
    return RllmSession(RllmSettings.from_values(raw))


def run_baseline(session: RllmSession):
    try:
        return session.run("baseline", "main")
    finally:
        session.close()


# --------------------------------------------------------------------------- data sets


@pytest.fixture
def no_engine_may_start(monkeypatch):
    """Any engine start is a test failure: bad input must be caught before one is paid for."""
    started = []

    def refuse(self, spec, label):
        started.append(label)
        raise AssertionError(f"an engine was started for {label} before the data set was checked")

    monkeypatch.setattr(RllmSession, "_make_engine", refuse)
    return started


def test_a_malformed_data_set_line_fails_naming_file_line_and_field_before_any_engine(tmp_path, no_engine_may_start):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "1+1?", "reference": "2"}\n{"prompt": "2+2?"}\n')
    session = RllmSession(RllmSettings.from_values({"dataset": f"mine={data}", "optimizations": "baseline"}))
    try:
        with pytest.raises(RunFailed) as info:
            session.run("baseline", "main")
        # Every later request for a run gets the same answer, still without an engine.
        with pytest.raises(RunFailed):
            session.run("baseline", "no-thinking")
    finally:
        session.close()
    message = str(info.value)
    assert str(data) in message and "line 2" in message and "'reference'" in message, message
    assert no_engine_may_start == []


def test_a_malformed_data_set_line_fails_the_pytest_run_in_seconds(pytester: pytest.Pytester, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "1+1?", "reference": "2"}\nnot json\n')
    pytester.makepyfile(test_uses="def test_run(rllm_run):\n    rllm_run('baseline', 'main')\n")
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess(f"--rllm-dataset=mine={data}", "--rllm-optimizations=baseline",
                                           "--rllm-hardware-key=hw", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{data}*line 2*not valid JSON*"])
    # An engine start costs 40-70 s here; failing this fast means none was attempted.
    assert time.monotonic() - t0 < 30


# --------------------------------------------------------------------------- endpoints that are wrong


def test_an_unreachable_endpoint_fails_at_once_with_the_fix():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RunFailed, match=rf"--rllm-endpoint=http://127.0.0.1:{port} is unreachable .*Start the server, or fix the URL"):
        run_baseline(endpoint_session(f"http://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("status", [200, 404])
def test_a_web_page_instead_of_an_openai_server_is_named_as_such(status):
    async def page(request):
        return web.Response(text="<html><body>Hello</body></html>", content_type="text/html", status=status)

    with _plain_site(page) as url:
        with pytest.raises(RunFailed) as info:
            run_baseline(endpoint_session(url))
    assert "OpenAI-compatible server" in str(info.value), str(info.value)
    assert (f"HTTP {status}" in str(info.value)) == (status != 200)


def test_an_endpoint_that_wants_a_key_says_which_option_passes_it():
    with ScriptedEndpoint(api_key="k-123") as server:
        with pytest.raises(RunFailed, match=r"HTTP 401: pass the key's environment variable with --rllm-api-key-env=NAME"):
            run_baseline(endpoint_session(server.url))
        assert server.calls == []  # refused at the first GET: no chat request was sent


# --------------------------------------------------------------------------- HTTP errors during a run


def test_429_is_retried_with_growing_backoff_and_counted_per_record():
    # Each request is refused twice with 429, then answered.
    attempts: dict[str, int] = {}

    def chat(n, body):
        prompt = body["messages"][0]["content"]
        attempts[prompt] = attempts.get(prompt, 0) + 1
        return 429 if attempts[prompt] <= 2 else None

    with ScriptedEndpoint(chat=chat) as server:
        run = run_baseline(endpoint_session(server.url))
        calls = list(server.calls)
    assert all(r.ok for r in run.records), [r.error for r in run.records]
    assert [r.retries for r in run.records] == [2] * len(run.records)
    assert len(calls) == 3 * len(run.records)
    for record in run.records:
        times = [t for t, body in calls if body["messages"][0]["content"] == record_prompt(run, record)]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # Backoff: 0.5 s then 1 s, each with up to 100% jitter; never an immediate hammering retry.
        assert gaps[0] >= 0.45 and gaps[1] >= 0.95, gaps


def record_prompt(run, record) -> str:
    return next(item.prompt for item in _items(run) if item.id == record.item_id)


def _items(run):
    from pytest_rllm.workloads.datasets import load_items

    config = run.workload_config
    return load_items(config["dataset"], num_prompts=config["num_prompts"], seed=config["seed"])


@pytest.mark.parametrize("status", [500, 401])
def test_500_and_401_are_recorded_once_never_retried_and_fail_the_run(status):
    with ScriptedEndpoint(chat=lambda n, body: status) as server:
        with pytest.raises(RunFailed) as info:
            run_baseline(endpoint_session(server.url))
        calls = len(server.calls)
    assert calls == 3  # one attempt per request: a 500 may have cost generation, a 401 will not change
    assert f"every request failed; the first: HTTP {status}" in str(info.value), str(info.value)


def test_a_mix_of_errors_keeps_the_run_and_marks_only_the_failed_records():
    with ScriptedEndpoint(chat=lambda n, body: 500 if n == 1 else None) as server:
        run = run_baseline(endpoint_session(server.url, arrival="concurrency:1"))
    assert [r.ok for r in run.records] == [False, True, True]
    assert run.records[0].error.startswith("HTTP 500") and run.records[0].retries == 0
    assert run.error is None


class _plain_site:
    """A one-route aiohttp site (GET /v1/models) in a thread, for servers that are not OpenAI-like."""

    def __init__(self, handler) -> None:
        self.handler = handler

    def __enter__(self) -> str:
        self.server = ScriptedEndpoint()
        self.server._models = self.handler  # type: ignore[method-assign]
        self.server.__enter__()
        return self.server.url

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
