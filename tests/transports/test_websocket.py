"""WebSocket transport over real sockets: calls, multiplexing, streams, events, EMCL, TLS."""

from __future__ import annotations

import ssl
from contextlib import aclosing
from functools import partial

import pytest
import trio
import trio.lowlevel
import trustme
from trio_websocket import WebSocketRequest, serve_websocket

from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.errors import ConnectionFailure, RemoteError, TransportTimeout
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, StreamChunk
from intentus_trio.transports.base import Transport
from intentus_trio.transports.registry import open_transport, server_for
from intentus_trio.transports.websocket import WebSocketClient, open_client, serve

from ..protectors import StandInProtector
from .ws_helpers import (
    Gate,
    make_router,
    running_server,
    tasks_below,
    wait_no_connections,
)


def transport_code(response: AgentResponse) -> str | None:
    assert response.error is not None, response
    return response.error.details.get("transportCode")


async def test_serve_reports_bound_url_and_client_round_trips() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, router, "ws://127.0.0.1:0/")
        assert url.startswith("ws://127.0.0.1:") and not url.endswith(":0/")
        async with open_client(url) as client:
            assert isinstance(client, Transport)
            response = await client.send_intent(new_intent("echo", {"hello": "world"}))
            assert response.ok and response.payload == {"hello": "world"}
            assert response.metadata["agent"] == "echo"
        nursery.cancel_scope.cancel()


async def test_registry_resolves_ws_urls() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server_for("ws://127.0.0.1:0/"), router, "ws://127.0.0.1:0/")
        async with open_transport(url) as client:
            assert isinstance(client, WebSocketClient)
            assert (await client.send_intent(new_intent("echo", {"a": 1}))).payload == {"a": 1}
        nursery.cancel_scope.cancel()


async def test_many_concurrent_calls_share_one_connection() -> None:
    gate = Gate()
    async with running_server(make_router(gate)) as (url, server), open_client(url) as client:
        results: dict[int, AgentResponse] = {}

        async def call(i: int) -> None:
            results[i] = await client.send_intent(new_intent("gate", {"i": i}))

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(call, i)
            await gate.wait_entered(1000)  # all 1000 are in flight at once
            gate.open.set()
        assert len(results) == 1000
        assert all(r.ok and r.payload == {"i": i} for i, r in results.items())
        assert server.stats.connections == 1
        assert server.stats.peak_active == 1000


async def test_remote_errors_pass_through_unchanged() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        failed = await client.send_intent(new_intent("fail"))
        assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR
        assert failed.error.details == {"why": "testing"}
        missing = await client.send_intent(new_intent("nobody-handles-this"))
        assert missing.error is not None
        assert missing.error.code is ErrorCode.CAPABILITY_NOT_FOUND


async def test_stream_longer_than_the_window_arrives_in_order() -> None:
    async with running_server() as (url, _), open_client(url, stream_window=4) as client:
        items = [item async for item in client.send_stream(new_intent("count", {"n": 50}))]
        chunks, final = items[:-1], items[-1]
        assert [c.payload["i"] for c in chunks if isinstance(c, StreamChunk)] == list(range(50))
        assert [c.seq for c in chunks if isinstance(c, StreamChunk)] == list(range(50))
        assert isinstance(final, AgentResponse) and final.ok and final.payload == {"chunks": 50}


async def test_slow_stream_consumer_holds_the_agent_not_the_connection() -> None:
    async with running_server() as (url, server), open_client(url, stream_window=2) as client:
        async with aclosing(client.send_stream(new_intent("count", {"n": 1000}))) as stream:
            first = await stream.__anext__()
            assert isinstance(first, StreamChunk)
            # The unread stream has at most its window queued; other calls still flow.
            for _ in range(5):
                assert (await client.send_intent(new_intent("echo", {"x": 1}))).ok
            assert server.stats.peak_active >= 1
        # Leaving early cancels the stream on the server.
        with trio.fail_after(5):
            while server.stats.cancelled < 1:
                await trio.testing.wait_all_tasks_blocked()
        assert (await client.send_intent(new_intent("echo", {"x": 2}))).ok


async def test_stream_of_a_unary_agent_is_one_final_response() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        items = [item async for item in client.send_stream(new_intent("echo", {"a": 1}))]
        assert len(items) == 1 and isinstance(items[0], AgentResponse)
        assert items[0].payload == {"a": 1}


