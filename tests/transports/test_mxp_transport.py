"""MXP transport on 127.0.0.1: calls, streams, events, deadlines, pool, keys, EMCL, registry.

Every test runs over each stream backend available: real MXP streams (UDP, encrypted) once
the driver has them, and ``TcpStreamBackend`` (the same stream interface over TCP).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio

from intentus_trio.mxp.noise import KeyPair
from intentus_trio.protocol.enums import ErrorCode, Priority, TransportCode
from intentus_trio.protocol.errors import ConnectionFailure, RemoteError
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import (
    AgentResponse,
    IntentEnvelope,
    StreamChunk,
)
from intentus_trio.routing.router import Router
from intentus_trio.transports.base import Transport
from intentus_trio.transports.mxp import (
    Backend,
    MxpEndpoint,
    MxpPool,
    MxpServer,
    MxpTransport,
    TcpStreamBackend,
    format_key,
    open_client,
    streams_available,
)
from intentus_trio.transports.registry import open_transport, server_for

from ..protectors import StandInProtector

BACKENDS = [
    pytest.param("tcp", id="tcp"),
    pytest.param("mxp", id="mxp", marks=pytest.mark.skipif(
        not streams_available(), reason="the MXP driver has no streams yet")),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend | None:
    return TcpStreamBackend() if request.param == "tcp" else None


class Gate:
    """Lets agents wait for each other (no sleeps standing in for synchronisation)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.changed = trio.Event()
        self.release = trio.Event()
        self.cancelled = 0
        self.cancelled_event = trio.Event()

    async def wait_arrivals(self, count: int) -> None:
        while self.arrived < count:
            await self.changed.wait()

    async def enter(self) -> None:
        self.arrived += 1
        self.changed.set()
        self.changed = trio.Event()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled += 1
            self.cancelled_event.set()
            raise


