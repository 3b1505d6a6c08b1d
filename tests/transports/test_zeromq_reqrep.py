"""ZeroMQ request/reply over real sockets: DEALER client, REQ reference client, streams."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
import trio
import zmq

from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, IntentEnvelope, JsonObject, StreamChunk
from intentus_trio.routing.router import Router
from intentus_trio.transports.registry import open_transport, server_for
from intentus_trio.transports.zeromq import open_client, serve

from .zmq_helpers import URL, Gate, make_router, running_node, task_count

TIMEOUT = 10.0


async def test_round_trip_through_the_registry() -> None:
    router = make_router()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server_for(URL), router, URL)
            assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
            async with open_transport(url) as transport:
                response = await transport.send_intent(new_intent("echo", {"a": 1}))
                assert response.ok and response.payload == {"a": 1}
                assert response.metadata["agent"] == "echo"
            nursery.cancel_scope.cancel()


async def test_ipc_url() -> None:
    path = os.path.join(tempfile.mkdtemp(), "node")
    url = f"ipc://{path}"
    with trio.fail_after(TIMEOUT):
        async with running_node(make_router(), url) as server, open_client(url) as client:
            assert server.urls["rpc"] == url
            assert server.urls["events"] == url + ".events"
            response = await client.send_intent(new_intent("echo", {"ipc": True}))
            assert response.payload == {"ipc": True}


async def test_concurrent_calls_are_multiplexed_on_one_socket() -> None:
    gate = Gate()
    async with running_node(make_router(gate)) as server, open_client(server.urls["rpc"]) as c:
        results: dict[int, AgentResponse] = {}

        async def call(i: int) -> None:
            results[i] = await c.send_intent(new_intent("gate", {"i": i}))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(call, i)
                await gate.wait_entered(40)  # all 40 are inside the agent at once
                gate.open.set()
        assert all(results[i].payload == {"i": i} for i in range(40))
        assert c.stats.late_replies == 0


async def test_timeout_then_the_same_socket_keeps_working() -> None:
    router = make_router()

    async def stubborn(env: IntentEnvelope) -> JsonObject:
        # Ignores the node's deadline, so its reply surely arrives after the client gave up.
        with trio.CancelScope(shield=True):
            await trio.sleep(0.5)
        return {}

    router.register("stubborn", "stubborn", stubborn)
    async with running_node(router) as server, open_client(server.urls["rpc"]) as c:
        with trio.fail_after(TIMEOUT):
            # Connected first: a call that no connection took within its 50 ms would end
            # with CONNECTION_FAILURE (never sent), not the TIMEOUT this test is about.
            assert (await c.send_intent(new_intent("echo", {"n": 1}))).ok
            slow = await c.send_intent(new_intent("stubborn"), timeout=0.05)
            assert slow.error is not None and slow.error.code is ErrorCode.TRANSPORT_ERROR
            assert slow.error.details["transportCode"] == TransportCode.TIMEOUT
            assert slow.error.retryable
            # The next call waits past the late reply, which is discarded and counted.
            ok = await c.send_intent(new_intent("sleep", {"seconds": 0.7}))
            assert ok.ok and ok.payload == {"seconds": 0.7}
            assert c.stats.late_replies == 1
            assert (await c.send_intent(new_intent("echo", {"n": 2}))).payload == {"n": 2}


async def test_cancelled_call_leaves_client_usable() -> None:
    gate = Gate()
    async with running_node(make_router(gate)) as server, open_client(server.urls["rpc"]) as c:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.send_intent, new_intent("gate", {}))
                await gate.wait_entered(1)
                nursery.cancel_scope.cancel()
            gate.open.set()
            assert (await c.send_intent(new_intent("echo", {"x": 1}))).payload == {"x": 1}


async def test_no_server_is_a_connection_failure_then_reconnects() -> None:
    port = free_port_block(4)
    url = f"tcp://127.0.0.1:{port}"
    router = make_router()
    async with open_client(url) as c:
        with trio.fail_after(TIMEOUT):
            down = await c.send_intent(new_intent("echo", {}), timeout=0.2)
            assert down.error is not None
            assert down.error.details["transportCode"] == TransportCode.CONNECTION_FAILURE
            for round_ in range(2):  # the node restarts on the same port; the socket follows
                async with node_on_port(router, url):
                    response = await c.send_intent(new_intent("echo", {"r": round_}))
                    assert response.payload == {"r": round_}


def free_port_block(count: int) -> int:
    """A port P with P..P+count-1 free, below Linux's ephemeral range.

    The node binds its events/work/results endpoints at P+1..P+3; inside the ephemeral
    range, the client's own outgoing connection could hold one of those ports. Plain sockets
    close synchronously (a ZeroMQ socket unbinds later, in its I/O thread).
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free block of ports")


