"""Bad input against the real server, over raw TCP and httpx: each gets its own status and
error code, and the server keeps serving (every test ends with a good call)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from intentus_trio.protocol.codec import dumps, intent_to_json
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.http import HttpServer, ServerLimits, open_client

from .http_helpers import host_port, raw_request, read_response, running_server

FRAME = {"protocol": "http", "messageType": "intent", "body": intent_to_json(new_intent("echo"))}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, HttpServer]]:
    limits = ServerLimits(max_body_bytes=4096, body_timeout=0.3)
    async with running_server(limits=limits, keep_alive_timeout=0.3) as running:
        yield running


async def assert_still_serving(url: str) -> None:
    async with open_client(url, timeout=5) as client:
        response = await client.send_intent(new_intent("echo", {"still": "up"}))
    assert response.payload == {"still": "up"}


def error_of(data: dict[str, object]) -> dict[str, object]:
    assert data["messageType"] == "response"
    body = data["body"]
    assert isinstance(body, dict) and body["status"] == "error"
    error = body["error"]
    assert isinstance(error, dict)
    return error


@pytest.mark.parametrize(("body", "status", "code", "transport_code"), [
    (b"{not json", 400, "TRANSPORT_ERROR", "MALFORMED_MESSAGE"),
    (b"\xff\xfe", 400, "TRANSPORT_ERROR", "MALFORMED_MESSAGE"),
    (b"[1, 2]", 422, "VALIDATION_ERROR", None),
    (dumps({"protocol": "http", "messageType": "intent", "body": {"version": "1.0"}}),
     422, "VALIDATION_ERROR", None),
    (dumps({**FRAME, "messageType": "telepathy"}), 400, "PROTOCOL_ERROR",
     "UNSUPPORTED_MESSAGE_TYPE"),
    (dumps({**FRAME, "protocolNegotiation": {"minVersion": "7.0", "maxVersion": "9.0"}}),
     400, "PROTOCOL_ERROR", "UNSUPPORTED_VERSION"),
])
async def test_bad_frames(
    server: tuple[str, HttpServer], body: bytes, status: int, code: str,
    transport_code: str | None,
) -> None:
    url, _ = server
    reply = await raw_request(url, "POST", "/intent", body)
    assert reply.status == status
    error = error_of(reply.json())
    assert error["code"] == code
    assert isinstance(error["details"], dict)
    assert error["details"].get("transportCode") == transport_code
    await assert_still_serving(url)


async def test_missing_field_names_the_field(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    body = intent_to_json(new_intent("echo"))
    del body["metadata"]["traceId"]
    reply = await raw_request(url, "POST", "/intent", dumps({**FRAME, "body": body}))
    assert reply.status == 422
    assert error_of(reply.json())["details"] == {
        "field": "body.metadata.traceId", "reason": "required field is missing"}


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
async def test_wrong_content_type(server: tuple[str, HttpServer], content_type: str | None) -> None:
    url, _ = server
    reply = await raw_request(url, "POST", "/intent", dumps(FRAME), content_type=content_type)
    assert reply.status == 415
    assert error_of(reply.json())["code"] == "PROTOCOL_ERROR"
    await assert_still_serving(url)


async def test_content_length_over_limit_is_refused_before_the_body(
    server: tuple[str, HttpServer],
) -> None:
    url, _ = server
    host, port = host_port(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(
            b"POST /intent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n")
        # Not one body byte sent: the answer comes from the header alone.
        with trio.fail_after(5):
            reply = await read_response(stream)
    assert reply.status == 413
    error = error_of(reply.json())
    assert error["details"] == {"transportCode": "PAYLOAD_TOO_LARGE", "size": 100000000,
                                "limit": 4096}
    await assert_still_serving(url)


async def test_chunked_body_over_limit_is_cut_off_while_streaming(
    server: tuple[str, HttpServer],
) -> None:
    url, _ = server
    host, port = host_port(url)
    sent = 0
    chunk = b"x" * 1024
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(
            b"POST /intent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

        async def pump() -> None:
            nonlocal sent
            try:
                while sent < 50_000_000:
                    await stream.send_all(b"400\r\n" + chunk + b"\r\n")
                    sent += len(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            with trio.fail_after(10):
                reply = await read_response(stream)
            nursery.cancel_scope.cancel()
    assert reply.status == 413
    assert reply.headers.get("connection") == "close"
    assert error_of(reply.json())["details"]["limit"] == 4096  # type: ignore[index]
    assert sent < 50_000_000
    await assert_still_serving(url)


async def test_stalled_body_gets_408(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    host, port = host_port(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(
            b"POST /intent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n")
        with trio.fail_after(5):
            reply = await read_response(stream)
    assert reply.status == 408
    assert error_of(reply.json())["details"]["transportCode"] == "TIMEOUT"  # type: ignore[index]
    await assert_still_serving(url)


async def test_stalled_headers_are_disconnected(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    host, port = host_port(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(b"POST /intent HTTP/1.1\r\nHost: x\r\n")
        with trio.fail_after(5):
            while await stream.receive_some(1024):
                pass  # anything the server says before closing
    await assert_still_serving(url)


async def test_garbage_request_line(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    host, port = host_port(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(b"\x00\x01 nonsense\r\n\r\n")
        with trio.fail_after(5):
            reply = await read_response(stream)
    assert reply.status == 400
    await assert_still_serving(url)


async def test_unknown_paths_methods_and_tasks(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    reply = await raw_request(url, "POST", "/nowhere", dumps(FRAME))
    assert reply.status == 404
    assert error_of(reply.json())["code"] == "PROTOCOL_ERROR"

    reply = await raw_request(url, "GET", "/intent")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"

    reply = await raw_request(url, "GET", "/tasks/no-such-task")
    assert reply.status == 404
    assert error_of(reply.json())["details"] == {"field": "taskId",
                                                 "reason": "unknown or expired task"}
    reply = await raw_request(url, "POST", "/tasks/no-such-task/cancel")
    assert reply.status == 404
    reply = await raw_request(url, "DELETE", "/tasks/no-such-task")
    assert reply.status == 404
    reply = await raw_request(url, "GET", "/tasks/x/explode")
    assert reply.status == 404
    await assert_still_serving(url)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{oops", 400, -32700),
    (b"[]", 400, -32600),
    (b"42", 400, -32600),
    (dumps({"jsonrpc": "1.0", "method": "ping", "id": 1}), 400, -32600),
    (dumps({"jsonrpc": "2.0", "method": 7, "id": 1}), 400, -32600),
    (dumps({"jsonrpc": "2.0", "method": "ping", "id": {"no": 1}}), 400, -32600),
    (dumps({"jsonrpc": "2.0", "method": "ping", "params": "x", "id": 1}), 400, -32600),
    (dumps({"jsonrpc": "2.0", "method": "teleport", "id": 1}), 400, -32601),
    (dumps({"jsonrpc": "2.0", "method": "intent", "params": {"x": 1}, "id": 1}), 422, -32602),
    (dumps({"jsonrpc": "2.0", "method": "intent", "params": [1], "id": 1}), 422, -32602),
    (dumps({"jsonrpc": "2.0", "method": "frame", "params": {"protocol": "x"}, "id": 1}),
     422, -32602),
])
async def test_invalid_jsonrpc(
    server: tuple[str, HttpServer], body: bytes, status: int, code: int
) -> None:
    url, _ = server
    reply = await raw_request(url, "POST", "/jsonrpc", body)
    assert reply.status == status
    data = reply.json()
    assert data["jsonrpc"] == "2.0"
    assert data["error"]["code"] == code
    assert data["error"]["data"]["status"] == "error"  # the full AgentResponse
    await assert_still_serving(url)


async def test_jsonrpc_body_over_limit(server: tuple[str, HttpServer]) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url) as raw:
        reply = await raw.post("/jsonrpc", content=b"[" + b"1," * 5000 + b"1]",
                               headers={"content-type": "application/json"})
    assert reply.status_code == 413
    await assert_still_serving(url)


async def test_many_bad_clients_at_once(server: tuple[str, HttpServer]) -> None:
    url, _ = server

    async def one(i: int) -> None:
        reply = await raw_request(url, "POST", "/intent", b"{bad" if i % 2 else dumps(FRAME))
        assert reply.status == (400 if i % 2 else 200)

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    await assert_still_serving(url)