async def test_call_timeout_returns_timeout_and_cancels_the_remote_call() -> None:
    gate = Gate()
    async with running_server(make_router(gate)) as (url, server), open_client(url) as client:
        response = await client.send_intent(new_intent("gate"), timeout=0.2)
        assert transport_code(response) == TransportCode.TIMEOUT
        assert response.error is not None and response.error.retryable
        with trio.fail_after(5):
            while gate.cancelled < 1:
                await trio.testing.wait_all_tasks_blocked()
        # The connection is still good.
        assert (await client.send_intent(new_intent("echo", {"after": True}))).ok
        assert server.stats.connections == 1


async def test_cancelling_a_call_leaves_the_connection_usable() -> None:
    gate = Gate()
    async with running_server(make_router(gate)) as (url, _), open_client(url) as client:
        with trio.move_on_after(0.1):
            await client.send_intent(new_intent("gate"))
        assert (await client.send_intent(new_intent("echo", {"ok": 1}))).payload == {"ok": 1}
        with trio.fail_after(5):
            while gate.cancelled < 1:
                await trio.testing.wait_all_tasks_blocked()


async def test_server_side_deadline_from_the_timeout_header() -> None:
    gate = Gate()
    async with running_server(make_router(gate), max_call_timeout=0.2) as (url, server), \
            open_client(url, timeout=None) as client:
        response = await client.send_intent(new_intent("gate"))
        assert transport_code(response) == TransportCode.TIMEOUT
        assert server.stats.timeouts == 1


async def test_publish_and_subscribe_by_pattern_and_unsubscribe() -> None:
    async with running_server() as (url, server), open_client(url) as sub_client, \
            open_client(url) as pub_client:
        async with sub_client.subscribe("agent.*") as agents, sub_client.subscribe("x") as xs:
            assert agents.active and xs.active
            await pub_client.publish(new_event("agent.started", {"n": 1}))
            await pub_client.publish(new_event("x", {"n": 2}))
            await pub_client.publish(new_event("other", {"n": 3}))
            await pub_client.publish(new_event("agent.stopped", {"n": 4}))
            with trio.fail_after(5):
                got = [await agents.__anext__(), await agents.__anext__()]
                assert [e.payload["n"] for e in got] == [1, 4]
                assert (await xs.__anext__()).payload == {"n": 2}
            ack = await pub_client.publish_acked(new_event("x", {"n": 5}))
            assert ack.ok and ack.payload == {"delivered": 1}
        ack = await pub_client.publish_acked(new_event("x", {"n": 6}))
        assert ack.payload == {"delivered": 0}  # unsubscribed on leaving the block
        assert server.stats.events_out == 4


async def test_subscription_refused_beyond_the_limit() -> None:
    async with running_server(max_subscriptions=1) as (url, _), open_client(url) as client, \
            client.subscribe("a"):
        with pytest.raises(RemoteError) as info:
            async with client.subscribe("b"):
                pass
        assert info.value.response.error is not None
        assert info.value.response.error.code is ErrorCode.RATE_LIMIT


async def test_publish_raises_the_remote_refusal_or_the_local_failure() -> None:
    # The server answers with an error: RemoteError carries its response.
    async with running_server(protector=StandInProtector(), require_emcl=True) as (url, _), \
            open_client(url) as client:
        with pytest.raises(RemoteError) as refused:
            await client.publish(new_event("x"))
        assert refused.value.to_error_info().code is ErrorCode.EMCL_FAILURE

    # No answer comes: the local failure, raised as its own type.
    async def silent(request: WebSocketRequest) -> None:
        await request.accept()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(partial(serve_websocket, silent, "127.0.0.1", 0, None))
        url = f"ws://127.0.0.1:{listener.port}/"
        async with open_client(url) as client:
            with pytest.raises(TransportTimeout):
                await client.publish(new_event("x"), timeout=0.2)
            ack = await client.publish_acked(new_event("x"), timeout=0.2)
            assert transport_code(ack) == TransportCode.TIMEOUT
        nursery.cancel_scope.cancel()
    async with open_client(url, reconnect=False) as client:  # nobody listens any more
        with pytest.raises(ConnectionFailure) as lost:
            await client.publish(new_event("x"), timeout=5)
        assert not lost.value.retryable  # no later attempt will come


async def test_slow_subscriber_drops_oldest_and_counts() -> None:
    router = make_router()
    async with running_server(router, subscription_buffer=4) as (url, server), \
            open_client(url, subscription_buffer=4) as client:
        async with client.subscribe("tick") as ticks:
            for i in range(2000):  # nobody reads: both buffers fill and drop their oldest
                router.events.publish(new_event("tick", {"i": i}))
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()
            received: list[int] = []
            with trio.fail_after(10):
                while not received or received[-1] != 1999:  # the newest is never dropped
                    received.append((await ticks.__anext__()).payload["i"])
            assert received == sorted(received) and received[-1] == 1999
            assert len(received) + ticks.dropped == 2000
            assert ticks.dropped > 0
        assert server.connections  # a slow subscriber is not disconnected while it reads


