"""Legacy MXP adapter over real UDP sockets on 127.0.0.1, against a peer built from the wire
format alone (struct + xxhash): existing MXP agents calling us, and us calling them."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from intentus_trio.mxp.message import decode
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.transports.mxp_legacy import (
    LegacyServerStats,
    open_legacy_client,
    serve_legacy,
    wire_trace,
)

from .test_mxp_legacy_helpers import (
    ACK,
    CALL,
    COMPRESSED,
    ERROR,
    EVENT,
    RESPONSE,
    Echo,
    Raw,
    echo_router,
    raw_decode,
    raw_encode,
)

GOLDEN_VECTOR = json.loads(Path("/work/shared/vectors/mxp/golden.json").read_text())["vectors"][0]


class RawPeer:
    """An 'existing MXP agent': a UDP socket speaking MXP via the helpers' raw codec."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    async def send(self, data: bytes, to: tuple[str, int]) -> None:
        await self.sock.sendto(data, to)

    async def receive(self, timeout: float = 5.0) -> tuple[Raw, tuple[str, int]]:
        with trio.fail_after(timeout):
            data, source = await self.sock.recvfrom(65535)
        return raw_decode(data), source


@asynccontextmanager
async def raw_peer() -> AsyncIterator[RawPeer]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        yield RawPeer(sock)


@asynccontextmanager
async def legacy_server(**options: Any) -> AsyncIterator[tuple[tuple[str, int], Echo,
                                                               LegacyServerStats, Any]]:
    router, echo = echo_router()
    stats = LegacyServerStats()
    async with trio.open_nursery() as nursery:
        address = await nursery.start(partial(serve_legacy, router, "127.0.0.1", 0,
                                              stats=stats, **options))
        yield address, echo, stats, router
        nursery.cancel_scope.cancel()


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------- agents calling us


async def test_runtime_shaped_call_gets_response_with_same_ids() -> None:
    async with legacy_server() as (address, echo, _stats, _), raw_peer() as peer:
        call = body({"type": "echo", "code": "fn main() {}", "request_id": "req-1"})
        await peer.send(raw_encode(CALL, call, 0x1122334455667788, 0x99AABBCCDDEEFF00), address)
        reply, source = await peer.receive()
        assert source == address
        assert reply.type == RESPONSE
        assert reply.message_id == 0x1122334455667788
        assert reply.trace_id == 0x99AABBCCDDEEFF00
        obj = json.loads(reply.payload)
        assert obj["request_id"] == "req-1"  # where the runtime's coordinator looks for it
        assert obj["status"] == "success"
        assert obj["payload"]["echo"]["code"] == "fn main() {}"
        assert echo.seen == ["req-1"]


async def test_full_envelope_call() -> None:
    async with legacy_server() as (address, _, _, _), raw_peer() as peer:
        env = {
            "version": "1.0",
            "intent": {"name": "echo", "version": "1.0"},
            "payload": {"x": 1},
            "context": {"sourceAgent": "py", "timestamp": "2024-01-01T00:00:00Z",
                        "priority": "high", "tags": []},
            "metadata": {"requestId": "r", "source": "py", "createdAt": "2024-01-01T00:00:00Z",
                         "traceId": "5f0c7c44-3a52-4e8e-9b6e-2d35e0d1a111", "identityChain": []},
        }
        await peer.send(raw_encode(CALL, body(env), 3, 4), address)
        reply, _ = await peer.receive()
        obj = json.loads(reply.payload)
        assert (reply.type, reply.message_id, reply.trace_id) == (RESPONSE, 3, 4)
        assert obj["payload"] == {"echo": {"x": 1},
                                  "traceId": "5f0c7c44-3a52-4e8e-9b6e-2d35e0d1a111"}
        assert obj["metadata"]["traceId"] == "5f0c7c44-3a52-4e8e-9b6e-2d35e0d1a111"


