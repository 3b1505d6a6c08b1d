"""Bad input on MXP transport streams: each bad stream gets an answer (ERROR, or an error
response) or a reset, while other streams of the same connection go on being served."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
import trio

from intentus_trio.mxp.message import MessageType, MxpMessage, encode
from intentus_trio.protocol.codec import loads
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.transports.mxp import Backend, MxpEndpoint, MxpPool, MxpServer, open_client
from intentus_trio.transports.mxp.wire import MessageReader

from .test_mxp_transport import BACKENDS, Gate, make_router

pytestmark = pytest.mark.parametrize("backend_name", [p.values[0] for p in BACKENDS[:1]] + [
    pytest.param("mxp", marks=BACKENDS[1].marks)])


def _backend(name: str) -> Backend | None:
    from intentus_trio.transports.mxp import TcpStreamBackend

    return TcpStreamBackend() if name == "tcp" else None


async def _exchange(pool: MxpPool, url: str, data: bytes, *, close: bool = False
                    ) -> MxpMessage | str | None:
    """Write raw bytes on a new stream; the reply message, None (clean end) or "reset"."""
    link = await pool.link(MxpEndpoint.parse(url))
    stream = await link.open_stream(3)
    await stream.send_all(data)
    if close:
        await stream.send_eof()
    try:
        with trio.fail_after(5):
            return await MessageReader(stream, 1 << 24).next()
    except trio.BrokenResourceError:
        return "reset"
    finally:
        await trio.aclose_forcefully(stream)


def _error(msg: MxpMessage | str | None) -> dict[str, Any]:
    assert isinstance(msg, MxpMessage), msg
    body: dict[str, Any] = loads(msg.payload)["body"]
    assert body["status"] == "error"
    error: dict[str, Any] = body["error"]
    return error


async def test_garbage_and_broken_messages(backend_name: str) -> None:
    backend = _backend(backend_name)
    gate = Gate()
    server = MxpServer(make_router(gate), backend=backend, max_frame_bytes=4096)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        async with MxpPool(backend=backend) as pool, \
                open_client(url, pool=pool) as transport:
            # A call in flight the whole time, on the same connection.
            pending: list[Any] = []
            answered = trio.Event()

            async def slow_call() -> None:
                pending.append(await transport.send_intent(new_intent("wait"), timeout=30))
                answered.set()

            nursery.start_soon(slow_call)
            with trio.fail_after(5):
                await gate.wait_arrivals(1)

            good = orjson.dumps({"x": 1})
            garbage = await _exchange(pool, url, b"GET / HTTP/1.1\r\n\r\n" * 4)
            assert garbage.type is MessageType.ERROR  # type: ignore[union-attr]
            assert _error(garbage)["details"]["transportCode"] == "MALFORMED_MESSAGE"

            corrupt = bytearray(encode(MxpMessage(MessageType.CALL, good, 7, 9)))
            corrupt[-1] ^= 0xFF
            bad_sum = _error(await _exchange(pool, url, bytes(corrupt)))
            assert bad_sum["details"]["reason"] == "bad_checksum"

            wrong = await _exchange(pool, url, encode(MxpMessage(MessageType.RESPONSE, good, 5)))
            assert wrong.message_id == 5  # type: ignore[union-attr]
            assert _error(wrong)["details"]["transportCode"] == "UNSUPPORTED_MESSAGE_TYPE"

            header = struct.pack("<IBBHQQQ", 0x4D585031, MessageType.CALL, 0, 0, 1, 0, 1 << 20)
            too_big = _error(await _exchange(pool, url, header))
            assert too_big["details"]["transportCode"] == "PAYLOAD_TOO_LARGE"

            cut = await _exchange(pool, url, encode(MxpMessage(MessageType.CALL, good))[:20],
                                  close=True)
            assert _error(cut)["details"]["transportCode"] == "MALFORMED_MESSAGE"

            not_json = await _exchange(pool, url, encode(MxpMessage(MessageType.CALL, b"{", 3)))
            assert not_json.type is MessageType.RESPONSE  # type: ignore[union-attr]
            assert _error(not_json)["details"]["transportCode"] == "MALFORMED_MESSAGE"

            event = transport.framing.encode_event(new_event("e"))
            mixed = await _exchange(pool, url, encode(MxpMessage(MessageType.CALL, event, 4)))
            assert _error(mixed)["code"] == "PROTOCOL_ERROR"

            empty = await _exchange(pool, url, b"", close=True)
            assert empty in ("reset", None)

            assert server.stats.refused >= 5
            assert (await transport.send_intent(new_intent("echo", {"ok": 1}))).payload == {
                "ok": 1}
            assert transport.pool.stats.connects == 1
            gate.release.set()
            with trio.fail_after(5):
                await answered.wait()
            assert pending[0].ok
        nursery.cancel_scope.cancel()


async def test_a_client_that_never_sends_its_request_is_dropped(backend_name: str) -> None:
    backend = _backend(backend_name)
    server = MxpServer(make_router(), backend=backend, request_timeout=0.2)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        async with MxpPool(backend=backend) as pool:
            partial = encode(MxpMessage(MessageType.CALL, b"{}"))[:10]
            outcome = await _exchange(pool, url, partial)
            assert outcome in ("reset", None)
            async with open_client(url, pool=pool) as transport:
                assert (await transport.send_intent(new_intent("echo"))).ok
        nursery.cancel_scope.cancel()