async def test_closed_client_raises_at_once() -> None:
    async with running_server() as (url, _):
        client = open_client(url)
        async with client:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await client.send_intent(new_intent("echo"))
        with pytest.raises(trio.ClosedResourceError):
            await client.publish(new_event("x"))


async def test_emcl_protector_seals_every_frame() -> None:
    server_protector, client_protector = StandInProtector(), StandInProtector()
    async with running_server(protector=server_protector, require_emcl=True) as (url, _), \
            open_client(url, protector=client_protector) as client, \
            open_client(url) as plain:
        assert (await client.send_intent(new_intent("echo", {"s": 1}))).payload == {"s": 1}
        items = [i async for i in client.send_stream(new_intent("count", {"n": 3}))]
        assert len(items) == 4 and isinstance(items[-1], AgentResponse) and items[-1].ok
        async with client.subscribe("sealed") as sub:
            await client.publish(new_event("sealed", {"e": 1}))
            with trio.fail_after(5):
                assert (await sub.__anext__()).payload == {"e": 1}
        assert client_protector.sealed >= 4 and client_protector.opened >= 6
        assert server_protector.opened == client_protector.sealed
        refused = await plain.send_intent(new_intent("echo"))
        assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE
        # A tampered frame is refused with EMCL_FAILURE and the connection keeps working.
        client_protector.key = b"wrong"
        bad = await client.send_intent(new_intent("echo"))
        assert bad.error is not None and bad.error.code is ErrorCode.EMCL_FAILURE
        client_protector.key = server_protector.key
        assert (await client.send_intent(new_intent("echo", {"s": 2}))).ok


async def test_wss_with_trustme() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with running_server(url="wss://127.0.0.1:0/", ssl_context=server_ctx) as (url, _):
        assert url.startswith("wss://")
        async with open_client(url, ssl_context=client_ctx) as client:
            assert (await client.send_intent(new_intent("echo", {"tls": 1}))).payload == {"tls": 1}
        # A client that does not trust the CA fails fast with CONNECTION_FAILURE.
        async with open_client(url, reconnect=False) as untrusting:
            with trio.fail_after(5):
                response = await untrusting.send_intent(new_intent("echo"))
            assert transport_code(response) == TransportCode.CONNECTION_FAILURE
            assert response.error is not None
            assert "CERTIFICATE_VERIFY_FAILED" in response.error.message


async def test_payload_too_large_is_reported_locally_and_by_the_server() -> None:
    async with running_server(max_frame_bytes=4096) as (url, _), \
            open_client(url) as client:
        response = await client.send_intent(new_intent("echo", {"blob": "x" * 8000}))
        assert transport_code(response) == TransportCode.PAYLOAD_TOO_LARGE
        assert response.error is not None and response.error.details["limit"] == 4096
        # The reply is too large for a client with a smaller limit: the server says so.
    async with running_server() as (url, _server), \
            open_client(url, max_frame_bytes=2048) as client:
        response = await client.send_intent(new_intent("count", {"n": 1, "pad": 1500}))
        assert response.ok
        items = [i async for i in client.send_stream(new_intent("count", {"n": 1, "pad": 3000}))]
        assert isinstance(items[-1], AgentResponse)
        assert transport_code(items[-1]) == TransportCode.PAYLOAD_TOO_LARGE
        assert (await client.send_intent(new_intent("echo", {"still": "fine"}))).ok


async def test_no_tasks_leak_after_many_clients() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        from intentus_trio.transports.websocket import WebSocketServer

        server = WebSocketServer(router, shutdown_timeout=0.5)
        url = await nursery.start(server.run)
        await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        baseline = tasks_below(nursery)

        async def session(i: int) -> None:
            async with open_client(url) as client:
                assert (await client.send_intent(new_intent("echo", {"i": i}))).ok
                async with client.subscribe("e"):
                    pass
                async with aclosing(client.send_stream(new_intent("count", {"n": 100}))) as s:
                    await s.__anext__()  # abandoned mid-stream

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(session, i)
        await wait_no_connections(server)
        assert server.stats.connections == 20
        assert tasks_below(nursery) == baseline
        nursery.cancel_scope.cancel()


