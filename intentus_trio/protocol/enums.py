"""String-valued enums of the IntentusNet wire protocol.

Every enum is a ``StrEnum`` so a member *is* its wire string: it serialises as-is
and compares equal to the JSON text it came from.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class RoutingStrategy(StrEnum):
    DIRECT = "direct"
    FALLBACK = "fallback"
    BROADCAST = "broadcast"
    PARALLEL = "parallel"


class MessageType(StrEnum):
    """What a TransportEnvelope's body holds."""

    INTENT = "intent"
    RESPONSE = "response"
    EVENT = "event"
    #: An EMCL-sealed intent, as sent by IntentusNet reference clients.
    EMCL = "emcl"


class ResponseStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class ErrorCode(StrEnum):
    """Error codes of an AgentResponse (IntentusNet protocol)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    AGENT_ERROR = "AGENT_ERROR"
    ROUTING_ERROR = "ROUTING_ERROR"
    CAPABILITY_NOT_FOUND = "CAPABILITY_NOT_FOUND"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"
    AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    TRANSPORT_ERROR = "TRANSPORT_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    RATE_LIMIT = "RATE_LIMIT"
    INTERNAL_AGENT_ERROR = "INTERNAL_AGENT_ERROR"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    WORKFLOW_ABORTED = "WORKFLOW_ABORTED"
    EMCL_FAILURE = "EMCL_FAILURE"


class TransportCode(StrEnum):
    """``error.details.transportCode`` values (RFC-0007 §8, plus negotiation failures)."""

    CONNECTION_FAILURE = "CONNECTION_FAILURE"
    TIMEOUT = "TIMEOUT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNSUPPORTED_MESSAGE_TYPE = "UNSUPPORTED_MESSAGE_TYPE"


class TransportProtocol(StrEnum):
    """The ``protocol`` field: which carrier a frame travelled on."""

    LOCAL = "local"
    HTTP = "http"
    ZEROMQ = "zeromq"
    WEBSOCKET = "websocket"
    MCP = "mcp"
    MXP = "mxp"
    #: The value IntentusNet reference clients send; implies protocol version 1.0.
    INTENTUSNET_1_0 = "INTENTUSNET/1.0"
