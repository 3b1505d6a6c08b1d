"""EMCL over the network transports: HTTP, WebSocket, ZeroMQ and MXP on real loopback sockets.

The same protector objects that work in-process plug into every transport's ``protector``
option; servers run with ``require_emcl``. Pair mode with several clients checks that each
reply is sealed for the client that asked.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel

from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import X25519KeyPair, generate_master_key
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, StreamChunk
from intentus_trio.routing.router import Router

SECRET = "network-plaintext-marker"
TRANSPORTS = {
    "http": "http://127.0.0.1:0",
    "websocket": "ws://127.0.0.1:0/",
    "zeromq": "tcp://127.0.0.1:0",
    "mxp": "mxp://127.0.0.1:0",
}


def module(name: str) -> Any:
    try:
        return importlib.import_module(f"intentus_trio.transports.{name}")
    except ImportError as exc:  # an optional extra that is not installed
        pytest.skip(f"{name} transport unavailable: {exc}")


def make_router() -> Router:
    router = Router()

    async def echo(env: IntentEnvelope) -> dict[str, Any]:
        return {"echo": env.payload}

    async def chunks(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield {"i": i}

    async def nap(env: IntentEnvelope) -> dict[str, Any]:
        await trio.sleep(float(env.payload["s"]))
        return {"rested": True}

    router.register("echo", "echo", echo)
    router.register("chunks", "chunks", chunks)
    router.register("nap", "nap", nap)
    return router


@asynccontextmanager
async def serving(name: str, protector: EmclProtector) -> AsyncIterator[str]:
    mod = module(name)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: mod.serve(make_router(), TRANSPORTS[name], protector=protector,
                                          require_emcl=True, task_status=task_status))
        try:
            yield url
        finally:
            nursery.cancel_scope.cancel()


def client_for(name: str, url: str, **options: Any) -> Any:
    return module(name).open_client(url, timeout=10.0, **options)


def group_protectors() -> tuple[Callable[[str], EmclProtector], EmclProtector]:
    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    return (lambda agent: EmclProtector(ring, agent, role=Role.CLIENT),
            EmclProtector(ring, "server", role=Role.SERVER))


@pytest.mark.parametrize("name", list(TRANSPORTS))
async def test_sealed_calls_and_refusals(name: str) -> None:
    make_client, server = group_protectors()
    async with serving(name, server) as url:
        async with client_for(name, url, protector=make_client("c1")) as client:
            reply = await client.send_intent(new_intent("echo", {"secret": SECRET}))
            assert reply.ok, reply
            assert reply.payload == {"echo": {"secret": SECRET}}
            items = [item async for item in client.send_stream(new_intent("chunks"))]
            assert [i.payload for i in items if isinstance(i, StreamChunk)] == [
                {"i": 0}, {"i": 1}, {"i": 2}]
            assert isinstance(items[-1], AgentResponse) and items[-1].ok
        # Plaintext is refused by require_emcl.
        async with client_for(name, url) as plain:
            refused = await plain.send_intent(new_intent("echo"))
            assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE
        # A client with another group's key is refused; its error reply stays readable.
        stranger_ring = Keyring()
        stranger_ring.add_group_key("g1", generate_master_key())
        stranger = EmclProtector(stranger_ring, "c2", role=Role.CLIENT)
        async with client_for(name, url, protector=stranger) as client:
            refused = await client.send_intent(new_intent("echo"))
            assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE
            assert refused.error.details.get("reason") == "tampered"
            assert SECRET not in repr(refused)
        # The server keeps serving.
        async with client_for(name, url, protector=make_client("c3")) as client:
            assert (await client.send_intent(new_intent("echo", {"n": 3}))).ok


def pair_protectors(n: int) -> tuple[list[EmclProtector], EmclProtector]:
    """Clients c0..c(n-1) and a server that share pair keys only (no group key)."""
    server_static = X25519KeyPair.generate()
    server_ring = Keyring()
    server_ring.set_static_key(server_static)
    server = EmclProtector(server_ring, "server", role=Role.SERVER)
    clients = []
    for i in range(n):
        static = X25519KeyPair.generate()
        ring = Keyring()
        ring.set_static_key(static)
        ring.add_peer("server", server_static.public)
        server_ring.add_peer(f"c{i}", static.public)
        clients.append(EmclProtector(ring, f"c{i}", peer_id="server", role=Role.CLIENT))
    return clients, server


@pytest.mark.parametrize("name", list(TRANSPORTS))
async def test_pair_mode_replies_reach_the_right_client(name: str) -> None:
    clients, server = pair_protectors(3)
    async with serving(name, server) as url:
        results: dict[int, AgentResponse] = {}

        async def run(i: int) -> None:
            async with client_for(name, url, protector=clients[i]) as client:
                for j in range(3):
                    results[i * 10 + j] = await client.send_intent(
                        new_intent("echo", {"i": i, "j": j}))

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(run, i)
    for key, reply in results.items():
        assert reply.ok, reply
        assert reply.payload == {"echo": {"i": key // 10, "j": key % 10}}


@pytest.mark.parametrize("name", list(TRANSPORTS))
async def test_sealed_subscriptions_and_events(name: str) -> None:
    """Subscribing (a control exchange on WebSocket and MXP) and pushed events, all sealed."""
    from intentus_trio.protocol.factory import new_event

    make_client, server = group_protectors()
    async with serving(name, server) as url, \
            client_for(name, url, protector=make_client("sub")) as subscriber, \
            client_for(name, url, protector=make_client("pub")) as publisher:
        with trio.fail_after(20):
            # Publish until the subscription, which crosses the network, sees one.
            async with subscriber.subscribe("secret.*") as events, \
                    trio.open_nursery() as nursery:
                async def publish() -> None:
                    while True:
                        await publisher.publish(new_event("secret.note", {"s": SECRET}))
                        await trio.sleep(0.05)

                nursery.start_soon(publish)
                event = await events.__anext__()
                nursery.cancel_scope.cancel()
        assert event.event_type == "secret.note" and event.payload == {"s": SECRET}


#: Transports whose subscribers send a sealed subscribe request: their events are sealed
#: for that subscriber, so pair keys work. The others have no subscriber key to use.
PER_SUBSCRIBER = ("websocket", "mxp")


@pytest.mark.parametrize("name", PER_SUBSCRIBER)
async def test_pair_mode_events_are_sealed_for_each_subscriber(name: str) -> None:
    from intentus_trio.protocol.factory import new_event

    (first, second, publisher_key), server = pair_protectors(3)
    async with serving(name, server) as url, \
            client_for(name, url, protector=first) as sub1, \
            client_for(name, url, protector=second) as sub2, \
            client_for(name, url, protector=publisher_key) as publisher:
        with trio.fail_after(20):
            async with sub1.subscribe("note.*") as events1, sub2.subscribe("note.*") as events2:
                await publisher.publish(new_event("note.x", {"s": SECRET}))
                got1, got2 = await events1.__anext__(), await events2.__anext__()
        assert got1.payload == got2.payload == {"s": SECRET}
        # The server holds pair keys only: each subscriber opened its copy, so each copy
        # was sealed under that subscriber's key.
        assert (await sub1.send_intent(new_intent("echo", {"n": 1}))).ok


@pytest.mark.parametrize("name", [n for n in TRANSPORTS if n not in PER_SUBSCRIBER])
async def test_an_event_that_cannot_be_sealed_is_skipped_and_nothing_else_breaks(
        name: str) -> None:
    """With pair keys only, a server has no key to seal a pushed event with: the event is
    skipped, and the subscriber's connection and its call in flight carry on."""
    from intentus_trio.protocol.factory import new_event

    (subscriber_key, publisher_key), server = pair_protectors(2)
    async with serving(name, server) as url, \
            client_for(name, url, protector=subscriber_key) as subscriber, \
            client_for(name, url, protector=publisher_key) as publisher:
        with trio.fail_after(20):
            async with subscriber.subscribe("note.*"):
                replies: list[AgentResponse] = []
                async with trio.open_nursery() as nursery:
                    async def call() -> None:
                        replies.append(await subscriber.send_intent(new_intent("nap",
                                                                               {"s": 0.5})))

                    nursery.start_soon(call)
                    await trio.lowlevel.checkpoint()  # the call goes out on the subscriber's link
                    for _ in range(3):
                        await publisher.publish(new_event("note.x", {"s": SECRET}))
            assert replies[0].ok, replies[0]
            assert (await subscriber.send_intent(new_intent("echo", {"n": 1}))).ok


async def test_websocket_credit_and_cancel_frames_are_not_held_as_pending() -> None:
    """Nothing answers them: kept as pending requests they would fill the bounded table."""
    make_client, server = group_protectors()
    protector = make_client("c1")
    router = make_router()

    async def many(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        for i in range(40):
            yield {"i": i}

    router.register("many", "many", many)
    mod = module("websocket")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: mod.serve(
            router, TRANSPORTS["websocket"], protector=server, require_emcl=True,
            task_status=task_status))
        async with client_for("websocket", url, protector=protector, stream_window=4) as client:
            items = [item async for item in client.send_stream(new_intent("many"))]
            assert len(items) == 41 and items[-1].ok  # type: ignore[union-attr]
            with trio.move_on_after(0.05):  # the client cancels the call on the server
                await client.send_intent(new_intent("nap", {"s": 30}))
            assert (await client.send_intent(new_intent("echo"))).ok
            assert len(protector.pending) == 1  # the abandoned nap call only
        nursery.cancel_scope.cancel()
