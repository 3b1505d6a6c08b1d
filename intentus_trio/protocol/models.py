"""The IntentusNet wire model as frozen attrs classes.

Python attribute names are snake_case; the codec maps them to the camelCase JSON keys of
the IntentusNet protocol. Sequences are tuples so an envelope can be shared between tasks
without copies; ``payload``/``details``/``metadata`` mappings are JSON objects the caller
must not mutate after handing them over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from attrs import field, frozen

from .enums import (
    ErrorCode,
    MessageType,
    Priority,
    ResponseStatus,
    RoutingStrategy,
    TransportProtocol,
)

#: A decoded JSON object.
JsonObject: TypeAlias = dict[str, Any]

PROTOCOL_VERSION = "1.0"


@frozen
class IntentRef:
    name: str
    version: str = "1.0"


@frozen
class IntentContext:
    source_agent: str
    timestamp: str
    priority: Priority = Priority.NORMAL
    tags: tuple[str, ...] = ()


@frozen
class IntentMetadata:
    request_id: str
    source: str
    created_at: str
    trace_id: str
    identity_chain: tuple[str, ...] = ()


@frozen
class RoutingOptions:
    strategy: RoutingStrategy = RoutingStrategy.DIRECT
    target_agent: str | None = None
    fallback_agents: tuple[str, ...] = ()


@frozen
class RoutingMetadata:
    decision_path: tuple[str, ...] = ()
    retries: int = 0


#: Shared by every envelope that routes directly with no metadata (both are immutable).
DEFAULT_ROUTING = RoutingOptions()
DEFAULT_ROUTING_METADATA = RoutingMetadata()


@frozen
class IntentEnvelope:
    """A request for an intent to be handled by some agent."""

    version: str
    intent: IntentRef
    payload: JsonObject
    context: IntentContext
    metadata: IntentMetadata
    routing: RoutingOptions = DEFAULT_ROUTING
    routing_metadata: RoutingMetadata = DEFAULT_ROUTING_METADATA

    @property
    def trace_id(self) -> str:
        return self.metadata.trace_id


@frozen
class ErrorInfo:
    code: ErrorCode
    message: str
    retryable: bool = False
    details: JsonObject = field(factory=dict)


@frozen
class AgentResponse:
    """An agent's reply; ``metadata`` is free-form (``agent``, ``traceId``, ``timestamp``)."""

    version: str
    status: ResponseStatus
    payload: JsonObject | None
    metadata: JsonObject = field(factory=dict)
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.status is ResponseStatus.SUCCESS

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
        return cls(PROTOCOL_VERSION, ResponseStatus.SUCCESS, payload,
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


@frozen
class Event:
    """A published event, delivered to every subscriber of its ``event_type``."""

    event_type: str
    payload: JsonObject
    event_id: str
    source: str
    timestamp: str
    trace_id: str | None = None


@frozen
class StreamChunk:
    """One intermediate result of a streamed reply; the stream ends with an AgentResponse."""

    seq: int
    payload: JsonObject


@frozen
class IdentityEntry:
    """One hop of an EMCL identity chain (signed by that hop's Ed25519 key)."""

    agent_id: str
    public_key: str
    timestamp: str
    signature: str


@frozen
class EMCLEnvelope:
    """An EMCL-sealed body (RFC-0007 §6). Binary fields are standard base64 strings."""

    emcl_version: str
    ciphertext: str
    nonce: str
    hmac: str
    identity_chain: tuple[IdentityEntry, ...] = ()
    key_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    timestamp: str | None = None
    message_type: MessageType | None = None


@frozen
class ProtocolNegotiation:
    min_version: str
    max_version: str


Body: TypeAlias = IntentEnvelope | AgentResponse | Event | EMCLEnvelope

_EMPTY_HEADERS: Mapping[str, str] = {}


@frozen
class TransportEnvelope:
    """The frame every network transport carries (RFC-0007 §3)."""

    protocol: TransportProtocol
    message_type: MessageType
    body: Body
    headers: Mapping[str, str] = _EMPTY_HEADERS
    protocol_negotiation: ProtocolNegotiation | None = None
