"""WebSocket liveness over real sockets: dropped connections, reconnects, heartbeats, idle.

Timer-driven tests use a MockClock that jumps only after every task has been idle for 20 ms
of real time: loopback I/O completes well within that, so time moves exactly when the
program is waiting for a timer.
"""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.errors import ConnectionFailure
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, Event
from intentus_trio.transports.websocket import open_client

from .ws_helpers import Gate, count_tasks, make_router, running_relay, running_server


@pytest.fixture
def jump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def transport_code(response: AgentResponse) -> str | None:
    assert response.error is not None, response
    return response.error.details.get("transportCode")


async def until(predicate: object) -> None:
    """Wait, without sleeping, until ``predicate()`` holds (tasks must make progress)."""
    assert callable(predicate)
    with trio.fail_after(30):
        while not predicate():
            await trio.testing.wait_all_tasks_blocked(cushion=0.005)
            await trio.lowlevel.checkpoint()


async def test_in_flight_calls_fail_at_once_and_the_client_reconnects() -> None:
    gate = Gate()
    async with running_server(make_router(gate)) as (url, _server):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, \
                open_client(relay.url, timeout=None, backoff_initial=0.01) as client:
            results: list[AgentResponse] = []

            async def call(i: int) -> None:
                results.append(await client.send_intent(new_intent("gate", {"i": i})))

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(call, i)
                await gate.wait_entered(10)
                with trio.fail_after(2):  # no deadline on the calls: only the drop ends them
                    relay.cut()
                    await until(lambda: len(results) == 10)
            assert all(transport_code(r) == TransportCode.CONNECTION_FAILURE for r in results)
            assert all(r.error is not None and r.error.retryable for r in results)
            response = await client.send_intent(new_intent("echo", {"back": True}))
            assert response.ok and response.payload == {"back": True}
            assert client.stats.connects == 2 and relay.connections == 2


async def test_subscriptions_are_re_established_after_a_reconnect() -> None:
    router = make_router()
    async with running_server(router) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, \
                open_client(relay.url, backoff_initial=0.01) as client, \
                client.subscribe("news.*") as news:
            assert news.established == 1
            router.events.publish(new_event("news.a", {"n": 1}))
            with trio.fail_after(5):
                assert (await news.__anext__()).payload == {"n": 1}
            relay.cut()
            await until(lambda: news.established == 2 and news.active)
            router.events.publish(new_event("news.b", {"n": 2}))
            with trio.fail_after(5):
                assert (await news.__anext__()).payload == {"n": 2}


async def test_heartbeat_detects_a_silent_server(jump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    async with running_server(make_router(gate), heartbeat_interval=None) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, open_client(
            relay.url, timeout=None, heartbeat_interval=5.0, heartbeat_timeout=2.0,
            backoff_initial=0.01,
        ) as client:
            await client.wait_connected()
            relay.freeze()  # the TCP connection stays open but nothing gets through
            start = trio.current_time()
            response = await client.send_intent(new_intent("echo"))
            assert transport_code(response) == TransportCode.CONNECTION_FAILURE
            assert response.error is not None and "no pong" in response.error.message
            assert trio.current_time() - start <= 5.0 + 2.0 + 0.1
            # New connections are not frozen: the client is back.
            assert (await client.send_intent(new_intent("echo", {"x": 1}))).ok


async def test_server_heartbeat_drops_a_dead_client(jump_clock: trio.testing.MockClock) -> None:
    async with running_server(heartbeat_interval=5.0, heartbeat_timeout=2.0) as (url, server):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, open_client(
            relay.url, heartbeat_interval=None, reconnect=False) as client:
            await client.wait_connected()
            relay.freeze()
            await server.wait_connections(0)
            assert server.stats.aborted == 1
            assert trio.current_time() <= 5.0 + 2.0 + 1.0


async def test_idle_connections_are_closed_but_subscribers_stay(
    jump_clock: trio.testing.MockClock,
) -> None:
    async with running_server(idle_timeout=30.0, heartbeat_interval=10.0) as (url, server), \
            open_client(url) as subscriber, subscriber.subscribe("x"):
        async with open_websocket_url(url) as quiet:
            with pytest.raises(ConnectionClosed) as info:
                await quiet.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1001 and info.value.reason.reason == "idle timeout"
        assert trio.current_time() >= 30.0
        await trio.sleep(100)
        assert subscriber.connected and subscriber.stats.connects == 1
        assert len(server.connections) == 1


async def test_unreachable_server_fails_fast() -> None:
    async with running_server() as (url, _):
        pass  # the port is free again
    async with open_client(url, reconnect=False) as client:
        with trio.fail_after(5):
            response = await client.send_intent(new_intent("echo"))
        assert transport_code(response) == TransportCode.CONNECTION_FAILURE
        assert response.error is not None and "cannot" in response.error.message


async def test_reconnects_with_backoff_until_the_server_returns(
    jump_clock: trio.testing.MockClock,
) -> None:
    router = make_router()
    async with running_server(router) as (url, _):
        pass
    async with open_client(url, backoff_initial=0.1, backoff_max=4.0) as client:
        failed = await client.send_intent(new_intent("echo"))
        assert transport_code(failed) == TransportCode.CONNECTION_FAILURE
        await trio.sleep(60)
        # Exponential backoff capped at 4 s: about 20 attempts in a minute, not thousands.
        assert 10 <= client.stats.attempts <= 40
        async with running_server(router, url) as (same_url, _):
            assert same_url == url
            await client.wait_connected()
            assert (await client.send_intent(new_intent("echo", {"ok": 1}))).ok


async def test_call_deadline_while_disconnected(jump_clock: trio.testing.MockClock) -> None:
    async with running_server() as (url, _):
        pass
    async with open_client(url, backoff_initial=30.0, backoff_max=30.0) as client:
        await client.send_intent(new_intent("echo"))  # the first attempt fails
        start = trio.current_time()
        response = await client.send_intent(new_intent("echo"), timeout=3.0)
        assert transport_code(response) == TransportCode.TIMEOUT
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)


