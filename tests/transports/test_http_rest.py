"""HTTP transport over real sockets: REST intents, reference-client frames, keep-alive,
deadlines, error preservation and the registry entry points."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
import trio.testing

from intentus_trio.protocol.codec import dumps, intent_to_json
from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.errors import TransportTimeout
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.transports import registry
from intentus_trio.transports.base import Transport
from intentus_trio.transports.http import HttpTransport, open_client

from .http_helpers import make_router, running_server


async def test_round_trip_and_protocol_conformance() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        assert isinstance(client, Transport)
        env = new_intent("echo", {"text": "hi", "n": [1, 2]})
        response = await client.send_intent(env)
        assert response.ok
        assert response.payload == {"text": "hi", "n": [1, 2]}
        assert response.trace_id == env.metadata.trace_id
        assert response.metadata["agent"] == "echo"


async def test_remote_errors_are_preserved_with_their_status() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        missing = await client.send_intent(new_intent("nobody-handles-this"))
        assert missing.error is not None
        assert missing.error.code is ErrorCode.CAPABILITY_NOT_FOUND
        assert missing.error.details == {"intent": "nobody-handles-this", "version": "1.0"}

        failed = await client.send_intent(new_intent("fail"))
        assert failed.error is not None
        assert failed.error.code is ErrorCode.AGENT_ERROR
        assert failed.error.message == "always fails"
        assert failed.error.details == {"why": "testing"}
        assert failed.metadata["agent"] == "fail"

        async with httpx.AsyncClient(base_url=url) as raw:
            frame = {"protocol": "http", "messageType": "intent",
                     "body": intent_to_json(new_intent("nobody"))}
            reply = await raw.post("/intent", content=dumps(frame),
                                   headers={"content-type": "application/json"})
            assert reply.status_code == 404
            assert reply.json()["messageType"] == "response"
            assert reply.json()["body"]["error"]["code"] == "CAPABILITY_NOT_FOUND"

            timeout_frame = {**frame, "body": intent_to_json(new_intent("sleep", {"seconds": 5}))}
    router = make_router()
    router.register("slow", "slow", _slow, timeout=0.05)
    async with running_server(router) as (url, _), httpx.AsyncClient(base_url=url) as raw:
        timeout_frame["body"] = intent_to_json(new_intent("slow"))
        reply = await raw.post("/intent", content=dumps(timeout_frame),
                               headers={"content-type": "application/json"})
        assert reply.status_code == 504
        assert reply.json()["body"]["error"]["code"] == "AGENT_TIMEOUT"


async def _slow(env: object) -> dict[str, object]:
    await trio.sleep(10)
    return {}


@pytest.mark.parametrize("path", ["/", "/intent"])
async def test_reference_client_frames(path: str) -> None:
    """What the IntentusNet reference client sends, and the reply shape it accepts."""
    async with running_server() as (url, _), httpx.AsyncClient(base_url=url) as raw:
        for name, ok in (("echo", True), ("nobody", False)):
            frame = {"protocol": "INTENTUSNET/1.0", "messageType": "intent",
                     "body": intent_to_json(new_intent(name, {"a": 1}))}
            reply = await raw.post(path, content=dumps(frame),
                                   headers={"Content-Type": "application/json"})
            # The reference client raises on any non-2xx status and discards the body.
            assert reply.status_code == 200
            data = reply.json()
            assert data["messageType"] == "response"
            assert data["protocol"] == "INTENTUSNET/1.0"
            assert data["body"]["status"] == ("success" if ok else "error")
            if ok:
                assert data["body"]["payload"] == {"a": 1}
            else:
                assert data["body"]["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_keep_alive_one_connection_for_1000_calls() -> None:
    async with running_server() as (url, server), open_client(url) as client:
        for i in range(1200):
            response = await client.send_intent(new_intent("echo", {"i": i}))
            assert response.payload == {"i": i}
        assert server.app.stats.requests == 1200
        assert server.app.stats.connections == 1


async def test_deadline_returns_timeout_and_connection_stays_usable() -> None:
    async with running_server() as (url, _), open_client(url, timeout=0.2) as client:
        slow = await client.send_intent(new_intent("sleep", {"seconds": 5}))
        assert slow.error is not None
        assert slow.error.code is ErrorCode.TRANSPORT_ERROR
        assert slow.error.details["transportCode"] == TransportCode.TIMEOUT
        assert slow.error.retryable
        # Per-call deadline overrides the transport's; the transport is still usable.
        ok = await client.send_intent(new_intent("sleep", {"seconds": 0.01}), timeout=5)
        assert ok.ok


async def test_publish_and_health_are_bounded_by_their_timeout() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # accepts the connection, never answers

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_client(f"http://127.0.0.1:{port}", timeout=30) as client:
            with trio.fail_after(5):
                with pytest.raises(TransportTimeout):
                    await client.publish(new_event("nobody.answers"), timeout=0.2)
                with pytest.raises(TransportTimeout):
                    await client.health(timeout=0.2)
        nursery.cancel_scope.cancel()


async def test_cancelled_call_leaves_transport_usable() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        with trio.move_on_after(0.1) as scope:
            await client.send_intent(new_intent("sleep", {"seconds": 5}))
        assert scope.cancelled_caught
        assert (await client.send_intent(new_intent("echo", {"x": 1}))).payload == {"x": 1}


async def test_closed_transport_raises_at_once() -> None:
    async with running_server() as (url, _):
        client = HttpTransport(url)
        async with client:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await client.send_intent(new_intent("echo"))


async def test_connection_refused_is_a_connection_failure() -> None:
    async with running_server() as (url, _):
        pass  # the port is free again
    from intentus_trio.transports.http import RetryPolicy

    async with open_client(url, retry=RetryPolicy(max_attempts=2, base_delay=0.01)) as client:
        response = await client.send_intent(new_intent("echo"))
    assert response.error is not None
    assert response.error.details["transportCode"] == TransportCode.CONNECTION_FAILURE


async def test_body_exception_is_not_wrapped_in_a_group() -> None:
    async with running_server() as (url, _):
        with pytest.raises(KeyError):
            async with open_client(url):
                raise KeyError("mine")


async def test_registry_opens_http_urls() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(registry.server_for("http://x"), router, "http://127.0.0.1:0")
        assert url.startswith("http://127.0.0.1:")
        async with registry.open_transport(url, timeout=5) as client:
            assert (await client.send_intent(new_intent("echo", {"r": 1}))).payload == {"r": 1}
        nursery.cancel_scope.cancel()


async def test_custom_headers_and_auth_hook_reach_the_server() -> None:
    seen: list[tuple[str | None, str | None]] = []
    router = make_router()

    def auth(request: httpx.Request) -> httpx.Request:
        request.headers["authorization"] = "Bearer token-1"
        return request

    async with running_server(router) as (url, server):
        app = server.app
        original = app._frame_endpoint

        async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
            headers = dict(scope["headers"])
            seen.append((headers.get(b"x-team", b"").decode(),
                         headers.get(b"authorization", b"").decode()))
            await original(scope, receive, send)

        app._routes["/intent"]["POST"] = spy
        async with open_client(url, headers={"x-team": "blue"}, auth=auth) as client:
            assert (await client.send_intent(new_intent("echo"))).ok
    assert seen == [("blue", "Bearer token-1")]


async def test_leaving_a_subscription_with_a_full_buffer_keeps_the_client() -> None:
    async with running_server() as (url, _), open_client(url, event_buffer=4) as client:
        with trio.fail_after(20):
            async with client.subscribe("spam.*") as events:
                for i in range(8):
                    await client.publish(new_event("spam.x", {"i": i}))
                # Wait until the reader is blocked on the full buffer, nobody reading.
                while events._channel.statistics().tasks_waiting_send == 0:
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert (await client.send_intent(new_intent("echo", {"still": 1}))).ok
