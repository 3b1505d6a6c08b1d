"""The codec's fast path: frames parsed and validated in one pass by msgspec, in C.

The wire models are msgspec structs whose annotations carry the codec's rules (types,
required fields, defaults, enum values, string and list limits), so a frame's body is parsed
and checked straight into the public objects. The outer frame goes through a private struct
that keeps the body raw until its message type is known, except for the type the caller
expects (intents on a server, responses on a client), which is parsed whole. Anything
msgspec refuses, including every liberal spelling the Python decoder accepts (a ``null``
routing block, a response without ``payload``), returns ``None`` and the caller falls back to
``codec.frame_from_json``, which decides and names the exact error. The fast path therefore
never accepts a frame the Python decoder would refuse, and builds equal objects (a
differential test checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

import msgspec

from ._fastnew import negotiation, new_frame
from .enums import MessageType
from .enums import TransportProtocol as _Protocol
from .headers import EMCL as EMCL_HEADER
from .models import (
    AgentResponse,
    Body,
    EMCLEnvelope,
    Event,
    Headers,
    IntentEnvelope,
    Name,
    TransportEnvelope,
)

B = TypeVar("B")
#: The bodies parsed together with their frame (the types ``expect`` serves).
W = TypeVar("W", IntentEnvelope, AgentResponse)


class _Negotiation(msgspec.Struct, rename="camel", gc=False):
    min_version: Name
    max_version: Name


class _Frame(msgspec.Struct, Generic[B], rename="camel", gc=False):
    """The outer frame; ``body`` raw (type not known yet) or one expected body type."""

    protocol: _Protocol
    message_type: MessageType
    body: B
    headers: Headers | None = None
    protocol_negotiation: _Negotiation | None = None


_frame = msgspec.json.Decoder(_Frame[msgspec.Raw]).decode
_intent_frame = msgspec.json.Decoder(_Frame[IntentEnvelope]).decode
_response_frame = msgspec.json.Decoder(_Frame[AgentResponse]).decode
_intent = msgspec.json.Decoder(IntentEnvelope).decode
_response = msgspec.json.Decoder(AgentResponse).decode
_event = msgspec.json.Decoder(Event).decode
_emcl = msgspec.json.Decoder(EMCLEnvelope).decode

_INTENT: Final = MessageType.INTENT
_RESPONSE: Final = MessageType.RESPONSE
_EVENT: Final = MessageType.EVENT
#: Every exception msgspec raises for bad input (invalid UTF-8 surfaces as ValueError).
_INPUT_ERRORS: Final = (msgspec.MsgspecError, ValueError, RecursionError)
#: The message types ``expect`` serves, as this package writes them: a frame without its
#: mark (an event among responses) goes straight to the general path, not through a
#: failed attempt. A mark elsewhere (inside a payload) only costs the attempt.
_INTENT_MARK: Final = '"messageType":"intent"'
_RESPONSE_MARK: Final = '"messageType":"response"'
_INTENT_MARK_BYTES: Final = _INTENT_MARK.encode()
_RESPONSE_MARK_BYTES: Final = _RESPONSE_MARK.encode()


def _try(
    decode: Callable[[bytes | bytearray | str], _Frame[W]],
    data: bytes | bytearray | str,
    expect: MessageType,
) -> _Frame[W] | None:
    """The plaintext frame of type ``expect`` parsed whole, or None (the general path
    decides)."""
    try:
        f = decode(data)
    except _INPUT_ERRORS:
        return None
    if f.message_type is not expect or (f.headers is not None and EMCL_HEADER in f.headers):
        return None
    return f


def decode_frame(
    data: bytes | bytearray | memoryview | str, expect: MessageType | None = None
) -> TransportEnvelope | None:
    """The frame in ``data``, or None when the Python decoder must decide.

    ``expect`` names the message type the caller mostly receives (intents on a server,
    responses on a client): a plaintext frame of that type is parsed in one pass. The
    general path skips the body to learn its type and then parses it, a second pass over
    the payload; it serves every other frame.
    """
    try:
        # msgspec skips unknown fields without checking their UTF-8: check it here first.
        if isinstance(data, memoryview):
            data = data.tobytes()
        if not isinstance(data, str) and not data.isascii():
            data.decode()
        body: Body
        whole: _Frame[IntentEnvelope] | _Frame[AgentResponse] | None = None
        if expect is _INTENT or expect is _RESPONSE:
            intent = expect is _INTENT
            if isinstance(data, str):
                marked = (_INTENT_MARK if intent else _RESPONSE_MARK) in data
            else:
                marked = data.find(_INTENT_MARK_BYTES if intent else _RESPONSE_MARK_BYTES) >= 0
            if marked:
                whole = (_try(_intent_frame, data, expect) if intent
                         else _try(_response_frame, data, expect))
        if whole is not None:
            f: _Frame[IntentEnvelope] | _Frame[AgentResponse] | _Frame[msgspec.Raw] = whole
            headers = whole.headers
            body = whole.body
            mtype = whole.message_type
        else:
            f = _frame(data)
            headers = f.headers
            mtype = f.message_type
            if (headers is not None and EMCL_HEADER in headers) or mtype is MessageType.EMCL:
                body = _emcl(f.body)
            elif mtype is _INTENT:
                body = _intent(f.body)
            elif mtype is _RESPONSE:
                body = _response(f.body)
            elif mtype is _EVENT:
                body = _event(f.body)
            else:  # pragma: no cover - every MessageType is handled above
                return None
        neg = f.protocol_negotiation
    except _INPUT_ERRORS:
        return None
    negotiated = None if neg is None else negotiation(neg.min_version, neg.max_version)
    frame: TransportEnvelope = new_frame(f.protocol, mtype, body,
                                         {} if headers is None else headers, negotiated)
    return frame
