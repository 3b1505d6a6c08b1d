"""Bad input on the ZeroMQ endpoints: error replies or counted drops, and the node serves on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import trio
import zmq

from intentus_trio.protocol.codec import FrameCodec
from intentus_trio.protocol.enums import ErrorCode, TransportCode, TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse
from intentus_trio.transports.framing import ClientFraming, response_frame
from intentus_trio.transports.zeromq import ZmqServer, open_client, wire
from intentus_trio.transports.zmq_trio import TrioSocket

from ..protectors import StandInProtector
from .zmq_helpers import make_router, running_node

TIMEOUT = 10.0


@contextmanager
def raw_dealer(url: str) -> Iterator[TrioSocket]:
    sock = TrioSocket.open(zmq.DEALER, linger_ms=0)
    sock.socket.connect(url)
    with sock:
        yield sock


def good_frame(payload: dict[str, object] | None = None) -> bytes:
    return ClientFraming(TransportProtocol.ZEROMQ).encode_intent(new_intent("echo", payload or {}))


async def ask(sock: TrioSocket, frames: list[bytes]) -> list[bytes]:
    await sock.send(frames)
    return await sock.receive()


def error_of(reply: bytes) -> dict[str, object]:
    body = orjson.loads(reply)["body"]
    assert body["status"] == "error"
    error: dict[str, object] = body["error"]
    return error


async def still_serving(server: ZmqServer) -> None:
    async with open_client(server.urls["rpc"]) as client:
        response = await client.send_intent(new_intent("echo", {"alive": True}))
        assert response.payload == {"alive": True}


async def test_bad_frames_get_error_replies_with_their_request_id() -> None:
    async with running_node(make_router(), max_frame_bytes=4096) as server:
        with trio.fail_after(TIMEOUT), raw_dealer(server.urls["rpc"]) as sock:
            cases = {
                b"a": [b"a", b"", b"\xff\xfe\x00 not utf-8"],
                b"b": [b"b", b"", b"{not json"],
                b"c": [b"c", b"", b"[1, 2]"],
                b"d": [b"d", b"", good_frame(), b"extra frame"],
                b"e": [b"e", b""],
                b"f": [b"f", b"", b"{" + b" " * 5000 + b"}"],
                b"g": [b"g", b"", orjson.dumps({"protocol": "zeromq", "messageType": "nope",
                                                "body": {}})],
                b"h": [b"h", b"", good_frame({"blob": "x" * 5000})],
            }
            codes = {}
            for rid, frames in cases.items():
                reply = await ask(sock, frames)
                assert reply[:2] == [rid, b""]
                error = error_of(reply[2])
                details = error["details"]
                assert isinstance(details, dict)
                codes[rid] = (error["code"], details.get("transportCode"))
            assert codes[b"a"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE)
            assert codes[b"b"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE)
            assert codes[b"c"][0] == ErrorCode.VALIDATION_ERROR
            assert codes[b"d"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE)
            assert codes[b"e"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.MALFORMED_MESSAGE)
            assert codes[b"f"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.PAYLOAD_TOO_LARGE)
            assert codes[b"g"][1] == TransportCode.UNSUPPORTED_MESSAGE_TYPE
            assert codes[b"h"] == (ErrorCode.TRANSPORT_ERROR, TransportCode.PAYLOAD_TOO_LARGE)
            assert server.stats.error_replies == len(cases)
            # The same raw socket still gets answers.
            reply = await ask(sock, [b"ok", b"", good_frame({"n": 1})])
            assert orjson.loads(reply[2])["body"]["payload"] == {"n": 1}
            await still_serving(server)


async def test_messages_without_an_envelope_are_dropped_and_counted() -> None:
    async with running_node(make_router()) as server:
        with trio.fail_after(TIMEOUT), raw_dealer(server.urls["rpc"]) as sock:
            await sock.send([good_frame()])  # no delimiter
            await sock.send([b"x" * 300, b"", good_frame()])  # envelope frame too long
            await sock.send([*([b"e"] * 9), b"", good_frame()])  # envelope too deep
            await sock.send([b"", wire.CANCEL])  # cancel for a stream that never ran
            reply = await ask(sock, [b"after", b"", good_frame({"k": 2})])
            assert reply[0] == b"after"
            assert server.stats.dropped_malformed == 3
            assert server.stats.unknown_cancels == 1
            await still_serving(server)


async def test_message_above_maxmsgsize_cuts_that_connection_only() -> None:
    async with running_node(make_router(), max_frame_bytes=1024,
                            max_message_bytes=4096) as server:
        with trio.fail_after(TIMEOUT), raw_dealer(server.urls["rpc"]) as sock:
            await sock.send([b"huge", b"", b"{" + b" " * 100_000 + b"}"])
            await still_serving(server)
            # The raw DEALER reconnects by itself and is answered again.
            reply = await ask(sock, [b"again", b"", good_frame({"r": 1})])
            assert reply[0] == b"again"


async def test_client_drops_replies_it_cannot_place() -> None:
    """Unknown request ids and malformed replies are counted; the call still completes."""
    router_sock = TrioSocket.open(zmq.ROUTER, linger_ms=0)
    router_sock.socket.bind("tcp://127.0.0.1:0")
    url = router_sock.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    codec = FrameCodec()
    env = new_intent("echo", {})
    good = codec.encode(
        response_frame(AgentResponse.success({"fine": 1}), TransportProtocol.ZEROMQ)
    )

    async def fake_node() -> None:
        peer, rid, _, _ = await router_sock.receive()
        await router_sock.send([peer, b"no-such-id", b"", good])
        await router_sock.send([peer, rid, b"oops"])  # wrong shape
        await router_sock.send([peer, rid, b"", b"\xff garbage"])

    with router_sock, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, open_client(url) as client:
            nursery.start_soon(fake_node)
            response = await client.send_intent(env)
            assert response.error is not None
            assert response.error.details["transportCode"] == TransportCode.MALFORMED_MESSAGE
            assert response.trace_id == env.metadata.trace_id
            assert client.stats.late_replies == 1
            assert client.stats.dropped_malformed == 1


async def test_emcl_protector_plumbing() -> None:
    server_p, client_p = StandInProtector(), StandInProtector()
    async with running_node(make_router(), protector=server_p, require_emcl=True) as server:
        with trio.fail_after(TIMEOUT):
            async with open_client(server.urls["rpc"], protector=client_p) as client:
                response = await client.send_intent(new_intent("echo", {"secret": 1}))
                assert response.payload == {"secret": 1}
                assert client_p.sealed == 1 and server_p.opened == 1
                assert server_p.sealed == 1 and client_p.opened == 1
                streamed = [i async for i in client.send_stream(new_intent("count", {"n": 2}))]
                assert len(streamed) == 3
            async with open_client(server.urls["rpc"]) as plain:
                refused = await plain.send_intent(new_intent("echo", {}))
                assert refused.error is not None
                assert refused.error.code is ErrorCode.EMCL_FAILURE
            async with open_client(server.urls["rpc"], protector=StandInProtector("k2")) as wrong:
                refused = await wrong.send_intent(new_intent("echo", {}))
                assert refused.error is not None
                assert refused.error.code is ErrorCode.EMCL_FAILURE
            async with open_client(server.urls["rpc"], protector=client_p) as again:
                assert (await again.send_intent(new_intent("echo", {"n": 3}))).payload == {"n": 3}
