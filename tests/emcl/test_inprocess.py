"""EMCL on the in-process transport: seal -> open -> route -> seal -> open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from intentus_trio.emcl import EmclProtector, Keyring, Role, trio_clock
from intentus_trio.keys import X25519KeyPair, generate_master_key
from intentus_trio.protocol.enums import ErrorCode, TransportProtocol
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, StreamChunk
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.inprocess import InProcessTransport, SealedEvents

from .conftest import T0


class Counting:
    """Wraps a protector and counts calls, to show every leg of a call goes through it."""

    def __init__(self, inner: EmclProtector) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def seal(self, frame: Any, **kw: Any) -> Any:
        self.calls.append("seal")
        return self.inner.seal(frame, **kw)

    def open(self, frame: Any) -> Any:
        self.calls.append("open")
        return self.inner.open(frame)


def make_router(inner: list[InProcessTransport] | None = None) -> Router:
    router = Router()

    async def echo(env: IntentEnvelope) -> dict[str, Any]:
        return {"echo": env.payload}

    async def chunks(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield {"i": i}

    async def nested(env: IntentEnvelope) -> dict[str, Any]:
        assert inner
        reply = await inner[0].send_intent(new_intent("echo", {"depth": 2}))
        return {"inner": reply.payload}

    async def slow(env: IntentEnvelope) -> dict[str, Any]:
        await trio.sleep(10)
        return {}

    router.register("echo", "echo", echo)
    router.register("chunks", "chunks", chunks)
    router.register("nested", "nested", nested)
    router.register("slow", "slow", slow)
    return router


def group_pair() -> tuple[EmclProtector, EmclProtector]:
    ring = Keyring(clock=trio_clock(T0))
    ring.add_group_key("g1", generate_master_key())
    return (EmclProtector(ring, "client", role=Role.CLIENT),
            EmclProtector(ring, "server", role=Role.SERVER))


async def test_calls_go_through_both_protectors() -> None:
    client, server = group_pair()
    c, s = Counting(client), Counting(server)
    transport = InProcessTransport(make_router(), protector=c,  # type: ignore[arg-type]
                                   server_protector=s)  # type: ignore[arg-type]
    reply = await transport.send_intent(new_intent("echo", {"a": 1}))
    assert reply.ok and reply.payload == {"echo": {"a": 1}}
    assert c.calls == ["seal", "open"] and s.calls == ["open", "seal"]


async def test_streams_and_events() -> None:
    client, server = group_pair()
    router = make_router()
    async with InProcessTransport(router, protector=client, server_protector=server) as t:
        items = [item async for item in t.send_stream(new_intent("chunks"))]
        assert [i.payload for i in items if isinstance(i, StreamChunk)] == [
            {"i": 0}, {"i": 1}, {"i": 2}]
        assert isinstance(items[-1], AgentResponse) and items[-1].ok
        async with t.subscribe("thing.*") as events:
            await t.publish(new_event("thing.done", {"x": 1}))
            with trio.fail_after(1):
                event = await events.__anext__()
        assert event.payload == {"x": 1}


async def test_one_protector_at_both_ends() -> None:
    ring = Keyring(clock=trio_clock(T0))
    ring.add_group_key("g1", generate_master_key())
    t = InProcessTransport(make_router(), protector=EmclProtector(ring, "local"))
    for i in range(3):
        assert (await t.send_intent(new_intent("echo", {"i": i}))).payload == {"echo": {"i": i}}


async def test_pair_mode_and_nested_calls() -> None:
    ks, kc = X25519KeyPair.generate(), X25519KeyPair.generate()
    server_ring, client_ring = Keyring(clock=trio_clock(T0)), Keyring(clock=trio_clock(T0))
    server_ring.set_static_key(ks)
    server_ring.add_peer("client", kc.public)
    server_ring.add_peer("server", ks.public)  # the agent calls back into its own router
    client_ring.set_static_key(kc)
    client_ring.add_peer("server", ks.public)
    server = EmclProtector(server_ring, "server", role=Role.SERVER)
    inner: list[InProcessTransport] = []
    router = make_router(inner)
    inner.append(InProcessTransport(router, protector=EmclProtector(
        server_ring, "server", peer_id="server", role=Role.CLIENT), server_protector=server))
    outer = InProcessTransport(router, protector=EmclProtector(
        client_ring, "client", peer_id="server", role=Role.CLIENT), server_protector=server)
    reply = await outer.send_intent(new_intent("nested"))
    assert reply.ok, reply
    assert reply.payload == {"inner": {"echo": {"depth": 2}}}


async def test_refusals_become_emcl_failure_responses() -> None:
    client, _ = group_pair()
    other_ring = Keyring(clock=trio_clock(T0))
    other_ring.add_group_key("g2", generate_master_key())
    stranger = EmclProtector(other_ring, "server", role=Role.SERVER)
    t = InProcessTransport(make_router(), protector=client, server_protector=stranger)
    env = new_intent("echo")
    reply = await t.send_intent(env)
    assert not reply.ok and reply.error is not None
    assert reply.error.code is ErrorCode.EMCL_FAILURE
    assert reply.error.details == {"reason": "unknown_key"}
    assert reply.trace_id == env.metadata.trace_id
    items = [i async for i in t.send_stream(new_intent("chunks"))]
    assert len(items) == 1 and isinstance(items[0], AgentResponse) and not items[0].ok


async def test_timeouts_still_apply(autojump_clock: trio.testing.MockClock) -> None:
    client, server = group_pair()
    t = InProcessTransport(make_router(), protector=client, server_protector=server, timeout=1)
    reply = await t.send_intent(new_intent("slow"))
    assert reply.error is not None and reply.error.details["transportCode"] == "TIMEOUT"
    assert (await t.send_intent(new_intent("echo"))).ok


async def test_stale_replies_with_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    client, server = group_pair()
    sealed = client.seal(request_frame(new_intent("echo"), TransportProtocol.LOCAL))
    await trio.sleep(121)
    from intentus_trio.protocol.errors import EMCLFailure

    with pytest.raises(EMCLFailure) as info:
        server.open(sealed)
    assert info.value.details["reason"] == "stale"


def test_server_protector_needs_a_client_protector() -> None:
    _, server = group_pair()
    with pytest.raises(ValueError):
        InProcessTransport(make_router(), server_protector=server)


async def test_subscribed_events_are_sealed_and_opened() -> None:
    client, server = group_pair()
    c, s = Counting(client), Counting(server)
    router = make_router()
    t = InProcessTransport(router, protector=c, server_protector=s)  # type: ignore[arg-type]
    async with t.subscribe("thing.*") as events:
        router.events.publish(new_event("thing.done", {"x": 1}))
        with trio.fail_after(1):
            event = await events.__anext__()
    assert event.payload == {"x": 1} and event.event_type == "thing.done"
    assert s.calls == ["seal"] and c.calls == ["open"]


async def test_an_event_that_does_not_open_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, server = group_pair()
    stranger, _ = group_pair()  # another group key: cannot open the server's events
    router = make_router()
    t = InProcessTransport(router, protector=stranger, server_protector=server)
    async with t.subscribe("thing.*") as events:
        router.events.publish(new_event("thing.lost", {"secret": "s3cr3t"}))
        router.events.publish(new_event("thing.lost", {"secret": "s3cr3t"}))
        with trio.move_on_after(1):
            await events.__anext__()
        assert isinstance(events, SealedEvents)
        assert events.refused == 2 and events.dropped == 2
    assert "did not open" in caplog.text and "s3cr3t" not in caplog.text


async def test_an_event_json_cannot_hold_is_skipped_and_the_next_arrives() -> None:
    client, server = group_pair()
    router = make_router()
    t = InProcessTransport(router, protector=client, server_protector=server)
    async with t.subscribe("thing.*") as events:
        router.events.publish(new_event("thing.odd", {"thing": object()}))
        router.events.publish(new_event("thing.done", {"x": 1}))
        with trio.fail_after(1):
            event = await events.__anext__()
        assert event.payload == {"x": 1}
        assert isinstance(events, SealedEvents) and events.refused == 1


def test_one_protector_for_both_ends_must_be_a_peer() -> None:
    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    for role in (Role.CLIENT, Role.SERVER):
        with pytest.raises(ValueError, match="server_protector"):
            InProcessTransport(Router(), protector=EmclProtector(ring, "a", role=role))
    InProcessTransport(Router(), protector=EmclProtector(ring, "a", role=Role.PEER))
    InProcessTransport(Router(), protector=EmclProtector(ring, "a", role=Role.CLIENT),
                       server_protector=EmclProtector(ring, "b", role=Role.SERVER))
