"""Shared pieces of the HTTP transport tests: agents, a running server, a raw HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from intentus_trio.protocol.codec import loads
from intentus_trio.protocol.errors import AgentError
from intentus_trio.protocol.models import (
    IntentEnvelope,
    JsonObject,
)
from intentus_trio.routing.events import EventBus
from intentus_trio.routing.router import Router
from intentus_trio.transports.http import HttpServer, serve


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def count(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    for i in range(env.payload.get("n", 3)):
        if env.payload.get("delay"):
            await trio.sleep(env.payload["delay"])
        yield {"i": i}


async def sleep(env: IntentEnvelope) -> JsonObject:
    await trio.sleep(env.payload.get("seconds", 0))
    return {"slept": env.payload.get("seconds", 0)}


async def fail(env: IntentEnvelope) -> JsonObject:
    raise AgentError("always fails", details={"why": "testing"}, retryable=False)


def make_router(events: EventBus | None = None) -> Router:
    router = Router(name="http-test", events=events)
    router.register("echo", "echo", echo)
    router.register("count", "count", count)
    router.register("sleep", "sleep", sleep)
    router.register("fail", "fail", fail)
    return router


@asynccontextmanager
async def running_server(
    router: Router | None = None, **options: Any
) -> AsyncIterator[tuple[str, HttpServer]]:
    """A server on 127.0.0.1 (port 0) for the duration of the block."""
    router = router or make_router()
    server_options = {k: options.pop(k) for k in
                      ("protector", "require_emcl", "limits", "max_tasks", "task_ttl")
                      if k in options}
    server = HttpServer(router, **server_options)
    options.setdefault("graceful_timeout", 0.5)
    scheme = "https" if "certfile" in options else "http"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(serve, router, f"{scheme}://127.0.0.1:0", server=server, **options))
        try:
            yield url, server
        finally:
            nursery.cancel_scope.cancel()


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return loads(self.body)


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body)


async def read_response(stream: trio.abc.Stream) -> RawResponse:
    """Read one response (with Content-Length) from a raw stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return parse_response(data[: len(head) + 4] + body)


async def raw_request(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    extra: str = "",
) -> RawResponse:
    """One request over a fresh raw TCP connection (Content-Length framing)."""
    host, port = host_port(url)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        await stream.send_all((head + extra + "\r\n").encode() + body)
        return await read_response(stream)