async def test_unknown_intent_is_an_error_response() -> None:
    async with legacy_server() as (address, _, _, _), raw_peer() as peer:
        await peer.send(raw_encode(CALL, body({"intent": "nobody"}), 8, 9), address)
        reply, _ = await peer.receive()
        obj = json.loads(reply.payload)
        assert reply.type == RESPONSE
        assert obj["status"] == "error" and obj["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_event_with_ack_reaches_event_bus() -> None:
    async with legacy_server() as (address, _, stats, router), raw_peer() as peer, \
            router.events.subscribe("*") as sub:
        audit = {"agent_id": "a", "subject": "tool", "decision": "Deny"}
        await peer.send(raw_encode(EVENT, body(audit), 21, 0xFEED, 0x04), address)
        ack, _ = await peer.receive()
        assert (ack.type, ack.message_id, ack.trace_id, ack.payload) == (ACK, 21, 0xFEED, b"")
        event = await sub.receive()
        assert event.event_type == "mxp.event" and event.payload == audit
        typed = {"eventType": "agent.ready", "payload": {"ok": True}}
        await peer.send(raw_encode(EVENT, body(typed), 22, 0), address)
        event = await sub.receive()
        assert event.event_type == "agent.ready" and event.payload == {"ok": True}
        assert stats.events == 2


async def test_golden_vector_through_the_server() -> None:
    vector = GOLDEN_VECTOR
    data = bytes.fromhex(vector["encoded_hex"])
    message_id = int(vector["message_id"], 16)
    trace_id = int(vector["trace_id"], 16)
    # The independent encoder of these tests reproduces the reference's bytes ...
    assert raw_encode(vector["type"], bytes.fromhex(vector["payload_hex"]), message_id,
                      trace_id, vector["flags"]) == data
    # ... and so does our codec, which the server uses.
    message = decode(data)
    assert (message.type, message.message_id, message.trace_id, message.payload) == (
        vector["type"], message_id, trace_id, b"ping")
    async with legacy_server() as (address, _, stats, _), raw_peer() as peer:
        await peer.send(data, address)
        reply, _ = await peer.receive()
        # A valid Call whose payload ("ping") is not JSON: an MXP Error with the same ids.
        assert (reply.type, reply.message_id, reply.trace_id) == (ERROR, message_id, trace_id)
        error = json.loads(reply.payload)
        assert error["code"] == "TRANSPORT_ERROR"
        assert error["details"]["transportCode"] == "MALFORMED_MESSAGE"
        assert stats.dropped == {}


# --------------------------------------------------------------------- bad input


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


GOOD = body({"intent": "echo", "payload": {"ok": 1}})
Case = tuple[str, Callable[[int], bytes], str | None]
BAD_INPUT: list[Case] = [
    ("bad_magic", lambda i: raw_encode(CALL, GOOD, i, 1, magic=0x3150584E), None),
    ("bad_checksum", lambda i: _flip_last(raw_encode(CALL, GOOD, i, 1)), None),
    ("unknown_type", lambda i: raw_encode(0x99, GOOD, i, 1), None),
    ("bad_flags", lambda i: raw_encode(CALL, GOOD, i, 1, 0x10), None),
    ("bad_reserved", lambda i: raw_encode(CALL, GOOD, i, 1, reserved=1), None),
    ("trailing_bytes", lambda i: raw_encode(CALL, GOOD, i, 1) + b"\x00", None),
    ("truncated_header", lambda i: raw_encode(CALL, GOOD, i, 1)[:20], None),
    ("truncated_payload", lambda i: raw_encode(CALL, GOOD, i, 1)[:-9], None),
    ("empty", lambda i: b"", None),
    ("huge_length", lambda i: raw_encode(CALL, GOOD, i, 1)[:24] + (1 << 40).to_bytes(8, "little")
     + GOOD, None),
    ("stray_response", lambda i: raw_encode(RESPONSE, GOOD, i, 1), None),
    ("stray_ack", lambda i: raw_encode(ACK, b"", i, 1), None),
    ("stray_error", lambda i: raw_encode(ERROR, b'{"error":"x","code":"y"}', i, 1), None),
    ("not_json", lambda i: raw_encode(CALL, b"\xff\xfe not json", i, 1), "TRANSPORT_ERROR"),
    ("json_array", lambda i: raw_encode(CALL, b"[1, 2]", i, 1), "TRANSPORT_ERROR"),
    ("empty_payload", lambda i: raw_encode(CALL, b"", i, 1), "TRANSPORT_ERROR"),
    ("no_intent", lambda i: raw_encode(CALL, body({"foo": 1}), i, 1), "VALIDATION_ERROR"),
    ("intent_not_name", lambda i: raw_encode(CALL, body({"intent": 5}), i, 1),
     "VALIDATION_ERROR"),
    ("payload_not_object", lambda i: raw_encode(CALL, body({"intent": "echo", "payload": [1]}),
                                                i, 1), "VALIDATION_ERROR"),
    ("empty_type", lambda i: raw_encode(CALL, body({"type": ""}), i, 1), "VALIDATION_ERROR"),
    ("bad_metadata", lambda i: raw_encode(CALL, body({"intent": "echo", "metadata": 3}), i, 1),
     "VALIDATION_ERROR"),
    ("compressed", lambda i: raw_encode(CALL, GOOD, i, 1, COMPRESSED), "PROTOCOL_ERROR"),
    ("encrypted", lambda i: raw_encode(CALL, GOOD, i, 1, 0x02), "PROTOCOL_ERROR"),
    ("register", lambda i: raw_encode(0x01, body({"agent_id": "a"}), i, 1), "PROTOCOL_ERROR"),
    ("discover", lambda i: raw_encode(0x02, body({"capability": "x"}), i, 1), "PROTOCOL_ERROR"),
    ("stream_open", lambda i: raw_encode(0x20, b"\x00" * 33, i, 1), "PROTOCOL_ERROR"),
    ("event_not_json", lambda i: raw_encode(EVENT, b"nope", i, 1), "TRANSPORT_ERROR"),
    ("event_bad_type", lambda i: raw_encode(EVENT, body({"eventType": 3}), i, 1),
     "VALIDATION_ERROR"),
]


async def test_every_bad_input_then_a_good_call() -> None:
    async with legacy_server() as (address, echo, stats, _), raw_peer() as peer:
        for n, (name, make, code) in enumerate(BAD_INPUT):
            bad_id = 5000 + n
            await peer.send(make(bad_id), address)
            good_id = 9000 + n
            await peer.send(raw_encode(CALL, GOOD, good_id, 77), address)
            reply, _ = await peer.receive()
            if code is not None:
                assert (reply.type, reply.message_id) == (ERROR, bad_id), name
                assert reply.trace_id == 1, name
                error = json.loads(reply.payload)
                assert error["code"] == code, (name, error)
                assert isinstance(error["error"], str) and error["error"], name
                reply, _ = await peer.receive()
            assert (reply.type, reply.message_id, reply.trace_id) == (RESPONSE, good_id, 77), name
            assert json.loads(reply.payload)["status"] == "success", name
        assert echo.calls == len(BAD_INPUT)
        assert stats.dropped == {
            "bad_magic": 1, "bad_checksum": 1, "unknown_type": 1, "bad_flags": 1,
            "bad_reserved": 1, "trailing_bytes": 1, "truncated": 3, "too_large": 1,
        }
        assert stats.ignored == 3


async def test_oversized_reply_becomes_payload_too_large() -> None:
    async with legacy_server() as (address, _, _, router), raw_peer() as peer:

        async def big(env: Any) -> dict[str, Any]:
            return {"blob": "x" * 70_000}

        router.register("big-agent", "big", big)
        await peer.send(raw_encode(CALL, body({"intent": "big"}), 1, 2), address)
        reply, _ = await peer.receive()
        obj = json.loads(reply.payload)
        assert reply.type == RESPONSE and obj["error"]["code"] == "TRANSPORT_ERROR"
        assert obj["error"]["details"]["transportCode"] == "PAYLOAD_TOO_LARGE"


# --------------------------------------------------------------------- us calling agents


@asynccontextmanager
async def fake_agent(reply: Callable[[Raw], list[bytes]], *, drop_first: int = 0
                     ) -> AsyncIterator[tuple[tuple[str, int], list[Raw]]]:
    """An MXP agent on a raw socket: answers each Call with ``reply(call)`` datagrams."""
    received: list[Raw] = []
    async with raw_peer() as peer, trio.open_nursery() as nursery:

        async def serve() -> None:
            while True:
                data, source = await peer.sock.recvfrom(65535)
                call = raw_decode(data)
                received.append(call)
                if len(received) <= drop_first:
                    continue
                for out in reply(call):
                    await peer.sock.sendto(out, source)

        nursery.start_soon(serve)
        yield peer.address, received
        nursery.cancel_scope.cancel()


def runtime_agent(call: Raw) -> list[bytes]:
    """Like the MXP runtime's example agents: fresh ids, its own JSON, request_id echoed."""
    request = json.loads(call.payload)
    answer = {"agent": "CodeReviewer", "review": f"looks fine: {request['code']}",
              "status": "complete", "request_id": request["request_id"]}
    return [raw_encode(RESPONSE, body(answer), 0xDEAD0000 + call.message_id % 1000, 0x77)]


async def test_client_calls_runtime_agent_flat_style() -> None:
    async with fake_agent(runtime_agent, drop_first=1) as (address, received), \
            open_legacy_client(*address, payload_style="flat", retransmit_after=0.05) as client:
        env = new_intent("code_review", {"code": "fn x() {}"})
        response = await client.send_intent(env, timeout=5)
        assert response.ok, response
        assert response.payload is not None
        assert response.payload["review"] == "looks fine: fn x() {}"
        assert response.metadata["agent"] == "CodeReviewer"
        assert response.trace_id == env.metadata.trace_id
        # The Call was lost once and sent again with the same id, in the runtime's shape.
        assert len(received) == 2 and received[0] == received[1]
        sent = json.loads(received[0].payload)
        assert sent == {"type": "code_review", "code": "fn x() {}",
                        "request_id": env.metadata.request_id}
        assert client.stats.retransmits == 1


async def test_client_matches_replies_by_message_id() -> None:
    def registry_like(call: Raw) -> list[bytes]:
        request = json.loads(call.payload)
        stray = raw_encode(RESPONSE, body({"other": True}), call.message_id ^ 1, 1)
        answer = {"version": "1.0", "status": "success", "payload": {"got": request["payload"]},
                  "metadata": {"agent": "reg"}}
        return [stray, raw_encode(RESPONSE, body(answer), call.message_id, call.trace_id)]

    async with fake_agent(registry_like) as (address, received), \
            open_legacy_client(*address) as client:
        env = new_intent("anything", {"k": "v"})
        response = await client.send_intent(env, timeout=5)
        assert response.ok and response.payload == {"got": {"k": "v"}}
        assert response.trace_id == env.metadata.trace_id
        assert client.stats.late_replies == 1
        # Our Call carried the full envelope, and the trace id in the header.
        assert json.loads(received[0].payload)["metadata"]["traceId"] == env.metadata.trace_id
        assert received[0].trace_id == wire_trace(env.metadata.trace_id)


async def test_client_maps_runtime_error_messages() -> None:
    def refuse(call: Raw) -> list[bytes]:
        return [raw_encode(ERROR, body({"error": "agent not registered", "code": "NOT_FOUND"}),
                           call.message_id, call.trace_id)]

    async with fake_agent(refuse) as (address, _), open_legacy_client(*address) as client:
        response = await client.send_intent(new_intent("x"), timeout=5)
        assert response.error is not None
        assert response.error.code is ErrorCode.PROTOCOL_ERROR
        assert response.error.message == "agent not registered"
        assert response.error.details == {"peerCode": "NOT_FOUND"}


async def test_client_and_server_end_to_end_over_udp() -> None:
    async with legacy_server() as (address, echo, stats, router), \
            open_legacy_client(*address, event_acks=True) as client, \
            router.events.subscribe("e2e") as sub:
        env = new_intent("echo", {"hello": "udp"})
        response = await client.send_intent(env, timeout=5)
        assert response.ok and response.payload == {"echo": {"hello": "udp"},
                                                     "traceId": env.metadata.trace_id}
        event = new_event("e2e", {"n": 1})
        await client.publish(event, timeout=5)
        assert await sub.receive() == event
        items = [item async for item in client.send_stream(new_intent("echo"), timeout=5)]
        assert len(items) == 1
    assert echo.calls == 2 and stats.events == 1


async def test_localhost_name_resolves() -> None:
    async with legacy_server() as (address, _, _, _), \
            open_legacy_client("localhost", address[1], timeout=5) as client:
        if client.peer[0] != "127.0.0.1":
            pytest.skip("localhost resolves to IPv6 first here")
        assert (await client.send_intent(new_intent("echo"))).ok


def test_raw_codec_rejects_our_own_bad_bytes() -> None:
    # Guard for the test codec itself: it must notice a corrupt checksum.
    with pytest.raises(AssertionError):
        raw_decode(_flip_last(raw_encode(CALL, b"{}", 1, 2)))
    assert orjson.loads(raw_decode(raw_encode(CALL, b"{}", 1, 2)).payload) == {}