async def test_subscription_iteration_ends_when_the_client_closes() -> None:
    router = make_router()
    async with running_server(router) as (url, _), open_client(url) as client, \
            client.subscribe("news") as news:
        received: list[Event] = []
        first = trio.Event()

        async def consume() -> None:
            async for event in news:
                received.append(event)
                first.set()

        with trio.fail_after(5):  # a hang guard only: the consumer must end by itself
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                router.events.publish(new_event("news", {"n": 1}))
                await first.wait()
                await client.aclose()
        assert [e.payload for e in received] == [{"n": 1}]
        assert not news.active


async def test_without_reconnect_subscribing_fails_once_the_connection_is_lost() -> None:
    async with running_server() as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, \
                open_client(relay.url, reconnect=False, timeout=None) as client:
            await client.wait_connected()
            relay.cut()
            await until(lambda: not client.connected)
            with trio.fail_after(5), pytest.raises(ConnectionFailure) as lost:
                async with client.subscribe("x"):
                    pytest.fail("entered a subscription no connection can carry")
            assert not lost.value.retryable


async def test_without_reconnect_subscribing_to_an_unreachable_server_fails() -> None:
    async with running_server() as (url, _):
        pass  # the port is free again
    async with open_client(url, reconnect=False, timeout=None) as client:
        with trio.fail_after(5), pytest.raises(ConnectionFailure) as unreachable:
            async with client.subscribe("x"):
                pytest.fail("entered a subscription no connection can carry")
        assert not unreachable.value.retryable


async def test_without_reconnect_iterating_fails_once_the_connection_is_lost() -> None:
    router = make_router()
    async with running_server(router) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay, \
                open_client(relay.url, reconnect=False) as client, \
                client.subscribe("news") as news:
            router.events.publish(new_event("news", {"n": 1}))
            with trio.fail_after(5):
                assert (await news.__anext__()).payload == {"n": 1}
            relay.cut()
            with trio.fail_after(5), pytest.raises(ConnectionFailure) as lost:
                await news.__anext__()
            assert not lost.value.retryable
            with pytest.raises(ConnectionFailure):  # and on every later attempt
                await news.__anext__()


async def test_aclose_inside_the_block_is_idempotent_and_leaves_the_block_running() -> None:
    async with running_server() as (url, _):
        me = trio.lowlevel.current_task()
        baseline = count_tasks(me)
        finished = False
        async with open_client(url) as client:
            async with client.subscribe("x") as sub:
                async with trio.open_nursery() as mine:
                    mine.start_soon(client.aclose)
                    await client.aclose()  # twice, and concurrently
                await trio.lowlevel.checkpoint()  # the block itself was not cancelled
                assert not client.connected
                assert count_tasks(me) == baseline  # the client's own tasks have ended
                with trio.fail_after(5):
                    assert [e async for e in sub] == []
                with pytest.raises(trio.ClosedResourceError):
                    await client.send_intent(new_intent("echo"))
                with pytest.raises(trio.ClosedResourceError):
                    async with client.subscribe("y"):
                        pass
            await client.aclose()
            finished = True
        await client.aclose()  # after the block as well
        assert finished


async def test_aclose_inside_the_block_while_reconnecting(
    jump_clock: trio.testing.MockClock,
) -> None:
    async with running_server() as (url, _):
        pass
    async with open_client(url, backoff_initial=30.0, backoff_max=30.0) as client:
        failed = await client.send_intent(new_intent("echo"))  # the supervisor backs off
        assert transport_code(failed) == TransportCode.CONNECTION_FAILURE
        start = trio.current_time()
        await client.aclose()
        await client.aclose()
        await trio.lowlevel.checkpoint()
        assert trio.current_time() - start < 1.0  # the backoff sleep was cut short
    assert trio.current_time() - start < 1.0
