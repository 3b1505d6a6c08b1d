"""What the MXP transport puts on a stream: MXP messages carrying TransportEnvelope JSON.

Every exchange has its own stream. The client writes one request message and keeps its
sending side open while it waits: closing it gracefully (FIN) means "done", resetting it
means "cancelled", which the server sees at once and turns into cancelling the agent.

    request         reply (same message_id and trace_id)
    CALL            RESPONSE (FINAL)
    STREAM_OPEN     STREAM_CHUNK*, then STREAM_CLOSE (FINAL) holding the final response
    STREAM_OPEN     subscription (``control: subscribe``): RESPONSE, then EVENT* until either
                    side closes
    EVENT           RESPONSE (FINAL) holding ``{"delivered": n}``
    anything bad    ERROR (FINAL) holding an error response, then the stream is closed

Payloads are the JSON TransportEnvelopes every transport exchanges (``framing.py``), so EMCL,
size limits and version negotiation work as everywhere else.
"""

from __future__ import annotations

import struct
from typing import Final

import trio

from ...mxp.message import (
    HEADER_SIZE,
    MessageFlags,
    MessageType,
    MxpDecodeError,
    MxpMessage,
    decode_prefix,
    encode,
)
from ...protocol import headers as h
from ...protocol.enums import Priority
from ...protocol.errors import IntentusError, MalformedMessage, PayloadTooLarge
from ..mxp_legacy.trace import wire_trace as _uuid_trace

#: Header on requests: milliseconds left before the client gives up on the call.
TIMEOUT_MS: Final = h.TIMEOUT_MS
#: Header naming a control request (only ``subscribe`` exists).
CONTROL: Final = "control"
SUBSCRIBE: Final = "subscribe"
#: The reserved intent of a subscription request; its payload is ``{"eventType": pattern}``.
SUBSCRIBE_INTENT: Final = "intentus.mxp.subscribe"
#: Header on pushed events: events the server dropped so far for this subscription.
DROPPED: Final = "dropped"

#: Application error codes of stream resets and STOP_SENDING.
CANCELLED: Final = 0x101
BAD_REQUEST: Final = 0x102
SHUTTING_DOWN: Final = 0x103

#: Stream urgency by intent priority: 0 is served first (MXP has 8 levels, default 3).
URGENCY: Final[dict[Priority, int]] = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 5}

#: Request types a server accepts as the first message of a stream.
REQUESTS: Final = frozenset({MessageType.CALL, MessageType.STREAM_OPEN, MessageType.EVENT})

_LENGTH = struct.Struct("<Q")
_READ_SIZE = 65536


def wire_trace(trace_id: str | None) -> int:
    """The header's u64 trace id: a UUID's first 8 bytes (little-endian), else XXH3-64 of
    the text (as MXP agents derive theirs); 0 when there is none."""
    return _uuid_trace(trace_id) if trace_id else 0


def message(
    kind: MessageType, payload: bytes, message_id: int, trace: int, *, final: bool = False
) -> bytes:
    flags = MessageFlags.FINAL if final else MessageFlags.NONE
    return encode(MxpMessage(kind, payload, message_id, trace, flags))


class MessageReader:
    """Reads MXP messages off one stream, refusing any longer than ``limit`` bytes of payload
    as soon as its header is visible (nothing is buffered beyond the limit)."""

    __slots__ = ("_buf", "limit", "stream")

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self._buf = bytearray()

    async def next(self) -> MxpMessage | None:
        """The next message; None at a clean end of stream. Raises ``MalformedMessage``
        (garbage, bad checksum, cut short) or ``PayloadTooLarge``; stream errors pass."""
        buf = self._buf
        while True:
            if buf:
                try:
                    found = decode_prefix(buf)
                except MxpDecodeError as exc:
                    raise MalformedMessage(f"not a valid MXP message ({exc.reason.value})",
                                           details={"reason": exc.reason.value}) from None
                if found is not None:
                    msg, used = found
                    del buf[:used]
                    return msg
                if len(buf) >= HEADER_SIZE:
                    (size,) = _LENGTH.unpack_from(buf, HEADER_SIZE - 8)
                    if size > self.limit:
                        raise PayloadTooLarge(size, self.limit)
            data = await self.stream.receive_some(_READ_SIZE)
            if not data:
                if buf:
                    raise MalformedMessage("the stream ended inside an MXP message",
                                           details={"reason": "truncated"})
                return None
            buf += data


async def abort(stream: trio.abc.HalfCloseableStream, code: int) -> None:
    """Reset ``stream`` in both directions (the peer sees an error, not an end), or close
    it forcefully if it cannot be reset."""
    reset = getattr(stream, "reset", None)
    if reset is None:
        await trio.aclose_forcefully(stream)
        return
    stop = getattr(stream, "stop_sending", None)
    try:
        if stop is not None:
            stop(code)
        reset(code)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    await trio.aclose_forcefully(stream)


def describe(exc: BaseException) -> str:
    if isinstance(exc, IntentusError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
