"""Frames on both ends of a network transport.

Clients wrap envelopes with ``request_frame`` and read replies with ``reply_item``. Servers
hand every received frame to a ``FrameDispatcher``, which decodes it, negotiates the
protocol version, routes it, and always produces a reply frame: malformed input becomes an
error response with its own code, so a bad peer gets a clear answer and the server keeps
serving. Transports differ only in how bytes move.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Final, Protocol

import trio

from ..protocol import headers as h
from ..protocol._fastnew import new_frame as _new_frame
from ..protocol.codec import FrameCodec, dumps, loads, unencodable_reply
from ..protocol.enums import MessageType, ResponseStatus, TransportProtocol
from ..protocol.errors import (
    EMCLFailure,
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
)
from ..protocol.models import (
    PROTOCOL_VERSION,
    AgentResponse,
    EMCLEnvelope,
    Event,
    IntentEnvelope,
    ProtocolNegotiation,
    StreamChunk,
    TransportEnvelope,
)
from ..protocol.versions import SUPPORTED_VERSIONS, negotiate
from ..routing.router import Router
from .base import StreamItem

_NEGOTIATION = SUPPORTED_VERSIONS
_REFERENCE = TransportProtocol.INTENTUSNET_1_0.value
# Enum members as module constants: a lookup through the class costs ~0.1 µs on Python 3.11.
_INTENT: Final = MessageType.INTENT
_RESPONSE: Final = MessageType.RESPONSE
_EVENT: Final = MessageType.EVENT
_SUCCESS: Final = ResponseStatus.SUCCESS


class FrameProtector(Protocol):
    """Seals and opens frame bodies (EMCL). ``open`` raises ``EMCLFailure`` on any fault.

    ``reply_to`` is the request a reply answers, exactly as received (still sealed): the
    protector seals the reply for that request's sender and binds it to that request.
    ``expect_reply=False`` marks a request no reply will answer (nothing to remember).
    """

    def seal(
        self,
        frame: TransportEnvelope,
        *,
        reply_to: TransportEnvelope | None = None,
        expect_reply: bool = True,
    ) -> TransportEnvelope: ...

    def open(self, frame: TransportEnvelope) -> TransportEnvelope: ...


def is_sealed(frame: TransportEnvelope) -> bool:
    return isinstance(frame.body, EMCLEnvelope)


#: The most milliseconds ``call_timeout`` reads (12 digits, about 31 years).
_MAX_TIMEOUT_MS: Final = 10**12 - 1


_TIMEOUT_MS: Final = h.TIMEOUT_MS
_now = trio.current_time
_ceil = math.ceil


def timeout_headers(deadline: float) -> dict[str, str]:
    """``{timeoutMs: ...}`` for a call due at trio time ``deadline``; none when it is
    infinite or further off than a server reads (``call_timeout``), which is the same."""
    ms = (deadline - _now()) * 1000
    if ms > _MAX_TIMEOUT_MS:
        return {}
    return {_TIMEOUT_MS: str(_ceil(ms)) if ms > 1 else "1"}  # past: due at once


def call_timeout(headers: Mapping[str, str], cap: float | None) -> float | None:
    """Seconds a server gives a call: the client's ``timeoutMs``, capped by ``cap``."""
    text = headers.get(_TIMEOUT_MS)
    # isascii: isdigit() also accepts digits int() refuses (superscripts, circled digits)
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 12:
        return cap
    seconds = int(text) / 1000
    return seconds if cap is None else min(seconds, cap)


