"""PUB/SUB events through a node's XPUB hub."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from intentus_trio.protocol.errors import ConnectionFailure
from intentus_trio.protocol.factory import new_event
from intentus_trio.protocol.models import Event
from intentus_trio.transports.zeromq import open_client

from ..protectors import StandInProtector
from .zmq_helpers import make_router, running_node

TIMEOUT = 10.0


async def test_publish_reaches_matching_subscribers_only() -> None:
    async with running_node(make_router()) as server:
        url = server.urls["rpc"]
        with trio.fail_after(TIMEOUT):
            async with open_client(url) as alice, open_client(url) as bob, \
                    alice.subscribe("agent.ready") as exact, \
                    bob.subscribe("agent.*") as pattern:
                # Published after the subscriptions are confirmed: none may be missed.
                for kind in ("agent.ready", "agent.readyish", "agent.gone", "other"):
                    await bob.publish(new_event(kind, {"k": kind}))
                got = await exact.__anext__()
                assert got.event_type == "agent.ready" and got.payload == {"k": "agent.ready"}
                kinds = [(await pattern.__anext__()).event_type for _ in range(3)]
                assert kinds == ["agent.ready", "agent.readyish", "agent.gone"]
                # "agent.readyish" passed ZeroMQ's prefix filter but not the exact match.
                await bob.publish(new_event("agent.ready", {"second": True}))
                assert (await exact.__anext__()).payload == {"second": True}
                assert exact.skipped == 1  # type: ignore[attr-defined]


async def test_events_from_node_agents_and_late_joiners() -> None:
    router = make_router()
    async with running_node(router) as server, open_client(server.urls["rpc"]) as client:
        with trio.fail_after(TIMEOUT):
            router.events.publish(new_event("early", {"n": 0}))  # nobody subscribed yet
            await trio.testing.wait_all_tasks_blocked()  # the hub has sent it to nobody
            assert server.stats.events_published == 1
            async with client.subscribe("early") as sub:
                router.events.publish(new_event("early", {"n": 1}))
                event = await sub.__anext__()
                # The late joiner sees only what was published after it joined.
                assert event.payload == {"n": 1}


async def test_slow_subscriber_loses_newest_events_and_others_are_unaffected() -> None:
    router = make_router()
    async with running_node(router, hwm=50) as server:
        url = server.urls["rpc"]
        async with open_client(url, event_hwm=50) as slow_client, \
                open_client(url) as fast_client:
            with trio.fail_after(TIMEOUT):
                async with slow_client.subscribe("tick") as slow, \
                        fast_client.subscribe("tick") as fast:
                    total, batch, pad = 5000, 25, "x" * 4000
                    received_fast: list[int] = []
                    caught_up = trio.Event()
                    async with trio.open_nursery() as nursery:

                        async def read_fast() -> None:
                            nonlocal caught_up
                            async for event in fast:
                                received_fast.append(event.payload["i"])
                                if len(received_fast) % batch == 0:
                                    caught_up.set()
                                    caught_up = trio.Event()
                                if len(received_fast) == total:
                                    return

                        nursery.start_soon(read_fast)
                        for start in range(0, total, batch):
                            waiter = caught_up
                            for i in range(start, start + batch):
                                # 4 KB each, so kernel socket buffers cannot hold them all.
                                router.events.publish(new_event("tick", {"i": i, "pad": pad}))
                            # Pace by the fast subscriber; the slow one never reads.
                            await waiter.wait()
                    slow_seen: list[int] = []
                    with trio.move_on_after(0.5):  # read whatever the slow queue kept
                        while True:
                            event = await slow.__anext__()
                            slow_seen.append(event.payload["i"])
                    assert received_fast == list(range(total))
                    assert 0 < len(slow_seen) < total
                    assert slow_seen == sorted(slow_seen)  # order kept, newest dropped
                    assert slow_seen[0] == 0


async def test_subscribe_without_a_hub_fails_within_the_timeout() -> None:
    async with open_client("tcp://127.0.0.1:9", timeout=0.2) as client:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionFailure):
            async with client.subscribe("anything"):
                pass


async def test_publish_failure_raises_and_events_are_sealed_with_emcl() -> None:
    async with open_client("tcp://127.0.0.1:9", timeout=0.2) as client:
        with pytest.raises(ConnectionFailure):
            await client.publish(new_event("x"))
    async with open_client("tcp://127.0.0.1:9", timeout=60) as client:
        with trio.fail_after(10), pytest.raises(ConnectionFailure):
            await client.publish(new_event("x"), timeout=0.2)  # the call's own timeout
    server_p, client_p = StandInProtector(), StandInProtector()
    async with running_node(make_router(), protector=server_p) as server, \
            open_client(server.urls["rpc"], protector=client_p) as client:
        with trio.fail_after(TIMEOUT):
            async with client.subscribe("secret") as sub:
                await client.publish(new_event("secret", {"s": 1}))
                event: Event = await sub.__anext__()
                assert event.payload == {"s": 1}
            assert server_p.opened >= 1 and client_p.opened >= 2
