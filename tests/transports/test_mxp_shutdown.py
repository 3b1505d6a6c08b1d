"""MXP server shutdown: calls in flight are answered within the grace period or get an error
reply, new work is refused at once, and the connections close only after that.

The real MXP driver runs over the in-memory network (``intentus_trio.testing.netsim``) on
trio's MockClock, so grace periods pass instantly and every run is the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from intentus_trio.mxp import Configuration, ServerConfiguration, mxp_connect, mxp_listen
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, StreamChunk
from intentus_trio.testing.netsim import LinkConditions, MemoryNetwork, open_memory_network
from intentus_trio.transports.mxp import MxpServer, MxpTransport, open_client
from intentus_trio.transports.mxp.backend import Address, ClientPolicy

from .test_mxp_transport import Gate, make_router, transport_code

SERVER_URL = "mxp://10.0.0.1:4433"
CLIENT_HOST = "10.0.0.2"


class MemoryBackend:
    """The transport's MXP connections over a ``MemoryNetwork`` instead of UDP sockets."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.net = net

    @asynccontextmanager
    async def connect(
        self, address: Address, server_key: bytes, *, static_key: KeyPair | None,
        connect_timeout: float, options: dict[str, Any],
    ) -> AsyncIterator[Any]:
        config = Configuration(static_key if static_key is not None else KeyPair.generate())
        async with mxp_connect(address, server_key, config, connect_timeout=connect_timeout,
                               carrier=self.net.bind((CLIENT_HOST, 0))) as conn:
            yield conn

    @asynccontextmanager
    async def listen(
        self, bind: Address, static_key: KeyPair, client_policy: ClientPolicy,
        options: dict[str, Any],
    ) -> AsyncIterator[Any]:
        config = ServerConfiguration(Configuration(static_key), client_policy)
        async with mxp_listen(self.net.bind(bind), config) as listener:
            yield listener


class Shutdown:
    """A server in a cancel scope of its own; ``begin`` cancels it and returns once it is
    draining, ``ended`` is set when it has stopped."""

    def __init__(self, server: MxpServer, scope: trio.CancelScope) -> None:
        self.server = server
        self.scope = scope
        self.began = 0.0
        self.ended = trio.Event()
        self.ended_at = 0.0

    async def begin(self) -> None:
        self.began = trio.current_time()
        self.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def shutting_down(net: MemoryNetwork, gate: Gate, **options: Any
                        ) -> AsyncIterator[tuple[Shutdown, MxpTransport]]:
    backend = MemoryBackend(net)
    server = MxpServer(make_router(gate), SERVER_URL, backend=backend, **options)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        shutdown = Shutdown(server, scope)

        async def run(task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await server.run(task_status=task_status)
            shutdown.ended_at = trio.current_time()
            shutdown.ended.set()

        url = await nursery.start(run)
        async with open_client(url, backend=backend, timeout=60) as transport:
            yield shutdown, transport
        scope.cancel()


async def test_calls_in_flight_are_answered_within_the_grace_period(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    results: list[Any] = []
    async with open_memory_network() as net, \
            shutting_down(net, gate, shutdown_timeout=5) as (shutdown, transport):

        async def call() -> None:
            results.append(await transport.send_intent(new_intent("wait")))

        async def stream() -> None:
            results.append([item async for item in transport.send_stream(
                new_intent("hang"))])

        async with trio.open_nursery() as calls:
            calls.start_soon(call)
            calls.start_soon(stream)
            await gate.wait_arrivals(2)
            await shutdown.begin()
            await trio.sleep(1)  # well within the grace period
            gate.release.set()
        await shutdown.ended.wait()
    unary, streamed = sorted(results, key=lambda r: isinstance(r, list))
    assert isinstance(unary, AgentResponse) and unary.payload == {"released": True}
    assert streamed[0] == StreamChunk(0, {"i": 0})
    assert isinstance(streamed[-1], AgentResponse) and streamed[-1].ok
    assert gate.cancelled == 0
    assert shutdown.ended_at - shutdown.began < 5  # it did not wait for the grace period


async def test_calls_still_running_after_the_grace_period_get_an_error_reply(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    results: list[Any] = []
    async with open_memory_network() as net, \
            shutting_down(net, gate, shutdown_timeout=2) as (shutdown, transport):

        async def call() -> None:
            results.append(await transport.send_intent(new_intent("wait")))

        async def stream() -> None:
            results.append([item async for item in transport.send_stream(
                new_intent("hang"))])

        async with trio.open_nursery() as calls:
            calls.start_soon(call)
            calls.start_soon(stream)
            await gate.wait_arrivals(2)
            await shutdown.begin()
        answered = trio.current_time() - shutdown.began
        await shutdown.ended.wait()
    assert gate.cancelled == 2  # the agents were cancelled at the end of the grace period
    assert 2 <= answered < 3
    unary, streamed = sorted(results, key=lambda r: isinstance(r, list))
    assert streamed[0] == StreamChunk(0, {"i": 0})
    for reply in (unary, streamed[-1]):
        assert isinstance(reply, AgentResponse)
        assert transport_code(reply) == TransportCode.CONNECTION_FAILURE
        assert reply.error is not None and reply.error.details["reason"] == "shutdown"
    assert shutdown.server.stats.timeouts == 0


async def test_new_calls_are_refused_at_once_while_draining(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    results: list[AgentResponse] = []
    async with open_memory_network() as net, \
            shutting_down(net, gate, shutdown_timeout=30) as (shutdown, transport):

        async def call() -> None:
            results.append(await transport.send_intent(new_intent("wait")))

        async with trio.open_nursery() as calls:
            calls.start_soon(call)
            await gate.wait_arrivals(1)
            await shutdown.begin()
            late = await transport.send_intent(new_intent("echo"))  # a new stream
            async with open_client(transport.url, backend=MemoryBackend(net)) as newcomer:
                stranger = await newcomer.send_intent(new_intent("echo"))  # a new connection
            refused_after = trio.current_time() - shutdown.began
            gate.release.set()
        await shutdown.ended.wait()
    for refused in (late, stranger):
        assert transport_code(refused) == TransportCode.CONNECTION_FAILURE
        assert refused.error is not None and "shutting down" in refused.error.message
    assert refused_after < 1
    assert results[0].payload == {"released": True}


@pytest.mark.parametrize("seed", range(3))
async def test_replies_reach_their_clients_over_a_lossy_network_before_the_close(
        autojump_clock: trio.testing.MockClock, seed: int) -> None:
    gate = Gate()
    results: list[AgentResponse] = []
    lossy = LinkConditions(loss=0.2, delay=0.01)
    async with open_memory_network(seed=seed, conditions=lossy) as net, \
            shutting_down(net, gate, shutdown_timeout=30) as (shutdown, transport):

        async def call() -> None:
            results.append(await transport.send_intent(new_intent("wait")))

        async with trio.open_nursery() as calls:
            for _ in range(10):
                calls.start_soon(call)
            await gate.wait_arrivals(10)
            await shutdown.begin()
            gate.release.set()
        await shutdown.ended.wait()
    assert [r.payload for r in results] == [{"released": True}] * 10
    assert shutdown.ended_at - shutdown.began < 30