def request_frame(
    env: IntentEnvelope,
    protocol: TransportProtocol,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> TransportEnvelope:
    """An intent frame advertising our version range and carrying the trace id."""
    out = {h.CONTENT_TYPE: h.JSON_CONTENT_TYPE, h.TRACE_ID: env.metadata.trace_id}
    if request_id is not None:
        out[h.REQUEST_ID] = request_id
    if headers:
        out.update(headers)
    return _new_frame(protocol, _INTENT, env, out, _NEGOTIATION)


def event_frame(event: Event, protocol: TransportProtocol) -> TransportEnvelope:
    out = {h.CONTENT_TYPE: h.JSON_CONTENT_TYPE}
    if event.trace_id is not None:
        out[h.TRACE_ID] = event.trace_id
    return _new_frame(protocol, _EVENT, event, out, _NEGOTIATION)


def response_frame(
    item: StreamItem,
    protocol: TransportProtocol,
    *,
    request_id: str | None = None,
    version: str = PROTOCOL_VERSION,
) -> TransportEnvelope:
    """A reply frame; a StreamChunk travels as a response marked ``stream: chunk``."""
    out = {h.CONTENT_TYPE: h.JSON_CONTENT_TYPE, h.PROTOCOL_VERSION: version}
    if request_id is not None:
        out[h.REQUEST_ID] = request_id
    if isinstance(item, StreamChunk):
        out[h.STREAM] = h.STREAM_CHUNK
        out[h.SEQUENCE] = str(item.seq)
        body = AgentResponse(PROTOCOL_VERSION, _SUCCESS, item.payload, {})
    else:
        body = item
        if item.trace_id is not None:
            out[h.TRACE_ID] = item.trace_id
    return _new_frame(protocol, _RESPONSE, body, out, _NEGOTIATION)


def reply_item(frame: TransportEnvelope) -> StreamItem:
    """Interpret a received reply frame as a chunk or a final response."""
    if frame.message_type is not _RESPONSE or not isinstance(
        frame.body, AgentResponse
    ):
        raise ProtocolError(
            f"expected a response frame, got messageType {frame.message_type.value!r}"
        )
    if frame.headers.get(h.STREAM) == h.STREAM_CHUNK:
        seq = frame.headers.get(h.SEQUENCE, "")
        if not (seq.isascii() and seq.isdigit()) or len(seq) > 12:
            raise MalformedMessage("stream chunk without a valid seq header")
        return StreamChunk(int(seq), frame.body.payload or {})
    return frame.body


class ClientFraming:
    """The client half shared by network transports: request bytes out, reply items in."""

    def __init__(
        self,
        protocol: TransportProtocol,
        *,
        codec: FrameCodec | None = None,
        protector: FrameProtector | None = None,
    ) -> None:
        self.protocol = protocol
        self.codec = codec or FrameCodec()
        self.protector = protector

    def encode_intent(
        self,
        env: IntentEnvelope,
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        expect_reply: bool = True,
    ) -> bytes:
        """Encode (and seal) an intent; ``expect_reply=False`` for one nothing will answer."""
        frame = request_frame(env, self.protocol, request_id=request_id, headers=headers)
        if self.protector is not None:
            frame = self.protector.seal(frame, expect_reply=expect_reply)
        return self.codec.encode(frame)

    def encode_event(self, event: Event) -> bytes:
        frame = event_frame(event, self.protocol)
        if self.protector is not None:
            frame = self.protector.seal(frame)
        return self.codec.encode(frame)

    def decode_frame(self, data: bytes | bytearray | memoryview | str) -> TransportEnvelope:
        """Decode and, if sealed, open a received frame (raises IntentusError)."""
        frame = self.codec.decode(data, _RESPONSE)
        if is_sealed(frame):
            if self.protector is None:
                raise EMCLFailure("received an EMCL frame but EMCL is not configured",
                                  details={"reason": "not_configured"})
            frame = self.protector.open(frame)
        elif self.protector is not None and not (
            isinstance(frame.body, AgentResponse) and frame.body.error is not None
        ):
            # Error replies stay readable: a peer that could not open our request
            # cannot seal its answer either.
            raise EMCLFailure("received a plaintext frame on an EMCL transport",
                                  details={"reason": "plaintext"})
        return frame

    def decode_reply(self, data: bytes | bytearray | memoryview | str) -> StreamItem:
        return reply_item(self.decode_frame(data))


def _salvage(
    data: bytes | bytearray | memoryview | str,
) -> tuple[str | None, str | None, bool]:
    """Best-effort (traceId, requestId, sent by a reference client) of a frame that failed to
    decode, for the error reply: a reference client reads only ``INTENTUSNET/1.0`` replies."""
    try:
        obj = loads(data)
    except IntentusError:
        return None, None, False
    if type(obj) is not dict:
        return None, None, False
    headers = obj.get("headers")
    trace_id = request_id = None
    if type(headers) is dict:
        trace_id = headers.get(h.TRACE_ID)
        request_id = headers.get(h.REQUEST_ID)
    body = obj.get("body")
    if trace_id is None and type(body) is dict and type(body.get("metadata")) is dict:
        trace_id = body["metadata"].get("traceId")
    return (
        trace_id if type(trace_id) is str and len(trace_id) <= 256 else None,
        request_id if type(request_id) is str and len(request_id) <= 256 else None,
        obj.get("protocol") == _REFERENCE,
    )


class FrameDispatcher:
    """Server side of every network transport: frame in, reply frame(s) out."""

    def __init__(
        self,
        router: Router,
        protocol: TransportProtocol,
        *,
        codec: FrameCodec | None = None,
        supported: ProtocolNegotiation = SUPPORTED_VERSIONS,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
    ) -> None:
        self.router = router
        self.protocol = protocol
        self.codec = codec or FrameCodec()
        self.supported = supported
        self.protector = protector
        #: Refuse plaintext requests (only meaningful with a protector).
        self.require_emcl = require_emcl

    # -------------------------------------------------------------- decoding

    def decode(self, data: bytes | bytearray | memoryview | str) -> TransportEnvelope:
        """Decode request bytes; raises IntentusError (use ``error_frame`` to answer it)."""
        return self.codec.decode(data, _INTENT)

    def error_frame(
        self,
        exc: IntentusError,
        *,
        data: bytes | bytearray | memoryview | str | None = None,
        request: TransportEnvelope | None = None,
    ) -> TransportEnvelope:
        """The reply to a request that failed before reaching an agent."""
        trace_id = request_id = None
        protocol = self.protocol
        if request is not None:
            protocol = request.protocol
            request_id = request.headers.get(h.REQUEST_ID)
            body = request.body
            trace_id = body.metadata.trace_id if isinstance(body, IntentEnvelope) else None
            trace_id = trace_id or request.headers.get(h.TRACE_ID)
        elif data is not None and not isinstance(exc, PayloadTooLarge):
            # Oversize input is never parsed, not even to find its trace id.
            trace_id, request_id, reference = _salvage(data)
            if reference:
                protocol = TransportProtocol.INTENTUSNET_1_0
        return response_frame(exc.to_response(trace_id=trace_id), protocol, request_id=request_id)

    # -------------------------------------------------------------- request/response

    async def handle_bytes(self, data: bytes | bytearray | memoryview | str) -> bytes:
        """One request in, one encoded reply out; never raises for bad input."""
        try:
            frame = self.codec.decode(data, _INTENT)
        except IntentusError as exc:
            return self.codec.encode(self.error_frame(exc, data=data), limit=False)
        return self.encode_reply(await self.handle_frame(frame), frame)

    def encode_reply(self, reply: TransportEnvelope, request: TransportEnvelope) -> bytes:
        """Encode a reply; one over the size limit is replaced by a PAYLOAD_TOO_LARGE error."""
        try:
            return self.codec.encode(reply)
        except PayloadTooLarge as exc:
            return self.codec.encode(self.error_frame(exc, request=request), limit=False)

    def open_request(self, frame: TransportEnvelope) -> tuple[TransportEnvelope, bool]:
        """Open an EMCL request, enforcing ``require_emcl``; returns (frame, was_sealed)."""
        if is_sealed(frame):
            if self.protector is None:
                raise EMCLFailure("EMCL is not configured on this endpoint",
                                  details={"reason": "not_configured"})
            return self.protector.open(frame), True
        if self.require_emcl:
            raise EMCLFailure("this endpoint accepts EMCL-sealed frames only",
                              details={"reason": "plaintext"})
        return frame, False

    def _seal_reply(
        self, reply: TransportEnvelope, request: TransportEnvelope | None
    ) -> TransportEnvelope:
        """Seal a reply to ``request`` (the sealed frame as received; None: it was plaintext)."""
        protector = self.protector
        if request is None or protector is None:
            return reply
        return protector.seal(reply, reply_to=request)

    async def handle_frame(self, frame: TransportEnvelope) -> TransportEnvelope:
        """Route a decoded frame and return the reply frame (sealed if the request was)."""
        if not self.require_emcl and not isinstance(frame.body, EMCLEnvelope):
            return await self._handle_plain(frame)  # open_request and _seal_reply: no-ops
        try:
            opened, sealed = self.open_request(frame)
        except IntentusError as exc:
            return self.error_frame(exc, request=frame)
        return self._seal_reply(await self._handle_plain(opened), frame if sealed else None)

    async def _handle_plain(self, frame: TransportEnvelope) -> TransportEnvelope:
        request_id = frame.headers.get(h.REQUEST_ID)
        try:
            version = negotiate(frame.protocol_negotiation, self.supported)
        except IntentusError as exc:
            return self.error_frame(exc, request=frame)
        body = frame.body
        if frame.message_type is _INTENT and isinstance(body, IntentEnvelope):
            response = await self.router.route_intent(body)
        elif frame.message_type is _EVENT and isinstance(body, Event):
            delivered = self.router.events.publish(body)
            response = AgentResponse.success(
                {"delivered": delivered}, agent=self.router.name, trace_id=body.trace_id
            )
        else:
            return self.error_frame(
                ProtocolError(
                    f"cannot handle a {frame.message_type.value!r} frame here",
                    details={"messageType": frame.message_type.value},
                ),
                request=frame,
            )
        return response_frame(response, frame.protocol, request_id=request_id, version=version)

    # -------------------------------------------------------------- streams

    async def handle_stream(
        self, frame: TransportEnvelope
    ) -> AsyncGenerator[TransportEnvelope, None]:
        """Reply frames for a streamed intent: chunk frames, then one final response."""
        received, sealed = frame, False
        try:
            frame, sealed = self.open_request(frame)
            version = negotiate(frame.protocol_negotiation, self.supported)
            body = frame.body
            if not isinstance(body, IntentEnvelope):
                raise ProtocolError("a stream must be requested with an intent frame")
        except IntentusError as exc:
            # Sealed like any reply once the request has been opened.
            yield self._seal_reply(self.error_frame(exc, request=frame),
                                   received if sealed else None)
            return
        request_id = frame.headers.get(h.REQUEST_ID)
        request = received if sealed else None
        async with aclosing(self.router.route_stream(body)) as items:
            async for item in items:
                reply = response_frame(item, frame.protocol, request_id=request_id, version=version)
                if isinstance(item, StreamChunk):
                    try:
                        dumps(item.payload)
                    except TypeError as exc:
                        # A chunk JSON cannot hold ends the stream with the error, here,
                        # so no transport sends more chunks after it.
                        yield self._seal_reply(
                            unencodable_reply(reply, exc, body.metadata.trace_id), request)
                        return
                yield self._seal_reply(reply, request)
