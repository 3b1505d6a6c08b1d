"""Server-side deadlines and abandoned calls: an agent never outlives its call.

The client's ``timeoutMs`` frame header (capped by ``ServerLimits.max_call_timeout``) bounds a
REST call or a stream on the server; a client that disconnects cancels its agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from intentus_trio.protocol.codec import dumps, intent_to_json, loads
from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.http import RetryPolicy, ServerLimits, open_client
from intentus_trio.transports.http.watch import WATCH_AFTER, DisconnectWatch

from .http_helpers import make_router, running_server

HEADERS = {"content-type": "application/json"}


def raw_frame(name: str, headers: dict[str, str] | None = None) -> bytes:
    return dumps({"protocol": "http", "messageType": "intent", "headers": headers or {},
                  "body": intent_to_json(new_intent(name))})


class Hang:
    """An agent that waits forever and reports when it starts and when it is cancelled."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()

    async def run(self, env: IntentEnvelope) -> JsonObject:
        self.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.set()


class Trickle(Hang):
    """A streaming agent that sends one chunk, reports it, then waits forever."""

    async def stream(self, env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        try:
            yield {"first": True}
            self.started.set()
            await trio.sleep_forever()
        finally:
            self.cancelled.set()


def router_with(hang: Hang) -> Router:
    router = make_router()
    router.register("hang", "hang", hang.run)
    if isinstance(hang, Trickle):
        router.register("trickle", "trickle", hang.stream)
    return router


def assert_timeout(reply: httpx.Response) -> None:
    assert reply.status_code == 504
    error = loads(reply.content)["body"]["error"]
    assert error["code"] == ErrorCode.TRANSPORT_ERROR.value
    assert error["details"]["transportCode"] == TransportCode.TIMEOUT.value


async def test_the_client_deadline_header_bounds_the_call_on_the_server() -> None:
    hang = Hang()
    async with running_server(router_with(hang)) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        with trio.fail_after(5):
            reply = await raw.post("/intent", headers=HEADERS,
                                   content=raw_frame("hang", {"timeoutMs": "100"}))
        assert_timeout(reply)
        assert hang.cancelled.is_set()
        assert server.app.stats.timeouts == 1
        assert (await raw.post("/intent", headers=HEADERS, content=raw_frame("echo"))).is_success


async def test_max_call_timeout_caps_what_the_client_asks() -> None:
    hang = Hang()
    limits = ServerLimits(max_call_timeout=0.1)
    async with running_server(router_with(hang), limits=limits) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        with trio.fail_after(5):
            # No header at all, then one asking for an hour: both end at the cap.
            assert_timeout(await raw.post("/intent", headers=HEADERS, content=raw_frame("hang")))
            assert_timeout(await raw.post("/intent", headers=HEADERS,
                                          content=raw_frame("hang", {"timeoutMs": "3600000"})))
        assert server.app.stats.timeouts == 2


async def test_a_disconnected_client_cancels_its_agent() -> None:
    hang = Hang()
    async with running_server(router_with(hang)) as (url, server), \
            open_client(url, retry=RetryPolicy(max_attempts=1)) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_intent, new_intent("hang"))
            await hang.started.wait()
            nursery.cancel_scope.cancel()  # the client gives up: its connection closes
        with trio.fail_after(5):
            await hang.cancelled.wait()
        assert server.app.stats.abandoned == 1
        assert server.app.stats.timeouts == 0
        assert (await client.send_intent(new_intent("echo", {"after": 1}))).ok


async def test_a_json_rpc_call_is_cancelled_with_its_client() -> None:
    hang = Hang()
    call = dumps({"jsonrpc": "2.0", "id": 1, "method": "intent",
                  "params": intent_to_json(new_intent("hang"))})
    async with running_server(router_with(hang)) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(raw.post, "/jsonrpc", content=call, headers=HEADERS))
            await hang.started.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await hang.cancelled.wait()
        assert server.app.stats.abandoned == 1


