"""Legacy MXP adapter over the in-memory network: loss, duplicates, reordering, saturation."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from intentus_trio.mxp.carrier import Address
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.errors import TransportTimeout
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse
from intentus_trio.testing.netsim import LinkConditions, MemoryCarrier, open_memory_network
from intentus_trio.transports.base import Transport
from intentus_trio.transports.mxp_legacy import (
    LegacySubscriptionsUnsupported,
    open_legacy_client,
    wire_trace,
)

from .test_mxp_legacy_helpers import (
    ACK,
    CALL,
    HEARTBEAT,
    REQUIRES_ACK,
    RESPONSE,
    SERVER,
    exchange,
    raw_encode,
    sim_pair,
)


class DropFirstReplies:
    """Wraps the server's carrier and loses its first ``count`` sends (lost replies)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, carrier: MemoryCarrier) -> MemoryCarrier:
        original = carrier.send_nowait

        def send_nowait(data: bytes, address: Address) -> bool:
            if self.count > 0:
                self.count -= 1
                return True
            return original(data, address)

        carrier.send_nowait = send_nowait  # type: ignore[method-assign]
        return carrier


async def test_round_trip_keeps_trace_id(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s:
        assert isinstance(s.client, Transport)
        env = new_intent("echo", {"n": 1})
        response = await s.client.send_intent(env)
        assert response.ok, response
        assert response.payload == {"echo": {"n": 1}, "traceId": env.metadata.trace_id}
        assert response.trace_id == env.metadata.trace_id
        assert s.echo.seen == [env.metadata.request_id]


async def test_lost_reply_is_answered_from_cache(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair(server_carrier=DropFirstReplies(2)) as s:
        response = await s.client.send_intent(new_intent("echo", {"n": 1}))
        assert response.ok
        assert s.echo.calls == 1  # the agent ran once; the retransmissions hit the cache
        assert s.client.stats.retransmits == 2
        assert s.stats.duplicates == 2
        assert s.stats.replies_sent == 1


async def test_random_loss_every_call_answered_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_pair(conditions=LinkConditions(loss=0.3, delay=0.01), seed=7) as s:
        for n in range(40):
            response = await s.client.send_intent(new_intent("echo", {"n": n}))
            assert response.ok and response.payload is not None
            assert response.payload["echo"] == {"n": n}
        assert s.echo.calls == 40
        assert len(set(s.echo.seen)) == 40
        assert s.client.stats.retransmits > 0
        assert s.stats.duplicates > 0  # some replies were lost and answered from the cache


async def test_duplicated_datagrams(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair(conditions=LinkConditions(duplicate=1.0, delay=0.002)) as s:
        for n in range(5):
            response = await s.client.send_intent(new_intent("echo", {"n": n}))
            assert response.ok
        assert s.echo.calls == 5
        assert s.stats.duplicates + s.stats.duplicates_in_progress >= 5
        assert s.client.stats.late_replies >= 5


async def test_reordering_concurrent_calls(autojump_clock: trio.testing.MockClock) -> None:
    conditions = LinkConditions(delay=0.05, jitter=0.04, reorder=0.3, reorder_delay=0.03)
    results: dict[int, AgentResponse] = {}
    async with sim_pair(conditions=conditions, seed=3) as s:

        async def one(n: int) -> None:
            results[n] = await s.client.send_intent(new_intent("echo", {"n": n}))

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(one, n)
        assert s.echo.calls == 20
    for n, response in results.items():
        assert response.ok and response.payload is not None
        assert response.payload["echo"] == {"n": n}


async def test_saturation_drops_then_retransmission_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_pair(max_concurrency=1, queue_size=0) as s:
        gate = s.echo.gate = trio.Event()
        results: list[AgentResponse] = []

        async def one(n: int) -> None:
            results.append(await s.client.send_intent(new_intent("echo", {"n": n})))

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(one, n)
            await trio.testing.wait_all_tasks_blocked()
            assert s.stats.saturated == 2  # one Call runs; the other two were dropped
            assert s.echo.calls == 1
            gate.set()
        assert [r.ok for r in results] == [True, True, True]
        assert s.echo.calls == 3


async def test_timeout_when_nobody_answers(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network() as net, open_legacy_client(
        "10.0.0.9", 9000, carrier=net.bind(("10.0.0.2", 0)), timeout=3.0
    ) as client:
        env = new_intent("echo")
        start = trio.current_time()
        response = await client.send_intent(env)
        assert trio.current_time() - start == pytest.approx(3.0)
        assert response.error is not None
        assert response.error.code is ErrorCode.TRANSPORT_ERROR
        assert response.error.details["transportCode"] == "TIMEOUT"
        assert response.trace_id == env.metadata.trace_id
        # 0.25 + 0.5 + 1 + 1.25 (capped at the deadline): three retransmissions.
        assert client.stats.retransmits == 3
        # A per-call timeout overrides the transport's.
        response = await client.send_intent(env, timeout=0.1)
        assert response.error is not None and response.error.retryable


async def test_cancelled_call_leaves_client_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_pair() as s:
        s.echo.gate = trio.Event()
        with trio.move_on_after(1.0):
            await s.client.send_intent(new_intent("echo"))
        s.echo.gate.set()
        response = await s.client.send_intent(new_intent("echo", {"after": True}))
        assert response.ok


async def test_stream_is_one_final_response(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s:
        items = [item async for item in s.client.send_stream(new_intent("echo", {"n": 1}))]
        assert len(items) == 1
        assert isinstance(items[0], AgentResponse) and items[0].ok


async def test_subscribe_is_not_supported(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s:
        with pytest.raises(LegacySubscriptionsUnsupported, match="no subscriptions"):
            s.client.subscribe("anything")
        assert issubclass(LegacySubscriptionsUnsupported, NotImplementedError)


async def test_closed_client_raises(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s:
        client = s.client
    with pytest.raises(trio.ClosedResourceError):
        await client.send_intent(new_intent("echo"))
    with pytest.raises(trio.ClosedResourceError):
        await client.publish(new_event("x"))


async def test_publish_fire_and_forget(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s, s.router.events.subscribe("legacy.*") as sub:
        event = new_event("legacy.test", {"k": 1}, trace_id="trace-abc")
        await s.client.publish(event)
        got = await sub.receive()
        assert got == event


async def test_publish_with_acks_under_loss_delivers_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_pair(conditions=LinkConditions(loss=0.4), seed=11,
                        client_options={"event_acks": True}) as s, \
            s.router.events.subscribe("*") as sub:
        for n in range(10):
            await s.client.publish(new_event("tick", {"n": n}))
        received = [(await sub.receive()).payload["n"] for _ in range(10)]
        assert received == list(range(10))
        with trio.move_on_after(5):
            extra = await sub.receive()
            raise AssertionError(f"an event was published twice: {extra}")
        assert s.stats.events == 10
        assert s.client.stats.retransmits > 0


async def test_publish_with_acks_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network() as net, open_legacy_client(
        "10.0.0.9", 9000, carrier=net.bind(("10.0.0.2", 0)), event_acks=True
    ) as client:
        with pytest.raises(TransportTimeout):
            await client.publish(new_event("x"), timeout=1.0)


async def test_requires_ack_call_and_heartbeat(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair() as s:
        peer = s.net.bind(("10.0.0.3", 0))
        body = orjson.dumps({"intent": "echo", "payload": {"x": 1}})
        answers = await exchange(peer, raw_encode(CALL, body, 42, 99, REQUIRES_ACK))
        assert [a.type for a in answers] == [ACK, RESPONSE]
        assert {(a.message_id, a.trace_id) for a in answers} == {(42, 99)}
        assert orjson.loads(answers[1].payload)["payload"]["echo"] == {"x": 1}
        # A retransmission is acknowledged again and answered from the cache.
        answers = await exchange(peer, raw_encode(CALL, body, 42, 99, REQUIRES_ACK))
        assert [a.type for a in answers] == [ACK, RESPONSE]
        assert s.echo.calls == 1

        hb = orjson.dumps({"agent_id": "a-1"})
        answers = await exchange(peer, raw_encode(HEARTBEAT, hb, 7, 8))
        assert [(a.type, a.message_id, a.trace_id) for a in answers] == [(RESPONSE, 7, 8)]
        reply = orjson.loads(answers[0].payload)
        assert reply["success"] is True and reply["needs_register"] is False
        assert reply["agent_id"] == "a-1"
        assert s.stats.heartbeats == 1


async def test_header_trace_id_reaches_the_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim_pair() as s:
        peer = s.net.bind(("10.0.0.3", 0))
        body = orjson.dumps({"type": "echo", "request_id": "r-9"})
        (answer,) = await exchange(peer, raw_encode(CALL, body, 5, 0xABCDEF))
        reply = orjson.loads(answer.payload)
        assert reply["request_id"] == "r-9"
        trace = reply["payload"]["traceId"]
        assert wire_trace(trace) == 0xABCDEF == answer.trace_id
        assert s.echo.seen == ["r-9"]
        assert reply["payload"]["echo"] == {"type": "echo", "request_id": "r-9"}


async def test_no_leaked_tasks(autojump_clock: trio.testing.MockClock) -> None:
    before = len(trio.lowlevel.current_root_task().child_nurseries)
    async with sim_pair(conditions=LinkConditions(loss=0.2)) as s:
        for _ in range(3):
            await s.client.send_intent(new_intent("echo"))
    assert len(trio.lowlevel.current_root_task().child_nurseries) == before
    assert SERVER not in s.net.endpoints
