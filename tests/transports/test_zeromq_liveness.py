"""ZeroMQ client: calls still owed a reply fail once the connection that carried them drops.

A node that dies (its process gone, or silent behind a network that dropped it) never answers
them; without this, a call with ``timeout=None`` would wait forever.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing
import zmq

from intentus_trio.protocol.enums import TransportCode, TransportProtocol
from intentus_trio.protocol.errors import ConnectionFailure
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, StreamChunk
from intentus_trio.transports.base import StreamItem
from intentus_trio.transports.framing import FrameDispatcher
from intentus_trio.transports.zeromq import open_client
from intentus_trio.transports.zmq_trio import TrioSocket

from .test_zeromq_shutdown import block_until_disconnected, code
from .zmq_helpers import Gate, make_router, running_node

TIMEOUT = 10.0


async def test_calls_in_flight_when_the_node_dies_fail_with_connection_failure() -> None:
    """A bare ROUTER stands in for the node: it takes four requests, answers one and dies."""
    node = TrioSocket.open(zmq.ROUTER)
    node.socket.bind("tcp://127.0.0.1:0")
    url = node.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    dispatcher = FrameDispatcher(make_router(), TransportProtocol.ZEROMQ)
    results: dict[str, AgentResponse] = {}
    streamed: list[StreamItem] = []
    published: list[str] = []
    try:
        with trio.fail_after(TIMEOUT):
            async with open_client(url) as client:
                async def call(name: str) -> None:
                    results[name] = await client.send_intent(
                        new_intent("echo", {"name": name}), timeout=None)

                async def stream() -> None:
                    streamed.extend([item async for item in client.send_stream(
                        new_intent("count"), timeout=None)])

                async def publish() -> None:
                    try:
                        await client.publish(new_event("x"), timeout=None)
                    except ConnectionFailure:
                        published.append("failed")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, "answered")
                    nursery.start_soon(call, "lost")
                    nursery.start_soon(stream)
                    nursery.start_soon(publish)
                    for _ in range(4):
                        frames = await node.receive()
                        body = dispatcher.decode(frames[-1]).body
                        if getattr(body, "payload", None) == {"name": "answered"}:
                            reply = await dispatcher.handle_bytes(frames[-1])
                            node.send_nowait([*frames[:-1], reply])
                    # The node's socket closes with its reply queued (libzmq writes it out
                    # first) while this loop stays blocked until the client sees the drop:
                    # the reply, read only after the drop, must still reach its caller.
                    node.close()
                    block_until_disconnected(client)
                assert results["answered"].payload == {"name": "answered"}
                assert code(results["lost"]) == TransportCode.CONNECTION_FAILURE
                assert len(streamed) == 1 and isinstance(streamed[0], AgentResponse)
                assert code(streamed[0]) == TransportCode.CONNECTION_FAILURE
                assert published == ["failed"]
                assert client.stats.late_replies == 0
    finally:
        node.close(0)


class FreezableRelay:
    """A TCP relay to a node that can stop relaying while its connections stay open.

    Frozen, the node looks to the client like a host that vanished: no FIN, no RST, just
    silence, which only the client's heartbeats reveal.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = False

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, down: trio.SocketStream) -> None:
        up = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with down, up, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, down, up)
            nursery.start_soon(self._pump, up, down)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while data := await source.receive_some():
            if self.frozen:
                await trio.sleep_forever()
            await sink.send_all(data)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_node_gone_silent_is_found_dead_by_heartbeats(stream: bool) -> None:
    gate = Gate()
    result: list[StreamItem] = []
    with trio.fail_after(TIMEOUT):
        async with running_node(make_router(gate), shutdown_timeout=0.1) as server:
            relay = FreezableRelay(int(server.urls["rpc"].rsplit(":", 1)[1]))
            async with trio.open_nursery() as nursery:
                port = await nursery.start(relay.run)
                async with open_client(f"tcp://127.0.0.1:{port}", heartbeat=0.1) as client:
                    assert (await client.send_intent(new_intent("echo", {}))).ok

                    async def call() -> None:
                        if stream:
                            async for item in client.send_stream(
                                    new_intent("count", {"n": 2, "pause": 60}), timeout=None):
                                result.append(item)
                                if len(result) == 1:
                                    relay.frozen = True
                        else:
                            result.append(await client.send_intent(
                                new_intent("gate", {}), timeout=None))

                    async with trio.open_nursery() as calls:
                        calls.start_soon(call)
                        if not stream:
                            await gate.wait_entered(1)
                            relay.frozen = True
                nursery.cancel_scope.cancel()
    *chunks, final = result
    assert [type(chunk) for chunk in chunks] == ([StreamChunk] if stream else [])
    assert isinstance(final, AgentResponse)
    assert code(final) == TransportCode.CONNECTION_FAILURE


async def test_a_call_past_its_deadline_when_the_connection_drops_times_out() -> None:
    """A drop noticed after a call's deadline passed, before the timer woke it: the call
    reports TIMEOUT, as it would have a moment earlier; a call without one fails."""
    node = TrioSocket.open(zmq.ROUTER)
    node.socket.bind("tcp://127.0.0.1:0")
    url = node.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    results: dict[str, AgentResponse] = {}
    try:
        with trio.fail_after(TIMEOUT):
            async with open_client(url) as client:
                async def call(name: str, timeout: float | None) -> None:
                    results[name] = await client.send_intent(
                        new_intent("echo", {}), timeout=timeout)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, "deadline", 0.3)
                    nursery.start_soon(call, "none", None)
                    for _ in range(2):
                        await node.receive()
                    node.close()
                    block_until_disconnected(client)
                    # Past the deadline with the loop blocked, so the deadline timer has not
                    # run; the drop is handled first, as the link's callback would.
                    time.sleep(0.4)  # noqa: ASYNC251 - the loop must not run meanwhile
                    client._connection_lost()
    finally:
        node.close(0)
    assert code(results["deadline"]) == TransportCode.TIMEOUT
    assert code(results["none"]) == TransportCode.CONNECTION_FAILURE