async def test_a_json_rpc_call_ends_at_max_call_timeout() -> None:
    hang = Hang()
    call = dumps({"jsonrpc": "2.0", "id": 7, "method": "intent",
                  "params": intent_to_json(new_intent("hang"))})
    limits = ServerLimits(max_call_timeout=0.1)
    async with running_server(router_with(hang), limits=limits) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        with trio.fail_after(5):
            reply = loads((await raw.post("/jsonrpc", content=call, headers=HEADERS)).content)
        assert reply["id"] == 7
        assert reply["error"]["data"]["error"]["details"]["transportCode"] == "TIMEOUT"
        assert hang.cancelled.is_set() and server.app.stats.timeouts == 1


async def test_the_client_deadline_header_ends_a_stream_with_timeout() -> None:
    trickle = Trickle()
    async with running_server(router_with(trickle)) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        with trio.fail_after(5):
            reply = await raw.post("/stream", headers=HEADERS,
                                   content=raw_frame("trickle", {"timeoutMs": "200"}))
        lines = [loads(line) for line in reply.content.splitlines()]
        assert reply.status_code == 200
        assert lines[0]["headers"]["stream"] == "chunk"
        assert lines[0]["body"]["payload"] == {"first": True}
        final = lines[-1]["body"]
        assert len(lines) == 2 and final["status"] == "error"
        assert final["error"]["details"]["transportCode"] == TransportCode.TIMEOUT.value
        assert trickle.cancelled.is_set()
        assert server.app.stats.timeouts == 1


async def test_a_stream_is_cancelled_and_counted_when_its_client_leaves() -> None:
    trickle = Trickle()
    async with running_server(router_with(trickle)) as (url, server), \
            httpx.AsyncClient(base_url=url) as raw:
        with trio.fail_after(5):
            async with raw.stream("POST", "/stream", headers=HEADERS,
                                  content=raw_frame("trickle")) as reply:
                first = loads(await reply.aiter_lines().__anext__())
                assert first["body"]["payload"] == {"first": True}
                await trickle.started.wait()
            # leaving the block closes the connection mid-stream
            await trickle.cancelled.wait()
            assert server.app.stats.abandoned == 1
            # a stream that runs to its end is not counted
            done = await raw.post("/stream", headers=HEADERS, content=raw_frame("echo"))
            assert done.status_code == 200
        assert server.app.stats.abandoned == 1


@pytest.mark.parametrize("service", [True, False], ids=["service", "own-watcher"])
async def test_disconnect_watch(service: bool, autojump_clock: trio.testing.MockClock) -> None:
    """Under the service, quick calls never start a watcher; either way a slow call is
    cancelled when its client leaves, and a deadline is told apart from a disconnect."""
    watch = DisconnectWatch()
    to_app, from_server = trio.open_memory_channel[dict[str, str]](1)
    reads = 0

    async def receive() -> dict[str, str]:
        nonlocal reads
        reads += 1
        return await from_server.receive()

    async def quick() -> None:
        await trio.sleep(WATCH_AFTER / 2)

    async def slow() -> None:
        await trio.sleep(60)

    async def leave(after: float) -> None:
        await trio.sleep(after)
        await to_app.send({"type": "http.disconnect"})

    async with trio.open_nursery() as nursery:
        if service:
            await nursery.start(watch.run)
        call = await watch.attend(receive, quick)
        assert not call.gone and not call.timed_out
        await trio.sleep(1)
        assert reads == (0 if service else 1)

        start = trio.current_time()
        nursery.start_soon(leave, 1.0)
        call = await watch.attend(receive, slow)
        assert call.gone and not call.timed_out
        assert trio.current_time() - start == pytest.approx(1.0)

        call = await watch.attend(receive, slow, trio.current_time() + 2.0)
        assert call.timed_out and not call.gone
        nursery.cancel_scope.cancel()
