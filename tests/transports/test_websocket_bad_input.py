"""The WebSocket server against bad and foreign peers: clear errors, other connections
unaffected, no leaked tasks. Also the IntentusNet reference client's connection-per-call
pattern."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from intentus_trio.protocol.codec import dumps, intent_to_json, loads
from intentus_trio.protocol.enums import ErrorCode, TransportCode
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.websocket import WebSocketServer, open_client

from .ws_helpers import make_router, running_relay, running_server, tasks_below


def frame(name: str = "echo", payload: dict[str, Any] | None = None, *,
          headers: dict[str, str] | None = None, protocol: str = "websocket",
          message_type: str = "intent") -> str:
    body = intent_to_json(new_intent(name, payload or {}))
    return dumps({"protocol": protocol, "messageType": message_type,
                  "headers": headers or {}, "body": body}).decode()


async def exchange(ws: WebSocketConnection, message: str | bytes) -> dict[str, Any]:
    await ws.send_message(message)
    with trio.fail_after(5):
        reply: dict[str, Any] = loads(await ws.get_message())
    return reply


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["messageType"] == "response"
    assert reply["body"]["status"] == "error", reply
    error: dict[str, Any] = reply["body"]["error"]
    return error


async def assert_still_serving(ws: WebSocketConnection) -> None:
    reply = await exchange(ws, frame("echo", {"still": "serving"},
                                     headers={"requestId": "good"}))
    assert reply["headers"]["requestId"] == "good"
    assert reply["body"]["payload"] == {"still": "serving"}


async def test_reference_client_pattern_connection_per_call() -> None:
    async with trio.open_nursery() as nursery:
        server = WebSocketServer(make_router(), shutdown_timeout=0.5)
        url = await nursery.start(server.run)
        await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        baseline = tasks_below(nursery)
        for i in range(10):
            async with open_websocket_url(url) as ws:  # a new connection per call
                reply = await exchange(ws, frame("echo", {"i": i}, protocol="INTENTUSNET/1.0"))
            assert reply["messageType"] == "response"
            assert reply["protocol"] == "INTENTUSNET/1.0"
            assert reply["body"]["status"] == "success" and reply["body"]["payload"] == {"i": i}
        # "emcl" frames are refused cleanly when EMCL is not configured.
        async with open_websocket_url(url) as ws:
            emcl_body = {"emclVersion": "1.0", "ciphertext": "AA", "nonce": "AA", "hmac": "AA",
                         "identityChain": []}
            reply = await exchange(ws, dumps({"protocol": "INTENTUSNET/1.0",
                                              "messageType": "emcl", "headers": {},
                                              "body": emcl_body}).decode())
            assert error_of(reply)["code"] == ErrorCode.EMCL_FAILURE
        await server.wait_connections(0)
        await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        assert tasks_below(nursery) == baseline
        assert server.stats.connections == 11
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("message", "code", "transport_code"),
    [
        (b'{"not": "text"}', ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE),
        ("this is not json", ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE),
        ("[1, 2, 3]", ErrorCode.VALIDATION_ERROR, None),
        ('{"protocol": "websocket", "messageType": "gossip", "body": {}}',
         ErrorCode.PROTOCOL_ERROR, TransportCode.UNSUPPORTED_MESSAGE_TYPE),
        ('{"protocol": "websocket", "messageType": "intent", "headers": {"requestId": "r9"},'
         ' "body": {"intent": {"name": "echo"}}}', ErrorCode.VALIDATION_ERROR, None),
        (frame(message_type="response"), ErrorCode.VALIDATION_ERROR, None),
    ],
    ids=["binary", "not-json", "not-an-object", "unknown-type", "missing-fields",
         "wrong-body"],
)
async def test_malformed_frames_get_clear_errors(
    message: str | bytes, code: ErrorCode, transport_code: TransportCode | None
) -> None:
    async with running_server() as (url, server), open_websocket_url(url) as ws:
        error = error_of(await exchange(ws, message))
        assert error["code"] == code
        assert error["details"].get("transportCode") == transport_code
        await assert_still_serving(ws)
        assert server.stats.malformed == 1


async def test_error_replies_keep_the_request_id() -> None:
    async with running_server() as (url, _), open_websocket_url(url) as ws:
        bad = ('{"protocol": "websocket", "messageType": "intent", "headers": '
               '{"requestId": "r9"}, "body": {"intent": {"name": "echo"}}}')
        reply = await exchange(ws, bad)
        assert reply["headers"]["requestId"] == "r9"
        # A response frame is not a request.
        response_frame = dumps({"protocol": "websocket", "messageType": "response",
                                "headers": {"requestId": "r10"},
                                "body": {"version": "1.0", "status": "success",
                                         "payload": {}}}).decode()
        reply = await exchange(ws, response_frame)
        assert reply["headers"]["requestId"] == "r10"
        assert error_of(reply)["code"] == ErrorCode.PROTOCOL_ERROR


async def test_oversize_messages() -> None:
    async with running_server(max_frame_bytes=2048) as (url, _), \
            open_websocket_url(url) as ws, open_websocket_url(url) as other:
        error = error_of(await exchange(ws, frame("echo", {"x": "y" * 3000})))
        assert error["details"]["transportCode"] == TransportCode.PAYLOAD_TOO_LARGE
        assert error["details"]["limit"] == 2048
        await assert_still_serving(ws)
        # Beyond twice the limit the library closes the connection (1009); others go on.
        await ws.send_message(frame("echo", {"x": "y" * 5000}))
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(5):
                await ws.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1009
        await assert_still_serving(other)


async def test_control_frames_with_unknown_or_bad_content() -> None:
    async with running_server() as (url, _), open_websocket_url(url) as ws:
        reply = await exchange(ws, frame("intentus.ws.reboot", headers={
            "control": "reboot", "requestId": "c1"}))
        assert reply["headers"]["requestId"] == "c1"
        assert error_of(reply)["code"] == ErrorCode.PROTOCOL_ERROR
        reply = await exchange(ws, frame("echo", headers={"control": "subscribe",
                                                          "requestId": "c2"}))
        assert error_of(reply)["code"] == ErrorCode.PROTOCOL_ERROR  # name and header disagree
        reply = await exchange(ws, frame("intentus.ws.subscribe", {"eventType": 7},
                                         headers={"control": "subscribe", "requestId": "c3"}))
        assert error_of(reply)["code"] == ErrorCode.VALIDATION_ERROR
        # Cancel and credit for ids that are not in flight are ignored, without a reply.
        await ws.send_message(frame("intentus.ws.cancel", headers={
            "control": "cancel", "requestId": "nobody"}))
        await ws.send_message(frame("intentus.ws.credit", {"credit": 5}, headers={
            "control": "credit", "requestId": "nobody"}))
        await assert_still_serving(ws)
        reply = await exchange(ws, frame("intentus.ws.unsubscribe", {"subscription": "zz"},
                                         headers={"control": "unsubscribe", "requestId": "c4"}))
        assert reply["body"]["payload"] == {"subscription": "zz", "removed": False}


async def test_duplicate_request_id_in_flight_is_refused() -> None:
    async with running_server() as (url, _), open_websocket_url(url) as ws:
        await ws.send_message(frame("sleep", {"seconds": 0.5}, headers={"requestId": "dup"}))
        reply = await exchange(ws, frame("echo", headers={"requestId": "dup"}))
        assert error_of(reply)["code"] == ErrorCode.PROTOCOL_ERROR
        with trio.fail_after(5):
            slept = loads(await ws.get_message())
        assert slept["headers"]["requestId"] == "dup"
        assert slept["body"]["payload"] == {"slept": 0.5}


async def test_uncorrelated_requests_are_answered_in_order() -> None:
    async with running_server() as (url, _), open_websocket_url(url) as ws:
        for seconds in (0.3, 0.0, 0.1):
            await ws.send_message(frame("sleep", {"seconds": seconds}))
        with trio.fail_after(5):
            replies = [loads(await ws.get_message()) for _ in range(3)]
        assert [r["body"]["payload"]["slept"] for r in replies] == [0.3, 0.0, 0.1]


async def test_a_client_that_never_reads_is_disconnected() -> None:
    async with running_server(send_timeout=0.5) as (url, server), \
            open_client(url) as good:
        async with open_websocket_url(url) as greedy:
            # A stream without a window header: the server writes until the socket is full.
            await greedy.send_message(frame("count", {"n": 100_000, "pad": 60_000},
                                            headers={"requestId": "s", "stream": "open"}))
            with trio.fail_after(10):
                await server.wait_connections(1)  # only the good client is left
            assert server.stats.aborted == 1
        assert (await good.send_intent(new_intent("echo", {"fine": True}))).ok


async def test_wrong_path_is_rejected_with_404() -> None:
    async with running_server(url="ws://127.0.0.1:0/agents") as (url, _):
        assert url.endswith("/agents")
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url.replace("/agents", "/other")):
                pass
        assert info.value.status_code == 404
        async with open_websocket_url(url) as ws:
            await assert_still_serving(ws)


async def test_abrupt_disconnect_mid_stream_leaks_nothing() -> None:
    async with trio.open_nursery() as nursery:
        server = WebSocketServer(make_router(), shutdown_timeout=0.5)
        url = await nursery.start(server.run)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        async with running_relay(port) as relay:
            await trio.testing.wait_all_tasks_blocked(cushion=0.02)
            baseline = tasks_below(nursery)
            async with open_client(relay.url, reconnect=False) as client:
                stream = client.send_stream(new_intent("count", {"n": 100_000, "delay": 0.001}))
                items = []
                async for item in stream:
                    items.append(item)
                    if len(items) == 5:
                        relay.cut()
                final = items[-1]
                assert final.error is not None  # type: ignore[union-attr]
                assert final.error.details["transportCode"] == (  # type: ignore[union-attr]
                    TransportCode.CONNECTION_FAILURE)
            await server.wait_connections(0)
            await trio.testing.wait_all_tasks_blocked(cushion=0.02)
            assert tasks_below(nursery) == baseline
        nursery.cancel_scope.cancel()
