"""The in-process transport: request/response, streams, events, deadlines, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
import trio
import trio.testing

from intentus_trio import (
    AgentResponse,
    ErrorCode,
    InProcessTransport,
    IntentEnvelope,
    RemoteAgent,
    Router,
    StreamChunk,
    Transport,
    new_event,
    new_intent,
    register_remote,
)
from intentus_trio.samples import register_samples
from intentus_trio.testing import TestNode, collect_stream


def test_in_process_transport_satisfies_the_protocol() -> None:
    assert isinstance(InProcessTransport(Router()), Transport)


async def test_round_trip(intentus_node: TestNode) -> None:
    response = await intentus_node.call("upper", {"text": "abc"})
    assert response.ok and response.payload == {"text": "ABC"}


async def test_validation_error_from_agent(intentus_node: TestNode) -> None:
    response = await intentus_node.call("upper", {"text": 3})
    assert response.error is not None
    assert response.error.code is ErrorCode.VALIDATION_ERROR
    assert response.error.details["field"] == "payload.text"


async def test_stream(intentus_node: TestNode) -> None:
    chunks, final = await intentus_node.stream("count", {"n": 4})
    assert chunks == [{"i": i} for i in range(4)]
    assert final.ok and final.payload == {"chunks": 4}


async def test_transport_deadline(autojump_clock: trio.testing.MockClock) -> None:
    router = register_samples(Router())
    async with InProcessTransport(router, timeout=2.0) as transport:
        start = trio.current_time()
        response = await transport.send_intent(new_intent("sleep", {"seconds": 60}))
        assert trio.current_time() - start == pytest.approx(2.0)
        assert response.error is not None
        assert response.error.code is ErrorCode.TRANSPORT_ERROR
        assert response.error.details["transportCode"] == "TIMEOUT"
        assert response.error.retryable
        # A per-call deadline overrides the transport's.
        response = await transport.send_intent(new_intent("sleep", {"seconds": 3}), timeout=5)
        assert response.ok


async def test_stream_deadline(autojump_clock: trio.testing.MockClock) -> None:
    router = register_samples(Router())
    transport = InProcessTransport(router)
    chunks, final = await collect_stream(
        transport, new_intent("count", {"n": 10, "delay": 1}), timeout=4.5
    )
    assert len(chunks) == 4
    assert final.error is not None and final.error.details["transportCode"] == "TIMEOUT"


async def test_cancelling_a_call_leaves_the_transport_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router = register_samples(Router())
    async with InProcessTransport(router) as transport:
        with trio.move_on_after(1) as scope:
            await transport.send_intent(new_intent("sleep", {"seconds": 100}))
        assert scope.cancelled_caught
        assert (await transport.send_intent(new_intent("echo", {"x": 1}))).payload == {"x": 1}


async def test_closed_transport_raises_at_once() -> None:
    transport = InProcessTransport(register_samples(Router()))
    await transport.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_intent(new_intent("echo"))
    with pytest.raises(trio.ClosedResourceError):
        await transport.publish(new_event("x"))


async def test_events_fan_out_by_type_and_pattern(intentus_transport: InProcessTransport) -> None:
    async with (
        intentus_transport.subscribe("job.done") as exact,
        intentus_transport.subscribe("job.*") as pattern,
        intentus_transport.subscribe("other") as other,
    ):
        await intentus_transport.publish(new_event("job.done", {"id": 1}))
        await intentus_transport.publish(new_event("job.started", {"id": 2}))
        assert (await exact.__anext__()).payload == {"id": 1}
        assert [(await pattern.__anext__()).payload for _ in range(2)] == [{"id": 1}, {"id": 2}]
        with pytest.raises(trio.WouldBlock):
            other._receive.receive_nowait()  # type: ignore[attr-defined]


async def test_slow_subscriber_drops_oldest_and_never_blocks(
    intentus_router: Router,
) -> None:
    async with intentus_router.events.subscribe("tick", buffer=4) as sub:
        for i in range(10):
            intentus_router.events.publish(new_event("tick", {"i": i}))
        assert sub.dropped == 6
        received = [(await sub.receive()).payload["i"] for _ in range(4)]
        assert received == [6, 7, 8, 9]


async def test_closing_the_transport_ends_subscriptions(intentus_router: Router) -> None:
    transport = InProcessTransport(intentus_router)
    async with transport.subscribe("x") as sub:
        await transport.aclose()
        assert [e async for e in sub] == []


async def test_agent_publishes_events_with_its_trace(intentus_router: Router) -> None:
    transport = InProcessTransport(intentus_router)

    @intentus_router.agent("publisher", "work")
    async def publisher(env: IntentEnvelope) -> dict[str, Any]:
        intentus_router.events.publish(new_event("work.done", {"ok": True}))
        return {}

    env = new_intent("work")
    async with transport.subscribe("work.done") as sub:
        await transport.send_intent(env)
        event = await sub.__anext__()
    assert event.trace_id == env.metadata.trace_id


async def test_remote_agent_forwards_through_a_transport() -> None:
    backend = register_samples(Router(name="backend"))
    front = Router(name="front")
    async with InProcessTransport(backend) as link:
        register_remote(front, "remote-upper", "upper", link)
        register_remote(front, "remote-count", "count", link, streaming=True)
        register_remote(front, "remote-fail", "fail", link)
        client = InProcessTransport(front)
        response = await client.send_intent(new_intent("upper", {"text": "hi"}))
        assert response.payload == {"text": "HI"}
        assert response.metadata["agent"] == "upper"  # the backend agent answered
        failed = await client.send_intent(new_intent("fail"))
        assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR
        chunks, final = await collect_stream(client, new_intent("count", {"n": 2}))
        assert chunks == [{"i": 0}, {"i": 1}] and final.ok


async def test_a_remote_streaming_agent_answers_a_plain_call_in_one_call() -> None:
    backend = register_samples(Router(name="backend"))
    front = Router(name="front")
    streams: list[str] = []

    class Watched(InProcessTransport):
        def send_stream(self, env: IntentEnvelope, **options: Any) -> Any:
            streams.append(env.intent.name)
            return super().send_stream(env, **options)

    async with Watched(backend) as link:
        register_remote(front, "remote-count", "count", link, streaming=True)
        client = InProcessTransport(front)
        response = await client.send_intent(new_intent("count", {"n": 2}))
        # the backend drained its own stream: the chunks never crossed the link
        assert response.payload == {"chunks": [{"i": 0}, {"i": 1}]} and streams == []
        chunks, final = await collect_stream(client, new_intent("count", {"n": 2}))
        assert chunks == [{"i": 0}, {"i": 1}] and final.ok and streams == ["count"]


async def test_remote_agent_timeout(autojump_clock: trio.testing.MockClock) -> None:
    backend = register_samples(Router())
    remote = RemoteAgent(InProcessTransport(backend), timeout=1.0)
    response = await remote.handle(new_intent("sleep", {"seconds": 5}))
    assert response.error is not None and response.error.details["transportCode"] == "TIMEOUT"


async def test_breaking_out_of_a_stream_closes_the_agent(intentus_router: Router) -> None:
    finished = trio.Event()

    async def endless(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield {}
        finally:
            finished.set()

    intentus_router.register("endless", "endless", endless)
    transport = InProcessTransport(intentus_router)
    async with aclosing(transport.send_stream(new_intent("endless"))) as items:
        async for item in items:
            assert isinstance(item, StreamChunk)
            if item.seq == 3:
                break
    assert finished.is_set()


async def test_many_concurrent_calls(intentus_node: TestNode) -> None:
    results: list[AgentResponse] = []

    async def one(i: int) -> None:
        results.append(await intentus_node.call("echo", {"i": i}))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert sorted(r.payload["i"] for r in results if r.payload) == list(range(200))
