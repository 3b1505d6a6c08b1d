"""Streams (NDJSON and SSE) and events (SSE subscribe, POST publish) over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial

import httpx
import pytest
import trio

from intentus_trio.protocol.codec import dumps, intent_to_json, loads
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.errors import RemoteError
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject, StreamChunk
from intentus_trio.routing.events import EventBus, Subscription
from intentus_trio.transports.http import RetryPolicy, open_client, serve

from .http_helpers import make_router, running_server

HEADERS = {"content-type": "application/json"}


async def test_send_stream_chunks_then_final() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        items = [item async for item in client.send_stream(new_intent("count", {"n": 5}))]
        assert [i.payload for i in items[:-1] if isinstance(i, StreamChunk)] == [
            {"i": n} for n in range(5)]
        assert [i.seq for i in items[:-1] if isinstance(i, StreamChunk)] == list(range(5))
        final = items[-1]
        assert isinstance(final, AgentResponse) and final.payload == {"chunks": 5}

        # A non-streaming agent answers with its response alone; an error too.
        items = [item async for item in client.send_stream(new_intent("echo", {"e": 1}))]
        assert len(items) == 1 and isinstance(items[0], AgentResponse)
        items = [item async for item in client.send_stream(new_intent("nobody"))]
        assert len(items) == 1 and isinstance(items[0], AgentResponse)
        assert items[0].error is not None
        assert items[0].error.code is ErrorCode.CAPABILITY_NOT_FOUND


async def test_raw_ndjson_and_sse_streams() -> None:
    frame = dumps({"protocol": "http", "messageType": "intent",
                   "body": intent_to_json(new_intent("count", {"n": 2}))})
    async with running_server() as (url, _), httpx.AsyncClient(base_url=url) as raw:
        reply = await raw.post("/stream", headers=HEADERS, content=frame)
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = [loads(line) for line in reply.content.splitlines()]
        assert [line["headers"].get("stream") for line in lines] == ["chunk", "chunk", None]

        reply = await raw.post("/stream", content=frame,
                               headers={**HEADERS, "accept": "text/event-stream"})
        assert reply.headers["content-type"] == "text/event-stream"
        events = [e for e in reply.text.split("\n\n") if e]
        assert len(events) == 3 and all(e.startswith("data: ") for e in events)

        missing = dumps({"protocol": "http", "messageType": "intent",
                         "body": intent_to_json(new_intent("nobody"))})
        reply = await raw.post("/stream", headers=HEADERS, content=missing)
        assert reply.status_code == 404  # failed before the first chunk


async def test_stream_deadline_and_early_exit_cancel_the_agent() -> None:
    cancelled = trio.Event()

    async def endless(env: IntentEnvelope):  # type: ignore[no-untyped-def]
        try:
            i = 0
            while True:
                yield {"i": i}
                i += 1
                await trio.sleep(0.01)
        finally:
            cancelled.set()

    router = make_router()
    router.register("endless", "endless", endless)
    async with running_server(router) as (url, _), open_client(url) as client:
        items = [i async for i in client.send_stream(new_intent("endless"), timeout=0.3)]
        final = items[-1]
        assert isinstance(final, AgentResponse) and final.error is not None
        assert final.error.details["transportCode"] == "TIMEOUT"
        assert len(items) > 2
        with trio.fail_after(5):
            await cancelled.wait()  # the server noticed the client leave

        cancelled = trio.Event()
        async with aclosing(client.send_stream(new_intent("endless"))) as stream:
            async for item in stream:
                assert isinstance(item, StreamChunk)
                break
        with trio.fail_after(5):
            await cancelled.wait()
        assert (await client.send_intent(new_intent("echo", {"after": 1}))).ok


class WatchedBus(EventBus):
    """An EventBus that says when its last subscription ends."""

    def __init__(self) -> None:
        super().__init__()
        self.emptied = trio.Event()

    @asynccontextmanager
    async def subscribe(
        self, event_type: str, *, buffer: int | None = None
    ) -> AsyncIterator[Subscription]:
        try:
            async with super().subscribe(event_type, buffer=buffer) as subscription:
                yield subscription
        finally:
            if not self.subscriber_count:
                self.emptied.set()


async def test_subscribe_and_publish() -> None:
    bus = WatchedBus()
    router = make_router(events=bus)

    async def announce(env: IntentEnvelope) -> JsonObject:
        router.events.publish(new_event("agent.done", {"by": "announce"}))
        return {}

    router.register("announce", "announce", announce)
    async with running_server(router) as (url, _), open_client(url) as client:
        async with client.subscribe("agent.*") as events, client.subscribe("other") as other:
            await client.publish(new_event("agent.started", {"n": 1}))
            await client.publish(new_event("unrelated", {"n": 2}))
            await client.publish(new_event("other", {"n": 3}))
            assert (await client.send_intent(new_intent("announce"))).ok
            got = []
            with trio.fail_after(5):
                async for event in events:
                    got.append((event.event_type, event.payload))
                    if len(got) == 2:
                        break
            assert got == [("agent.started", {"n": 1}), ("agent.done", {"by": "announce"})]
            with trio.fail_after(5):
                assert (await other.__anext__()).payload == {"n": 3}
        # The server drops its subscriptions once it sees the streams' connections close.
        with trio.fail_after(5):
            await bus.emptied.wait()
        assert bus.subscriber_count == 0


async def test_event_stream_ends_when_server_stops_without_resubscribe() -> None:
    async with running_server() as (url, server), \
            open_client(url, resubscribe=False) as client, client.subscribe("x") as events:
        assert events.active and events.established == 1
        server.app.closing.set()  # what shutdown does first
        with trio.fail_after(5):
            assert [e async for e in events] == []
        assert not events.active


async def test_subscription_resubscribes_after_a_server_restart() -> None:
    async with running_server() as (url, _):
        pass  # a free port, served twice in a row below
    port = int(url.rsplit(":", 1)[1])
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05)
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def serve_first(task_status: trio.TaskStatus[None]) -> None:
            with first:
                await serve(make_router(), f"http://127.0.0.1:{port}", task_status=task_status,
                            graceful_timeout=0.1)

        await nursery.start(serve_first)
        async with open_client(url, retry=policy) as client, client.subscribe("note") as events:
            await client.publish(new_event("note", {"n": 1}))
            with trio.fail_after(5):
                assert (await events.__anext__()).payload == {"n": 1}
            first.cancel()
            with trio.fail_after(5):
                await events.wait_inactive()
            await nursery.start(partial(serve, make_router(), f"http://127.0.0.1:{port}",
                                        graceful_timeout=0.1))
            with trio.fail_after(5):
                await events.wait_active()
            assert events.established == 2
            await client.publish(new_event("note", {"n": 2}))
            with trio.fail_after(5):
                assert (await events.__anext__()).payload == {"n": 2}
        nursery.cancel_scope.cancel()


async def test_subscribe_errors_raise() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        with pytest.raises(RemoteError) as caught:
            async with client.subscribe("x" * 300):
                pass
        assert caught.value.response.error is not None
        assert caught.value.response.error.code is ErrorCode.VALIDATION_ERROR
        assert (await client.send_intent(new_intent("echo"))).ok
