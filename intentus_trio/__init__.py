"""intentus_trio: a trio-native transport fabric for AI agents.

The public API lives here; submodules are implementation detail unless documented.
"""

from .protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from .protocol.enums import (
    ErrorCode,
    MessageType,
    Priority,
    ResponseStatus,
    RoutingStrategy,
    TransportCode,
    TransportProtocol,
)
from .protocol.errors import (
    AgentError,
    AgentTimeout,
    AgentUnavailable,
    CapabilityNotFound,
    ConnectionFailure,
    EMCLFailure,
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    RemoteError,
    RoutingError,
    TransportError,
    TransportTimeout,
    Unauthorized,
    UnsupportedMessageType,
    UnsupportedVersion,
    ValidationError,
    raise_for_error,
)
from .protocol.factory import current_trace_id, new_event, new_id, new_intent, utc_now
from .protocol.models import (
    AgentResponse,
    EMCLEnvelope,
    ErrorInfo,
    Event,
    IdentityEntry,
    IntentContext,
    IntentEnvelope,
    IntentMetadata,
    IntentRef,
    ProtocolNegotiation,
    RoutingMetadata,
    RoutingOptions,
    StreamChunk,
    TransportEnvelope,
)
from .protocol.versions import SUPPORTED_VERSIONS, negotiate
from .routing.events import EventBus, Subscription
from .routing.registry import IntentPattern, Registration
from .routing.remote import RemoteAgent, register_remote
from .routing.router import Router
from .transports.base import StreamItem, Transport
from .transports.inprocess import InProcessTransport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "SUPPORTED_VERSIONS",
    "AgentError",
    "AgentResponse",
    "AgentTimeout",
    "AgentUnavailable",
    "CapabilityNotFound",
    "ConnectionFailure",
    "EMCLEnvelope",
    "EMCLFailure",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "EventBus",
    "FrameCodec",
    "IdentityEntry",
    "InProcessTransport",
    "IntentContext",
    "IntentEnvelope",
    "IntentMetadata",
    "IntentPattern",
    "IntentRef",
    "IntentusError",
    "MalformedMessage",
    "MessageType",
    "PayloadTooLarge",
    "Priority",
    "ProtocolError",
    "ProtocolNegotiation",
    "RateLimited",
    "Registration",
    "RemoteAgent",
    "RemoteError",
    "ResponseStatus",
    "Router",
    "RoutingError",
    "RoutingMetadata",
    "RoutingOptions",
    "RoutingStrategy",
    "StreamChunk",
    "StreamItem",
    "Subscription",
    "Transport",
    "TransportCode",
    "TransportEnvelope",
    "TransportError",
    "TransportProtocol",
    "TransportTimeout",
    "Unauthorized",
    "UnsupportedMessageType",
    "UnsupportedVersion",
    "ValidationError",
    "__version__",
    "current_trace_id",
    "negotiate",
    "new_event",
    "new_id",
    "new_intent",
    "raise_for_error",
    "register_remote",
    "utc_now",
]
