"""The codec's fast path: frames parsed and validated in one pass by msgspec, in C.

The wire models are msgspec structs whose annotations carry the codec's rules (types,
required fields, defaults, enum values, string and list limits), so a frame's body is parsed
and checked straight into the public objects. The outer frame goes through a private struct
that keeps the body raw until its message type is known. Anything msgspec refuses,
including every liberal spelling the Python decoder accepts (a ``null`` routing block, a
response without ``payload``), returns ``None`` and the caller falls back to
``codec.frame_from_json``, which decides and names the exact error. The fast path therefore
never accepts a frame the Python decoder would refuse, and builds equal objects (a
differential test checks both).
"""

from __future__ import annotations

from typing import Final

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


class _Negotiation(msgspec.Struct, rename="camel", gc=False):
    min_version: Name
    max_version: Name


class _Frame(msgspec.Struct, rename="camel", gc=False):
    protocol: _Protocol
    message_type: MessageType
    body: msgspec.Raw
    headers: Headers | None = None
    protocol_negotiation: _Negotiation | None = None


_frame = msgspec.json.Decoder(_Frame).decode
_intent = msgspec.json.Decoder(IntentEnvelope).decode
_response = msgspec.json.Decoder(AgentResponse).decode
_event = msgspec.json.Decoder(Event).decode
_emcl = msgspec.json.Decoder(EMCLEnvelope).decode

_INTENT: Final = MessageType.INTENT
_RESPONSE: Final = MessageType.RESPONSE
_EVENT: Final = MessageType.EVENT
#: Every exception msgspec raises for bad input (invalid UTF-8 surfaces as ValueError).
_INPUT_ERRORS: Final = (msgspec.MsgspecError, ValueError, RecursionError)


def decode_frame(data: bytes | bytearray | memoryview | str) -> TransportEnvelope | None:
    """The frame in ``data``, or None when the Python decoder must decide."""
    try:
        # msgspec skips unknown fields without checking their UTF-8: check it here first.
        if isinstance(data, memoryview):
            data = data.tobytes()
        if not isinstance(data, str) and not data.isascii():
            data.decode()
        f = _frame(data)
        headers = f.headers
        if headers is None:
            headers = {}
        mtype = f.message_type
        body: Body
        if EMCL_HEADER in headers or mtype is MessageType.EMCL:
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
    frame: TransportEnvelope = new_frame(f.protocol, mtype, body, headers, negotiated)
    return frame
