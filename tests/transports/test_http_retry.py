"""Retries against flaky servers: what is retried, Retry-After, deadlines, and the policy."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.trio import serve as hypercorn_serve

from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.errors import AgentTimeout, AgentUnavailable
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.framing import response_frame
from intentus_trio.transports.http import HttpApp, RetryPolicy, make_config, open_client
from intentus_trio.transports.http.retry import parse_retry_after

from .http_helpers import make_router

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, jitter=0.0)


class Flaky:
    """Answers the first requests from ``script`` (status, extra headers), then serves."""

    def __init__(self, script: list[tuple[int, list[tuple[bytes, bytes]]]]) -> None:
        self.app = HttpApp(make_router())
        self.script = script
        self.seen = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        self.seen += 1
        if not self.script:
            await self.app(scope, receive, send)
            return
        status, headers = self.script.pop(0)
        while (await receive()).get("more_body"):
            pass
        exc = AgentTimeout("slow") if status == 504 else AgentUnavailable("busy")
        reply = response_frame(exc.to_response(), self.app.dispatcher.protocol)
        body = self.app.codec.encode(reply)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def flaky_server(app: Any) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(
            hypercorn_serve, app, make_config("http://127.0.0.1:0", graceful_timeout=0.1),
            mode="asgi"))
        yield binds[0]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def dropping_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Reads each request and closes the connection without an answer."""
    counter = [0]

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            counter[0] += 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", counter
        nursery.cancel_scope.cancel()


async def test_503_is_retried_for_any_call() -> None:
    flaky = Flaky([(503, [(b"retry-after", b"0")]), (503, [])])
    async with flaky_server(flaky) as url, open_client(url, retry=FAST) as client:
        response = await client.send_intent(new_intent("echo", {"x": 1}))
    assert response.payload == {"x": 1}
    assert flaky.seen == 3


async def test_429_with_long_retry_after_is_returned_as_is() -> None:
    flaky = Flaky([(429, [(b"retry-after", b"120")])])
    async with flaky_server(flaky) as url, open_client(url, retry=FAST) as client:
        response = await client.send_intent(new_intent("echo"))
    assert flaky.seen == 1
    # The server's own error response, preserved.
    assert response.error is not None and response.error.code is ErrorCode.AGENT_UNAVAILABLE


async def test_retry_after_is_honoured() -> None:
    flaky = Flaky([(503, [(b"retry-after", b"1")])])
    async with flaky_server(flaky) as url, open_client(url, retry=FAST) as client:
        start = trio.current_time()
        response = await client.send_intent(new_intent("echo"))
        waited = trio.current_time() - start
    assert response.ok and flaky.seen == 2
    assert waited >= 0.95


async def test_504_is_retried_only_when_idempotent() -> None:
    flaky = Flaky([(504, []), (504, [])])
    async with flaky_server(flaky) as url, open_client(url, retry=FAST) as client:
        once = await client.send_intent(new_intent("echo"))
        assert once.error is not None and once.error.code is ErrorCode.AGENT_TIMEOUT
        assert flaky.seen == 1
        again = await client.send_intent(new_intent("echo", {"i": 1}), idempotent=True)
        assert again.payload == {"i": 1}
        assert flaky.seen == 3


async def test_lost_answers_are_retried_only_when_idempotent() -> None:
    async with dropping_server() as (url, counter), open_client(url, retry=FAST) as client:
        response = await client.send_intent(new_intent("echo"))
        assert response.error is not None
        assert response.error.details["transportCode"] == TransportCode.CONNECTION_FAILURE
        assert counter[0] == 1
        await client.send_intent(new_intent("echo"), idempotent=True)
        assert counter[0] == 1 + FAST.max_attempts
    async with dropping_server() as (url, counter), \
            open_client(url, retry=FAST, idempotent=True) as client:
        await client.send_intent(new_intent("echo"))
        assert counter[0] == FAST.max_attempts


async def test_deadline_bounds_all_attempts() -> None:
    flaky = Flaky([(503, [])] * 100)
    policy = RetryPolicy(max_attempts=100, base_delay=0.05, multiplier=1.0, jitter=0.0)
    async with flaky_server(flaky) as url, open_client(url, retry=policy) as client:
        start = trio.current_time()
        response = await client.send_intent(new_intent("echo"), timeout=0.5)
        assert trio.current_time() - start < 1.0
    assert response.error is not None
    assert 2 <= flaky.seen < 20


def test_backoff_grows_and_jitters() -> None:
    policy = RetryPolicy(base_delay=0.1, multiplier=2, max_delay=1.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    jittered = RetryPolicy(base_delay=1.0, jitter=1.0)
    waits = [jittered.backoff(1, random.Random(seed)) for seed in range(50)]
    assert all(0.0 <= w <= 1.0 for w in waits) and len(set(waits)) > 40
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True),
                             now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True),
                             now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
