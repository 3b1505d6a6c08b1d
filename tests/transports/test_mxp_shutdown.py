"""MXP server shutdown: calls in flight are answered within the grace period or get an error
reply, new work is refused at once, and the connections close only after that.

The real MXP driver runs over the in-memory network (``intentus_trio.testing.netsim``) on
trio's MockClock, so grace periods pass instantly and every run is the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from intentus_trio.mxp import Configuration, ServerConfiguration, mxp_connect, mxp_listen
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, StreamChunk
from intentus_trio.routing.router import Router
from intentus_trio.testing.netsim import LinkConditions, MemoryNetwork, open_memory_network
from intentus_trio.transports.mxp import MxpServer, MxpTransport, open_client
from intentus_trio.transports.mxp.backend import Address, ClientPolicy
from intentus_trio.transports.mxp.pool import MxpPool

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
async def shutting_down(net: MemoryNetwork, gate: Gate, *, router: Router | None = None,
                        client: dict[str, Any] | None = None, **options: Any
                        ) -> AsyncIterator[tuple[Shutdown, MxpTransport]]:
    backend = MemoryBackend(net)
    server = MxpServer(router or make_router(gate), SERVER_URL, backend=backend, **options)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        shutdown = Shutdown(server, scope)

        async def run(task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await server.run(task_status=task_status)
            shutdown.ended_at = trio.current_time()
            shutdown.ended.set()

        url = await nursery.start(run)
        async with open_client(url, backend=backend, **{"timeout": 60, **(client or {})}
                               ) as transport:
            yield shutdown, transport
        scope.cancel()


def start_a_call_and_a_stream(nursery: trio.Nursery, transport: Any, results: list[Any]) -> None:
    """A call of the gated "wait" agent and a stream of "hang"; their results (the
    stream's as a list) are appended to ``results`` as they end."""

    async def call() -> None:
        results.append(await transport.send_intent(new_intent("wait")))

    async def stream() -> None:
        results.append([item async for item in transport.send_stream(new_intent("hang"))])

    nursery.start_soon(call)
    nursery.start_soon(stream)


async def test_calls_in_flight_are_answered_within_the_grace_period(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    results: list[Any] = []
    async with open_memory_network() as net, \
            shutting_down(net, gate, shutdown_timeout=5) as (shutdown, transport):
        async with trio.open_nursery() as calls:
            start_a_call_and_a_stream(calls, transport, results)
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
        async with trio.open_nursery() as calls:
            start_a_call_and_a_stream(calls, transport, results)
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


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("replied_first", "bound"),
    # Calls still running when the shutdown begins; or none running, but their replies
    # still on their way (some lost): the connections close only once the clients
    # acknowledged them.
    [(False, 30), (True, 2)], ids=["running", "replied"],
)
async def test_replies_reach_their_clients_over_a_lossy_network_before_the_close(
        autojump_clock: trio.testing.MockClock, seed: int, replied_first: bool,
        bound: float) -> None:
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
            if replied_first:
                gate.release.set()
                await trio.sleep(0.001)  # the replies are written, not yet acknowledged
            await shutdown.begin()
            gate.release.set()
        await shutdown.ended.wait()
    assert [r.payload for r in results] == [{"released": True}] * 10
    assert shutdown.ended_at - shutdown.began < bound


def firehose_router() -> Router:
    """Chunks larger than the stream's send buffer: writing one takes several round trips."""
    router = Router(name="firehose")

    async def firehose(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        i = 0
        while True:
            yield {"i": i, "blob": "x" * 300_000}
            i += 1

    router.register("firehose", "firehose", firehose)
    return router


@pytest.mark.parametrize(("options", "code", "reason"), [
    # cut off at the end of the grace period
    ({"shutdown_timeout": 1}, TransportCode.CONNECTION_FAILURE, "shutdown"),
    # cut off by its deadline on the server
    ({"max_call_timeout": 1}, TransportCode.TIMEOUT, None),
])
async def test_a_streamed_call_cut_off_mid_chunk_still_gets_a_readable_final_reply(
        autojump_clock: trio.testing.MockClock, options: dict[str, Any], code: str,
        reason: str | None) -> None:
    # The chunk being written when the call is cut off is finished first: a final reply
    # after half a message would reach the client as garbage (MALFORMED_MESSAGE).
    items: list[Any] = []
    async with (
        open_memory_network() as net,
        shutting_down(net, Gate(), router=firehose_router(), max_frame_bytes=1 << 20,
                      client={"max_frame_bytes": 1 << 20}, **options) as (shutdown, transport),
        aclosing(transport.send_stream(new_intent("firehose"))) as replies,
    ):
        items.append(await anext(replies))
        if "shutdown_timeout" in options:
            await shutdown.begin()
        async for item in replies:
            items.append(item)
            await trio.sleep(0.05)  # a reader slower than the agent
    assert isinstance(items[0], StreamChunk)
    last = items[-1]
    assert isinstance(last, AgentResponse) and transport_code(last) == code, last
    assert last.error is not None and last.error.details.get("reason") == reason


@pytest.mark.parametrize("reachable", [True, False])
async def test_closing_a_client_ends_a_subscription_still_waiting_for_its_acknowledgement(
        autojump_clock: trio.testing.MockClock, reachable: bool) -> None:
    # With a shared pool nothing of the transport's own ends the attempt: closing the
    # transport must, at once, and not at the end of the transport's timeout.
    entered: list[float] = []
    async with open_memory_network() as net:
        backend = MemoryBackend(net)
        server = MxpServer(make_router(), SERVER_URL, backend=backend)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.run)
            if not reachable:
                url = url.replace("10.0.0.1", "10.0.0.9")
            async with MxpPool(backend=backend, connect_timeout=10).running() as pool, \
                    open_client(url, pool=pool, timeout=60) as transport:
                if reachable:
                    assert (await transport.send_intent(new_intent("echo"))).ok
                with net.partitioned(["10.0.0.1"], [CLIENT_HOST]):

                    async def subscribe() -> None:
                        async with transport.subscribe("x.*") as sub:
                            entered.append(trio.current_time())
                            assert [event async for event in sub] == []

                    async with trio.open_nursery() as subscriber:
                        subscriber.start_soon(subscribe)
                        await trio.sleep(0.5)
                        began = trio.current_time()
                        await transport.aclose()
                        closed = trio.current_time() - began
            nursery.cancel_scope.cancel()
    assert closed < 0.1
    assert entered == [began]  # entered, already ended: its iteration ends at once
