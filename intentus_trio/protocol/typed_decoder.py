"""The codec's fast path: frames parsed and validated in one pass by msgspec, in C.

The shapes below restate the codec's rules (types, required fields, defaults, enum values,
string and list limits) as msgspec structs, so parsing a frame and checking it cost about as
much as parsing it alone. They are private: decoded values are copied into the public attrs
models at once. Anything the structs refuse, including every liberal spelling the Python
decoder accepts, returns ``None`` and the caller falls back to ``codec.frame_from_json``, which
decides and names the exact error. The fast path therefore never accepts a frame the Python
decoder would refuse, and builds the same objects (a differential test checks both).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from ._fastnew import (
    intent_ref,
    negotiation,
    new_context,
    new_frame,
    new_intent,
    new_metadata,
    new_response,
    routing_metadata,
    routing_options,
)
from .enums import ErrorCode, MessageType, Priority, ResponseStatus, RoutingStrategy
from .enums import TransportProtocol as _Protocol
from .headers import EMCL as EMCL_HEADER
from .limits import (
    MAX_CIPHERTEXT_CHARS,
    MAX_HEADER_CHARS,
    MAX_HEADERS,
    MAX_LIST_ITEMS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
)
from .models import (
    DEFAULT_ROUTING,
    DEFAULT_ROUTING_METADATA,
    AgentResponse,
    Body,
    EMCLEnvelope,
    ErrorInfo,
    Event,
    IdentityEntry,
    IntentEnvelope,
    TransportEnvelope,
)

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Names = Annotated[tuple[Name, ...], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
Headers = Annotated[
    dict[Name, Annotated[str, msgspec.Meta(max_length=MAX_HEADER_CHARS)]],
    msgspec.Meta(max_length=MAX_HEADERS),
]


class _Struct(msgspec.Struct, rename="camel", gc=False):
    """Base of the private shapes: camelCase keys, unknown keys ignored, no GC tracking."""


class _Ref(_Struct):
    name: Name
    version: Name = "1.0"


class _Context(_Struct):
    source_agent: Name
    timestamp: Name
    priority: Priority = Priority.NORMAL
    tags: Names = ()


class _Metadata(_Struct):
    request_id: Name
    source: Name
    created_at: Name
    trace_id: Name
    identity_chain: Names = ()


class _Routing(_Struct):
    strategy: RoutingStrategy = RoutingStrategy.DIRECT
    target_agent: Name | None = None
    fallback_agents: Names = ()


class _RoutingMetadata(_Struct):
    decision_path: Names = ()
    retries: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


class _Intent(_Struct):
    version: Name
    intent: _Ref
    payload: dict[str, Any]
    context: _Context
    metadata: _Metadata
    routing: _Routing | None = None
    routing_metadata: _RoutingMetadata | None = None


class _Error(_Struct):
    code: ErrorCode
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]
    retryable: bool = False
    details: dict[str, Any] = {}


class _Response(_Struct):
    version: Name
    status: ResponseStatus
    payload: dict[str, Any] | None = None
    metadata: dict[str, Any] = {}
    error: _Error | None = None


class _Event(_Struct):
    event_type: Name
    payload: dict[str, Any]
    event_id: Name
    source: Name
    timestamp: Name
    trace_id: Name | None = None


class _Entry(_Struct):
    agent_id: Name
    public_key: Name
    timestamp: Name
    signature: Name


class _Emcl(_Struct):
    emcl_version: Name
    ciphertext: Annotated[str, msgspec.Meta(max_length=MAX_CIPHERTEXT_CHARS)]
    nonce: Name
    hmac: Name
    identity_chain: Annotated[tuple[_Entry, ...], msgspec.Meta(max_length=MAX_LIST_ITEMS)] = ()
    key_id: Name | None = None
    sender: Name | None = None
    recipient: Name | None = None
    timestamp: Name | None = None
    message_type: MessageType | None = None


class _Negotiation(_Struct):
    min_version: Name
    max_version: Name


class _Frame(_Struct):
    protocol: _Protocol
    message_type: MessageType
    body: msgspec.Raw
    headers: Headers | None = None
    protocol_negotiation: _Negotiation | None = None


_frame = msgspec.json.Decoder(_Frame).decode
_intent = msgspec.json.Decoder(_Intent).decode
_response = msgspec.json.Decoder(_Response).decode
_event = msgspec.json.Decoder(_Event).decode
_emcl = msgspec.json.Decoder(_Emcl).decode

_INTENT: Final = MessageType.INTENT
_RESPONSE: Final = MessageType.RESPONSE
_EVENT: Final = MessageType.EVENT
#: Every exception msgspec raises for bad input (invalid UTF-8 surfaces as ValueError).
_INPUT_ERRORS: Final = (msgspec.MsgspecError, ValueError, RecursionError)


def _intent_body(raw: msgspec.Raw) -> IntentEnvelope:
    s = _intent(raw)
    ctx, meta, routing, rmeta = s.context, s.metadata, s.routing, s.routing_metadata
    options = DEFAULT_ROUTING if routing is None else routing_options(
        routing.strategy, routing.target_agent, routing.fallback_agents)
    routing_meta = DEFAULT_ROUTING_METADATA if rmeta is None else routing_metadata(
        rmeta.decision_path, rmeta.retries)
    result: IntentEnvelope = new_intent(
        s.version,
        intent_ref(s.intent.name, s.intent.version),
        s.payload,
        new_context(ctx.source_agent, ctx.timestamp, ctx.priority, ctx.tags),
        new_metadata(meta.request_id, meta.source, meta.created_at, meta.trace_id,
                   meta.identity_chain),
        options,
        routing_meta,
    )
    return result


def _response_body(raw: msgspec.Raw) -> AgentResponse:
    s = _response(raw)
    e = s.error
    error = None if e is None else ErrorInfo(e.code, e.message, e.retryable, e.details)
    result: AgentResponse = new_response(s.version, s.status, s.payload, s.metadata, error)
    return result


def _event_body(raw: msgspec.Raw) -> Event:
    s = _event(raw)
    return Event(s.event_type, s.payload, s.event_id, s.source, s.timestamp, s.trace_id)


def _emcl_body(raw: msgspec.Raw) -> EMCLEnvelope:
    s = _emcl(raw)
    chain = tuple(IdentityEntry(e.agent_id, e.public_key, e.timestamp, e.signature)
                  for e in s.identity_chain)
    return EMCLEnvelope(s.emcl_version, s.ciphertext, s.nonce, s.hmac, chain, s.key_id,
                        s.sender, s.recipient, s.timestamp, s.message_type)


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
            body = _emcl_body(f.body)
        elif mtype is _INTENT:
            body = _intent_body(f.body)
        elif mtype is _RESPONSE:
            body = _response_body(f.body)
        elif mtype is _EVENT:
            body = _event_body(f.body)
        else:  # pragma: no cover - every MessageType is handled above
            return None
        neg = f.protocol_negotiation
    except _INPUT_ERRORS:
        return None
    negotiated = None if neg is None else negotiation(neg.min_version, neg.max_version)
    frame: TransportEnvelope = new_frame(f.protocol, mtype, body, headers, negotiated)
    return frame