def make_router(gate: Gate | None = None) -> Router:
    router = Router(name="mxp-test")
    gate = gate or Gate()

    async def echo(env: IntentEnvelope) -> dict[str, Any]:
        return dict(env.payload)

    async def wait(env: IntentEnvelope) -> dict[str, Any]:
        await gate.enter()
        return {"released": True}

    async def count(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        for i in range(int(env.payload.get("n", 3))):
            yield {"i": i}

    async def hang_after_one(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        yield {"i": 0}
        await gate.enter()

    async def big(env: IntentEnvelope) -> dict[str, Any]:
        return {"blob": "x" * int(env.payload["size"])}

    router.register("echo", "echo", echo)
    router.register("wait", "wait", wait)
    router.register("count", "count", count)
    router.register("hang", "hang", hang_after_one)
    router.register("big", "big", big)
    return router


@asynccontextmanager
async def serving(router: Router, backend: Backend | None, **options: Any
                  ) -> AsyncIterator[MxpServer]:
    server = MxpServer(router, backend=backend, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def client(url: str, backend: Backend | None, **options: Any) -> MxpTransport:
    return open_client(url, backend=backend, **options)


def transport_code(response: AgentResponse) -> str | None:
    assert response.error is not None, response
    code: str | None = response.error.details.get("transportCode")
    return code


# --------------------------------------------------------------------------- URLs and keys


def test_url_carries_the_key_in_any_usual_encoding() -> None:
    key = KeyPair.generate().public
    url = f"mxp://127.0.0.1:4433?key={format_key(key)}"
    assert MxpEndpoint.parse(url) == MxpEndpoint("127.0.0.1", 4433, key)
    assert MxpEndpoint.parse(url).url == url
    assert MxpEndpoint.parse(f"mxp://h:1?key={key.hex()}").key == key
    assert MxpEndpoint.parse(f"mxp://h:1?key={base64.b64encode(key).decode()}").key == key
    assert MxpEndpoint.parse("mxp://[::1]:9").url == "mxp://[::1]:9"
    for bad in ("http://h:1", "mxp://h:1?key=abc", "mxp://h:1?other=1", "mxp://h:1/path",
                "mxp://:1"):
        with pytest.raises(ValueError):
            MxpEndpoint.parse(bad)


def test_client_needs_the_server_key() -> None:
    with pytest.raises(ValueError, match="public key"):
        MxpTransport("mxp://127.0.0.1:4433")
    key = KeyPair.generate()
    assert MxpTransport("mxp://127.0.0.1:4433", server_key=key.public).endpoint.key == key.public


# --------------------------------------------------------------------------- calls


async def test_serve_reports_url_with_key_and_calls_round_trip(backend: Backend | None) -> None:
    key = KeyPair.generate()
    async with serving(make_router(), backend, static_key=key) as server:
        assert server.url is not None
        endpoint = MxpEndpoint.parse(server.url)
        assert endpoint.port != 0 and endpoint.key == key.public
        async with client(server.url, backend) as transport:
            assert isinstance(transport, Transport)
            env = new_intent("echo", {"hello": "world"})
            response = await transport.send_intent(env)
            assert response.ok and response.payload == {"hello": "world"}
            assert response.trace_id == env.metadata.trace_id
            assert response.metadata["agent"] == "echo"
            missing = await transport.send_intent(new_intent("nobody-serves-this"))
            assert missing.error is not None
            assert missing.error.code is ErrorCode.CAPABILITY_NOT_FOUND


async def test_concurrent_calls_share_one_connection(backend: Backend | None) -> None:
    gate = Gate()
    async with serving(make_router(gate), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            results: list[AgentResponse] = []

            async def call() -> None:
                results.append(await transport.send_intent(new_intent("wait")))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(call)
                with trio.fail_after(10):
                    await gate.wait_arrivals(20)  # all 20 in the agent at once
                gate.release.set()
            assert len(results) == 20 and all(r.ok for r in results)
            assert transport.pool.stats.connects == 1
            assert server.stats.connections == 1


async def test_urgency_follows_priority(backend: Backend | None) -> None:
    seen: list[int] = []
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            assert (await transport.send_intent(new_intent("echo"))).ok
            link = transport.pool.links(transport.endpoint)[0]
            link.conn = _UrgencySpy(link.conn, seen)
            for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
                env = new_intent("echo", priority=priority)
                assert (await transport.send_intent(env)).ok
    assert seen == [0, 3, 5]


class _UrgencySpy:
    def __init__(self, conn: Any, seen: list[int]) -> None:
        self._conn = conn
        self._seen = seen

    async def open_stream(self, *, bidirectional: bool = True, urgency: int = 3) -> Any:
        self._seen.append(urgency)
        return await self._conn.open_stream(bidirectional=bidirectional, urgency=urgency)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


# --------------------------------------------------------------------------- streams


async def test_stream_yields_chunks_then_final(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            items = [item async for item in transport.send_stream(new_intent("count", {"n": 5}))]
            assert items[:-1] == [StreamChunk(i, {"i": i}) for i in range(5)]
            final = items[-1]
            assert isinstance(final, AgentResponse) and final.ok
            failed = [item async for item in transport.send_stream(new_intent("echo-missing"))]
            assert len(failed) == 1 and isinstance(failed[0], AgentResponse)
            assert failed[0].error is not None


async def test_abandoned_stream_leaves_connection_usable(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            async with aclosing(transport.send_stream(new_intent("count", {"n": 10_000}))) as s:
                assert isinstance(await s.__anext__(), StreamChunk)
            assert (await transport.send_intent(new_intent("echo", {"a": 1}))).ok
            assert transport.pool.stats.connects == 1


async def test_a_client_stopping_a_stream_is_no_server_error(
        backend: Backend | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="intentus_trio.transports.mxp")
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            for _ in range(5):
                async with aclosing(transport.send_stream(
                        new_intent("count", {"n": 100_000}))) as items:
                    assert isinstance(await items.__anext__(), StreamChunk)
        with trio.fail_after(5):
            await server.wait_connections(0)  # every stream's handler has finished
        assert server.stats.cancelled == 5
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# --------------------------------------------------------------------------- events


async def test_subscribe_and_publish(backend: Backend | None) -> None:
    router = make_router()
    async with serving(router, backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            async with transport.subscribe("news.*") as sub:
                assert sub.active
                ack = await transport.publish_acked(new_event("news.local", {"n": 1}))
                assert ack.ok and ack.payload == {"delivered": 1}
                await transport.publish(new_event("other", {"n": 2}))
                await transport.publish(new_event("news.world", {"n": 3}))
                with trio.fail_after(5):
                    first = await sub.__anext__()
                    second = await sub.__anext__()
                assert [first.payload, second.payload] == [{"n": 1}, {"n": 3}]
            with trio.fail_after(5):
                await server.wait_subscriptions(0)  # the server saw the stream end
            assert router.events.subscriber_count == 0


async def test_slow_subscriber_drops_oldest(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend, subscription_buffer=2) as transport, \
                transport.subscribe("tick") as sub:
            for i in range(6):
                await transport.publish(new_event("tick", {"i": i}))
            with trio.fail_after(5):
                while sub._local.delivered < 6:  # noqa: ASYNC110 (bounded poll of a buffer)
                    await trio.sleep(0.005)
            got = [(await sub.__anext__()).payload["i"] for _ in range(2)]
            assert got == [4, 5] and sub.dropped == 4


async def test_subscription_refused_raises(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            with pytest.raises(ValueError):
                async with transport.subscribe(""):
                    pass
            assert (await transport.send_intent(new_intent("echo"))).ok


# --------------------------------------------------------------------------- deadlines


async def test_deadline_resets_stream_cancels_agent_and_connection_lives(
        backend: Backend | None) -> None:
    gate = Gate()
    async with serving(make_router(gate), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            assert (await transport.send_intent(new_intent("echo"))).ok
            response = await transport.send_intent(new_intent("wait"), timeout=0.3)
            assert transport_code(response) == TransportCode.TIMEOUT
            with trio.fail_after(5):
                await gate.cancelled_event.wait()  # the server cancelled the agent
            assert (await transport.send_intent(new_intent("echo", {"b": 2}))).payload == {"b": 2}
            assert transport.pool.stats.connects == 1


async def test_caller_cancellation_cancels_agent(backend: Backend | None) -> None:
    gate = Gate()
    async with serving(make_router(gate), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.send_intent, new_intent("wait"))
                with trio.fail_after(5):
                    await gate.wait_arrivals(1)
                nursery.cancel_scope.cancel()
            with trio.fail_after(5):
                await gate.cancelled_event.wait()
            assert (await transport.send_intent(new_intent("echo"))).ok


async def test_server_caps_call_time(backend: Backend | None) -> None:
    gate = Gate()
    async with serving(make_router(gate), backend, max_call_timeout=0.2) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            response = await transport.send_intent(new_intent("wait"), timeout=10)
            assert transport_code(response) == TransportCode.TIMEOUT
            assert "server" in response.error.message  # type: ignore[union-attr]
            assert server.stats.timeouts == 1


async def test_stream_deadline(backend: Backend | None) -> None:
    gate = Gate()
    async with serving(make_router(gate), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            items = [i async for i in transport.send_stream(new_intent("hang"), timeout=0.3)]
            assert items[0] == StreamChunk(0, {"i": 0})
            assert isinstance(items[1], AgentResponse)
            assert transport_code(items[1]) == TransportCode.TIMEOUT
            with trio.fail_after(5):
                await gate.cancelled_event.wait()
            assert (await transport.send_intent(new_intent("echo"))).ok


# --------------------------------------------------------------------------- size limits


async def test_payload_limits_both_ways(backend: Backend | None) -> None:
    async with serving(make_router(), backend, max_frame_bytes=4096) as server:
        assert server.url is not None
        async with client(server.url, backend, max_frame_bytes=2048) as transport:
            local = await transport.send_intent(new_intent("echo", {"x": "y" * 5000}))
            assert transport_code(local) == TransportCode.PAYLOAD_TOO_LARGE
            reply = await transport.send_intent(new_intent("big", {"size": 3000}))
            assert transport_code(reply) == TransportCode.PAYLOAD_TOO_LARGE
            server_side = await transport.send_intent(new_intent("big", {"size": 5000}))
            assert transport_code(server_side) == TransportCode.PAYLOAD_TOO_LARGE
            assert (await transport.send_intent(new_intent("echo"))).ok


# --------------------------------------------------------------------------- pool


async def test_pool_reuses_and_reconnects_after_server_restart(backend: Backend | None) -> None:
    key = KeyPair.generate()
    router = make_router()
    pool = MxpPool(backend=backend)
    async with pool:
        async with trio.open_nursery() as first:
            url = await first.start(MxpServer(router, static_key=key, backend=backend).run)
            async with client(url, None, pool=pool) as transport:
                for _ in range(3):
                    assert (await transport.send_intent(new_intent("echo"))).ok
            assert pool.stats.connects == 1
            link = pool.links(MxpEndpoint.parse(url))[0]
            first.cancel_scope.cancel()  # the server shuts down and closes its connections
        with trio.fail_after(10):
            await link.conn.wait_closed()
        assert not pool.links(MxpEndpoint.parse(url))
        async with trio.open_nursery() as second:
            again = MxpServer(router, MxpEndpoint.parse(url).with_key(None).url,
                              static_key=key, backend=backend)
            assert await second.start(again.run) == url
            async with client(url, None, pool=pool) as transport:
                assert (await transport.send_intent(new_intent("echo", {"c": 3}))).ok
            assert pool.stats.connects == 2
            second.cancel_scope.cancel()


async def test_shared_pool_between_transports(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with MxpPool(backend=backend) as pool:
            async with client(server.url, None, pool=pool) as one, \
                    client(server.url, None, pool=pool) as two:
                assert (await one.send_intent(new_intent("echo"))).ok
                assert (await two.send_intent(new_intent("echo"))).ok
            assert pool.stats.connects == 1


async def test_wrong_server_key_is_a_clear_connection_failure(backend: Backend | None) -> None:
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        wrong = MxpEndpoint.parse(server.url).with_key(KeyPair.generate().public).url
        async with client(wrong, backend, connect_timeout=0.5) as transport:
            response = await transport.send_intent(new_intent("echo"), timeout=5)
            assert transport_code(response) == TransportCode.CONNECTION_FAILURE
            assert "cannot connect" in response.error.message  # type: ignore[union-attr]
            with pytest.raises(ConnectionFailure):  # a local failure keeps its own type
                await transport.publish(new_event("x"))


async def test_refused_client_key(backend: Backend | None) -> None:
    allowed = KeyPair.generate()
    async with serving(make_router(), backend, client_keys=[allowed.public]) as server:
        assert server.url is not None
        async with client(server.url, backend, connect_timeout=0.5) as stranger:
            refused = await stranger.send_intent(new_intent("echo"), timeout=5)
            assert transport_code(refused) == TransportCode.CONNECTION_FAILURE
        async with client(server.url, backend, static_key=allowed) as friend:
            assert (await friend.send_intent(new_intent("echo"))).ok


async def test_unreachable_server_and_closed_transport(backend: Backend | None) -> None:
    key = KeyPair.generate().public
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"mxp://127.0.0.1:{port}?key={format_key(key)}"
    async with client(url, backend, connect_timeout=0.3) as transport:
        response = await transport.send_intent(new_intent("echo"), timeout=5)
        assert transport_code(response) == TransportCode.CONNECTION_FAILURE
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_intent(new_intent("echo"))


async def test_closing_the_transport_inside_its_block_leaves_the_block_running(
        backend: Backend | None) -> None:
    reached = []
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            assert (await transport.send_intent(new_intent("echo"))).ok
            async with trio.open_nursery() as mine:
                mine.start_soon(transport.aclose)
                await transport.aclose()  # twice, and concurrently: idempotent
                await trio.lowlevel.checkpoint()  # the caller's block goes on
            reached.append("after close")
            assert not transport.connected  # it owned the pool: its connection is closed
            with pytest.raises(trio.ClosedResourceError, match="closed"):
                await transport.send_intent(new_intent("echo"))
            with pytest.raises(trio.ClosedResourceError):
                async with transport.subscribe("x"):
                    pass
        reached.append("after exit")
    assert reached == ["after close", "after exit"]


async def test_subscription_ends_when_the_transport_closes(backend: Backend | None) -> None:
    rest: list[object] | None = None
    async with serving(make_router(), backend) as server:
        assert server.url is not None
        async with client(server.url, backend) as transport:
            async with transport.subscribe("news") as sub:
                await transport.publish(new_event("news", {"n": 1}))
                with trio.fail_after(5):
                    assert (await sub.__anext__()).payload == {"n": 1}
                await transport.aclose()
                assert not sub.active
                with trio.fail_after(5):
                    rest = [event async for event in sub]
            with trio.fail_after(5):
                await server.wait_subscriptions(0)
    assert rest == []


# --------------------------------------------------------------------------- EMCL


async def test_emcl_protector(backend: Backend | None) -> None:
    server_protector, client_protector = StandInProtector(), StandInProtector()
    async with serving(make_router(), backend, protector=server_protector,
                       require_emcl=True) as server:
        assert server.url is not None
        async with client(server.url, backend, protector=client_protector) as transport:
            assert (await transport.send_intent(new_intent("echo", {"s": 1}))).payload == {"s": 1}
            items = [i async for i in transport.send_stream(new_intent("count", {"n": 2}))]
            assert len(items) == 3 and isinstance(items[-1], AgentResponse) and items[-1].ok
            async with transport.subscribe("sealed") as sub:
                await transport.publish(new_event("sealed", {"e": 1}))
                with trio.fail_after(5):
                    assert (await sub.__anext__()).payload == {"e": 1}
        assert server_protector.opened >= 4 and client_protector.opened >= 5
        async with client(server.url, backend) as plain:
            refused = await plain.send_intent(new_intent("echo"))
            assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE
            with pytest.raises(RemoteError) as info:  # the server's refusal, as received
                await plain.publish(new_event("sealed"))
            assert info.value.to_error_info().code is ErrorCode.EMCL_FAILURE
        async with client(server.url, backend, protector=StandInProtector(b"other")) as forged:
            bad = await forged.send_intent(new_intent("echo"))
            assert bad.error is not None and bad.error.code is ErrorCode.EMCL_FAILURE


# --------------------------------------------------------------------------- registry


async def test_registry_serves_and_opens_mxp_urls() -> None:
    if not streams_available():
        pytest.skip("the MXP driver has no streams yet")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server_for("mxp://127.0.0.1:0"), make_router(),
                                  "mxp://127.0.0.1:0")
        assert MxpEndpoint.parse(url).key is not None
        async with open_transport(url) as transport:
            assert isinstance(transport, MxpTransport)
            assert (await transport.send_intent(new_intent("echo", {"r": 1}))).payload == {"r": 1}
        nursery.cancel_scope.cancel()


async def test_no_tasks_leak(backend: Backend | None) -> None:
    async with trio.open_nursery() as nursery:
        server = MxpServer(make_router(), backend=backend, shutdown_timeout=0.5)
        url = await nursery.start(server.run)
        await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        baseline = _tasks(nursery)
        for i in range(3):
            async with client(url, backend) as transport:
                assert (await transport.send_intent(new_intent("echo", {"i": i}))).ok
                async with transport.subscribe("e"):
                    pass
                async with aclosing(transport.send_stream(new_intent("count", {"n": 99}))) as s:
                    await s.__anext__()
        with trio.fail_after(5):
            await server.wait_connections(0)
            # A closed MXP connection's tasks linger while it drains (its CLOSE is
            # retransmitted if needed); they must all end.
            while _tasks(nursery) != baseline:  # noqa: ASYNC110 (bounded poll)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def _tasks(nursery: trio.Nursery) -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return sum(count(task) for task in nursery.child_tasks)
