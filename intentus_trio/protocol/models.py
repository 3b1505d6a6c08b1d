"""The IntentusNet wire model as frozen msgspec structs.

Python attribute names are snake_case; on the wire they are the camelCase JSON keys of the
IntentusNet protocol (``rename="camel"``). Sequences are tuples so an envelope can be shared
between tasks without copies; ``payload``/``details``/``metadata`` mappings are JSON objects
the caller must not mutate after handing them over.

Structs, not attrs classes, because every frame of every transport is built from and into
these objects: msgspec decodes a frame's JSON straight into them and encodes them back in C,
checking the limits in the annotations as it parses (see docs/architecture.md). Copy with a
change through ``msgspec.structs.replace``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeAlias

import msgspec

from .enums import (
    ErrorCode,
    MessageType,
    Priority,
    ResponseStatus,
    RoutingStrategy,
    TransportProtocol,
)
from .limits import (
    MAX_CIPHERTEXT_CHARS,
    MAX_HEADER_CHARS,
    MAX_HEADERS,
    MAX_LIST_ITEMS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
)

#: A decoded JSON object.
JsonObject: TypeAlias = dict[str, Any]

PROTOCOL_VERSION = "1.0"
#: An enum member looked up through its class costs ~0.1 µs on Python 3.11.
_SUCCESS = ResponseStatus.SUCCESS

#: Identifiers, names, versions and timestamps (checked when decoded, not when built).
Name: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Names: TypeAlias = Annotated[tuple[Name, ...], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
Headers: TypeAlias = Annotated[
    dict[Name, Annotated[str, msgspec.Meta(max_length=MAX_HEADER_CHARS)]],
    msgspec.Meta(max_length=MAX_HEADERS),
]


class _Model(msgspec.Struct, frozen=True, rename="camel", weakref=True):
    """Base of the wire models: immutable, camelCase on the wire, unknown keys ignored,
    weakly referable (EMCL remembers what it opened by the body object)."""


class IntentRef(_Model, frozen=True, cache_hash=True):
    """The intent asked for; its hash is kept, for the router's cache of who handles it."""

    name: Name
    version: Name = "1.0"


class IntentContext(_Model, frozen=True):
    source_agent: Name
    timestamp: Name
    priority: Priority = Priority.NORMAL
    tags: Names = ()


class IntentMetadata(_Model, frozen=True):
    request_id: Name
    source: Name
    created_at: Name
    trace_id: Name
    identity_chain: Names = ()


class RoutingOptions(_Model, frozen=True):
    strategy: RoutingStrategy = RoutingStrategy.DIRECT
    target_agent: Name | None = None
    fallback_agents: Names = ()


class RoutingMetadata(_Model, frozen=True):
    decision_path: Names = ()
    retries: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


#: Shared by every envelope that routes directly with no metadata (both are immutable).
DEFAULT_ROUTING = RoutingOptions()
DEFAULT_ROUTING_METADATA = RoutingMetadata()


class IntentEnvelope(_Model, frozen=True):
    """A request for an intent to be handled by some agent."""

    version: Name
    intent: IntentRef
    payload: JsonObject
    context: IntentContext
    metadata: IntentMetadata
    routing: RoutingOptions = DEFAULT_ROUTING
    routing_metadata: RoutingMetadata = DEFAULT_ROUTING_METADATA

    @property
    def trace_id(self) -> str:
        return self.metadata.trace_id


class ErrorInfo(_Model, frozen=True):
    code: ErrorCode
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]
    retryable: bool = False
    details: JsonObject = {}


class AgentResponse(_Model, frozen=True):
    """An agent's reply; ``metadata`` is free-form (``agent``, ``traceId``, ``timestamp``)."""

    version: Name
    status: ResponseStatus
    payload: JsonObject | None
    metadata: JsonObject = {}
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.status is _SUCCESS

    @property
    def trace_id(self) -> str | None:
        value = self.metadata.get("traceId")
        return value if isinstance(value, str) else None

    @classmethod
    def success(
        cls,
        payload: JsonObject | None,
        *,
        agent: str | None = None,
        trace_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResponse:
        return cls(PROTOCOL_VERSION, _SUCCESS, payload,
                   _response_metadata(agent, trace_id, metadata))

    @classmethod
    def failure(
        cls,
        error: ErrorInfo,
        *,
        agent: str | None = None,
        trace_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResponse:
        return cls(PROTOCOL_VERSION, ResponseStatus.ERROR, None,
                   _response_metadata(agent, trace_id, metadata), error)


def _response_metadata(
    agent: str | None, trace_id: str | None, extra: Mapping[str, Any] | None
) -> JsonObject:
    meta: JsonObject = dict(extra) if extra else {}
    if agent is not None:
        meta["agent"] = agent
    if trace_id is not None:
        meta["traceId"] = trace_id
    return meta


class Event(_Model, frozen=True, omit_defaults=True):
    """A published event, delivered to every subscriber of its ``event_type``."""

    event_type: Name
    payload: JsonObject
    event_id: Name
    source: Name
    timestamp: Name
    trace_id: Name | None = None


class StreamChunk(_Model, frozen=True):
    """One intermediate result of a streamed reply; the stream ends with an AgentResponse."""

    seq: int
    payload: JsonObject


class IdentityEntry(_Model, frozen=True):
    """One hop of an EMCL identity chain (signed by that hop's Ed25519 key)."""

    agent_id: Name
    public_key: Name
    timestamp: Name
    signature: Name


class EMCLEnvelope(_Model, frozen=True):
    """An EMCL-sealed body (RFC-0007 §6). Binary fields are standard base64 strings."""

    emcl_version: Name
    ciphertext: Annotated[str, msgspec.Meta(max_length=MAX_CIPHERTEXT_CHARS)]
    nonce: Name
    hmac: Name
    identity_chain: Annotated[
        tuple[IdentityEntry, ...], msgspec.Meta(max_length=MAX_LIST_ITEMS)
    ] = ()
    key_id: Name | None = None
    sender: Name | None = None
    recipient: Name | None = None
    timestamp: Name | None = None
    message_type: MessageType | None = None


class ProtocolNegotiation(_Model, frozen=True):
    min_version: Name
    max_version: Name


Body: TypeAlias = IntentEnvelope | AgentResponse | Event | EMCLEnvelope

class TransportEnvelope(_Model, frozen=True):
    """The frame every network transport carries (RFC-0007 §3)."""

    protocol: TransportProtocol
    message_type: MessageType
    body: Body
    headers: Mapping[str, str] = {}
    protocol_negotiation: ProtocolNegotiation | None = None
