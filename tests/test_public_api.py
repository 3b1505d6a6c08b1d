"""The public API is what ``intentus_trio.__all__`` says, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import intentus_trio

PINNED = {
    "AgentError", "AgentResponse", "AgentTimeout", "AgentUnavailable", "CapabilityNotFound",
    "ConnectionFailure", "DEFAULT_MAX_FRAME_BYTES", "EMCLEnvelope", "EMCLFailure", "ErrorCode",
    "ErrorInfo", "Event", "EventBus", "FrameCodec", "IdentityEntry", "InProcessTransport",
    "IntentContext", "IntentEnvelope", "IntentMetadata", "IntentPattern", "IntentRef",
    "IntentusError", "MalformedMessage", "MessageType", "PayloadTooLarge", "Priority",
    "ProtocolError", "ProtocolNegotiation", "Registration", "RemoteAgent", "RemoteError",
    "ResponseStatus", "Router", "RoutingError", "RoutingMetadata", "RoutingOptions",
    "RoutingStrategy", "SUPPORTED_VERSIONS", "StreamChunk", "StreamItem", "Subscription",
    "Transport", "TransportCode", "TransportEnvelope", "TransportError", "TransportProtocol",
    "TransportTimeout", "UnsupportedMessageType", "UnsupportedVersion", "ValidationError",
    "__version__", "current_trace_id", "negotiate", "new_event", "new_id", "new_intent",
    "raise_for_error", "register_remote", "utc_now",
}


def test_all_is_pinned() -> None:
    assert set(intentus_trio.__all__) >= PINNED
    for name in intentus_trio.__all__:
        assert hasattr(intentus_trio, name), name


def test_core_import_pulls_no_optional_dependency() -> None:
    code = (
        "import sys, intentus_trio, intentus_trio.testing;"
        "bad = [m for m in ('httpx', 'hypercorn', 'trio_websocket', 'zmq', 'mcp', 'xxhash')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