@asynccontextmanager
async def node_on_port(router: Router, url: str) -> AsyncIterator[None]:
    """Bind ``url`` again, waiting while the OS still holds the previous listener."""
    for _ in range(100):
        try:
            async with running_node(router, url):
                yield
                return
        except* zmq.ZMQError as group:
            if any(e.errno != errno.EADDRINUSE for e in group.exceptions):  # type: ignore[attr-defined]
                raise
        await trio.sleep(0.05)
    raise AssertionError(f"{url} stayed in use")


async def test_reference_req_client_shape() -> None:
    """A blocking pyzmq REQ socket sending one IntentusNet/1.0 frame, as the reference does."""
    env = {
        "version": "1.0",
        "intent": {"name": "echo", "version": "1.0"},
        "payload": {"text": "héllo"},
        "context": {"sourceAgent": "ref", "timestamp": "2025-01-01T00:00:00Z",
                    "priority": "normal", "tags": []},
        "metadata": {"requestId": "r-1", "source": "ref", "createdAt": "2025-01-01T00:00:00Z",
                     "traceId": "t-1", "identityChain": []},
        "routing": {"strategy": "direct", "targetAgent": None, "fallbackAgents": []},
        "routingMetadata": {"decisionPath": [], "retries": 0},
    }
    frame = {"protocol": "INTENTUSNET/1.0", "messageType": "intent", "headers": {}, "body": env}

    def reference_client(url: str) -> list[dict[str, object]]:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(url)
        try:
            replies = []
            for payload in (orjson.dumps(frame), b"\xff\xfe not utf-8", orjson.dumps(frame)):
                sock.send(payload)
                replies.append(orjson.loads(sock.recv().decode("utf-8")))
            return replies
        finally:
            sock.close()

    async with running_node(make_router()) as server:
        with trio.fail_after(TIMEOUT * 2):
            good, bad, again = await trio.to_thread.run_sync(reference_client, server.urls["rpc"])
    for reply in (good, again):
        assert reply["messageType"] == "response"
        assert reply["protocol"] == "INTENTUSNET/1.0"
        body = reply["body"]
        assert isinstance(body, dict)
        assert body["status"] == "success" and body["payload"] == {"text": "héllo"}
        assert body["metadata"]["traceId"] == "t-1"
    bad_body = bad["body"]
    assert isinstance(bad_body, dict) and bad_body["status"] == "error"
    assert bad_body["error"]["details"]["transportCode"] == "MALFORMED_MESSAGE"


async def test_stream_chunks_then_final_response() -> None:
    async with running_node(make_router()) as server, open_client(server.urls["rpc"]) as c:
        with trio.fail_after(TIMEOUT):
            items = [item async for item in c.send_stream(new_intent("count", {"n": 5}))]
            assert [i.payload for i in items[:-1] if isinstance(i, StreamChunk)] == [
                {"i": n} for n in range(5)
            ]
            assert [i.seq for i in items[:-1] if isinstance(i, StreamChunk)] == list(range(5))
            final = items[-1]
            assert isinstance(final, AgentResponse) and final.ok
            # A plain agent answers a stream request with just its response.
            single = [item async for item in c.send_stream(new_intent("echo", {"e": 1}))]
            assert len(single) == 1 and isinstance(single[0], AgentResponse)