async def test_graceful_shutdown_finishes_running_calls() -> None:
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()
        router = make_router()
        started = trio.Event()

        async def run_server(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            with server_scope:
                await serve(router, "ws://127.0.0.1:0/", shutdown_timeout=5.0,
                            task_status=task_status)

        url = await outer.start(run_server)
        async with open_client(url, reconnect=False) as client:
            result: list[AgentResponse] = []

            async def slow_call() -> None:
                started.set()
                result.append(await client.send_intent(new_intent("sleep", {"seconds": 0.3})))

            outer.start_soon(slow_call)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            server_scope.cancel()
            with trio.fail_after(5):
                while not result:
                    await trio.testing.wait_all_tasks_blocked()
            assert result[0].ok and result[0].payload == {"slept": 0.3}


@pytest.mark.parametrize("url", ["http://x:1/", "ws://", "ws:///path"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        WebSocketClient(url)


async def test_serve_bind_failure_raises_plain_oserror() -> None:
    async with running_server() as (url, _):
        with pytest.raises(OSError):
            await serve(make_router(), url)


async def test_hot_path_shortcuts_are_in_use() -> None:
    # Messages come straight from the library's reader and frames are written without
    # waiting; if a trio-websocket upgrade changes what these rely on, this says so.
    from intentus_trio.transports.websocket.stream import DirectWriter

    async with running_server() as (url, server), open_client(url) as client:
        assert (await client.send_intent(new_intent("echo", {"x": 1}))).ok
        session = client._session
        assert session is not None
        links = [session.link, *(conn.link for conn in server.connections)]
        assert all(isinstance(link.writer, DirectWriter) for link in links)
        assert all(type(link.ws._send_channel).__name__ == "_Sink" for link in links)


async def test_a_shorter_deadline_after_a_longer_one_expires_first() -> None:
    gate = Gate()
    async with running_server(make_router(gate)) as (url, _), open_client(url) as client:
        results: dict[str, AgentResponse] = {}

        async def call(name: str, timeout: float) -> None:
            results[name] = await client.send_intent(new_intent("gate"), timeout=timeout)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "long", 30.0)
            await gate.wait_entered(1)
            start = trio.current_time()
            with trio.fail_after(5):
                await call("short", 0.2)
            assert trio.current_time() - start < 2.0
            assert transport_code(results["short"]) == TransportCode.TIMEOUT
            assert "long" not in results
            gate.open.set()
        assert results["long"].ok


async def test_calls_after_server_side_timeouts_and_cancels_still_run() -> None:
    gate = Gate()
    async with running_server(make_router(gate), max_call_timeout=0.1) as (url, server), \
            open_client(url, timeout=None) as client:
        for _ in range(3):
            timed_out = await client.send_intent(new_intent("gate"))
            assert transport_code(timed_out) == TransportCode.TIMEOUT
            with trio.move_on_after(0.02):
                await client.send_intent(new_intent("gate"))  # cancelled by the client
            for i in range(5):
                response = await client.send_intent(new_intent("echo", {"i": i}))
                assert response.ok and response.payload == {"i": i}
        assert server.stats.timeouts >= 3
        with trio.fail_after(5):
            while gate.cancelled < 6:
                await trio.testing.wait_all_tasks_blocked()


async def test_without_the_shortcuts_the_transport_works_the_plain_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What happens when trio-websocket's internals are not as the shortcuts expect: a pump
    # task reads get_message() and frames go out through send_message().
    from intentus_trio.transports.websocket import stream

    monkeypatch.setattr(stream, "_queue_of", lambda ws: None)
    monkeypatch.setattr(stream.DirectWriter, "of", classmethod(lambda cls, ws, s: None))
    gate = Gate()
    async with running_server(make_router(gate)) as (url, server), open_client(url) as client:
        assert (await client.send_intent(new_intent("echo", {"plain": 1}))).payload == {
            "plain": 1}
        items = [i async for i in client.send_stream(new_intent("count", {"n": 5}))]
        assert isinstance(items[-1], AgentResponse) and items[-1].ok
        async with client.subscribe("p") as sub:
            await client.publish(new_event("p", {"e": 1}))
            with trio.fail_after(5):
                assert (await sub.__anext__()).payload == {"e": 1}
        response = await client.send_intent(new_intent("gate"), timeout=0.2)
        assert transport_code(response) == TransportCode.TIMEOUT
        with trio.fail_after(5):
            while gate.cancelled < 1:
                await trio.testing.wait_all_tasks_blocked()
        assert (await client.send_intent(new_intent("echo", {"after": 1}))).ok
        session = client._session
        assert session is not None and session.link.writer is None
        assert server.stats.connections == 1