async def test_stream_closed_early_cancels_the_remote_agent() -> None:
    router = make_router()
    stopped = trio.Event()

    @router.agent("ticker", "tick")
    async def ticker(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        try:
            for i in range(1000):
                yield {"i": i}
                await trio.sleep(0.01)
        finally:
            stopped.set()

    async with running_node(router) as server, open_client(server.urls["rpc"]) as c:
        with trio.fail_after(TIMEOUT):
            stream = c.send_stream(new_intent("tick", {}))
            async for item in stream:
                assert isinstance(item, StreamChunk)
                if item.seq == 2:
                    break
            await stream.aclose()
            await stopped.wait()
            assert server.stats.streams_cancelled == 1
            assert (await c.send_intent(new_intent("echo", {"k": 1}))).payload == {"k": 1}


async def test_stream_timeout_yields_a_final_timeout() -> None:
    async with running_node(make_router()) as server, open_client(server.urls["rpc"]) as c:
        with trio.fail_after(TIMEOUT):
            items = [i async for i in c.send_stream(
                new_intent("count", {"n": 1000, "pause": 0.05}), timeout=0.3)]
            final = items[-1]
            assert isinstance(final, AgentResponse) and final.error is not None
            assert final.error.details["transportCode"] == TransportCode.TIMEOUT
            assert all(isinstance(i, StreamChunk) for i in items[:-1])
            assert (await c.send_intent(new_intent("echo", {}))).ok


async def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    gate = Gate()
    router = make_router(gate)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            node_scope = trio.CancelScope()

            async def node(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
                with node_scope:
                    await serve(router, URL, task_status=task_status, shutdown_timeout=5.0)

            url = await outer.start(node)
            async with open_client(url) as c:
                result: list[AgentResponse] = []
                answered = trio.Event()

                async def call() -> None:
                    result.append(await c.send_intent(new_intent("gate", {"last": True})))
                    answered.set()

                outer.start_soon(call)
                await gate.wait_entered(1)
                node_scope.cancel()  # stop the node while the request is running
                await trio.testing.wait_all_tasks_blocked()
                gate.open.set()
                await answered.wait()
                assert result[0].payload == {"last": True}
                after = await c.send_intent(new_intent("echo", {}), timeout=0.3)
                assert after.error is not None  # the node is gone


async def test_no_tasks_left_behind() -> None:
    before = task_count()
    async with running_node(make_router()) as server, open_client(server.urls["rpc"]) as c:
        assert (await c.send_intent(new_intent("echo", {}))).ok
        async with c.subscribe("x"):
            pass
    assert task_count() == before
    with pytest.raises(trio.ClosedResourceError):
        await c.send_intent(new_intent("echo", {}))


async def test_stream_that_falls_behind_ends_with_an_error_and_is_cancelled() -> None:
    router = make_router()
    stopped = trio.Event()

    @router.agent("firehose", "firehose")
    async def firehose(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        try:
            for i in range(100_000):
                yield {"i": i}
                await trio.sleep(0.001)
        finally:
            stopped.set()

    async with running_node(router) as server, \
            open_client(server.urls["rpc"], stream_buffer=5) as c:
        with trio.fail_after(TIMEOUT):
            stream = c.send_stream(new_intent("firehose", {}))
            first = await stream.__anext__()
            assert isinstance(first, StreamChunk)
            # While this task waits for another call, it receives the stream's chunks too.
            assert (await c.send_intent(new_intent("sleep", {"seconds": 0.2}))).ok
            final = await stream.__anext__()
            assert isinstance(final, AgentResponse) and final.error is not None
            assert "behind" in final.error.message
            await stream.aclose()
            await stopped.wait()
        assert c.stats.streams_overflowed == 1
        assert server.stats.streams_cancelled == 1


# --------------------------------------------------------------------------- deadlines


def _stoppable_router() -> tuple[Router, trio.Event]:
    stopped = trio.Event()
    router = make_router()

    async def forever(env: IntentEnvelope) -> JsonObject:
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()
        raise AssertionError("unreachable")  # pragma: no cover

    router.register("forever", "forever", forever)
    return router, stopped


async def test_the_node_stops_a_call_when_the_client_stops_waiting() -> None:
    router, stopped = _stoppable_router()
    async with running_node(router) as server, open_client(server.urls["rpc"]) as client:
        response = await client.send_intent(new_intent("forever"), timeout=0.2)
        assert response.error is not None
        assert response.error.details["transportCode"] == TransportCode.TIMEOUT
        with trio.fail_after(TIMEOUT):
            await stopped.wait()  # the agent was cancelled, not left running
        assert server.stats.timeouts == 1
        assert (await client.send_intent(new_intent("echo", {"after": 1}))).ok


async def test_max_call_timeout_caps_a_call_and_answers_timeout() -> None:
    router, stopped = _stoppable_router()
    async with running_node(router, max_call_timeout=0.2) as server, \
            open_client(server.urls["rpc"]) as client:
        with trio.fail_after(TIMEOUT):
            response = await client.send_intent(new_intent("forever"), timeout=None)
        assert response.error is not None and response.error.code is ErrorCode.TRANSPORT_ERROR
        assert response.error.details["transportCode"] == TransportCode.TIMEOUT
        assert stopped.is_set() and server.stats.timeouts == 1


async def test_a_stream_past_its_deadline_ends_with_timeout() -> None:
    async with running_node(make_router(), max_call_timeout=0.3) as server, \
            open_client(server.urls["rpc"]) as client:
        with trio.fail_after(TIMEOUT):
            items = [item async for item in client.send_stream(
                new_intent("count", {"n": 100, "pause": 0.1}), timeout=None)]
        assert 1 <= len(items) - 1 < 100 and all(isinstance(i, StreamChunk) for i in items[:-1])
        final = items[-1]
        assert isinstance(final, AgentResponse) and final.error is not None
        assert final.error.details["transportCode"] == TransportCode.TIMEOUT
        assert server.stats.timeouts == 1 and server.stats.streams_cancelled == 0
