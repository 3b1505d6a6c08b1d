"""Legacy MXP/UDP: plaintext MXP messages, one per datagram, to talk to existing MXP agents.

Opt-in and deliberately not registered under a URL scheme: the mode has no encryption and no
authentication (anyone who can send a datagram can call your agents and spoof replies), so it
belongs on trusted networks only. See ``docs/transports/mxp-legacy.md``.

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_legacy, router, "127.0.0.1", 0)
        async with open_legacy_client(host, port) as client:
            response = await client.send_intent(new_intent("echo", {"text": "hi"}))
"""

from .client import (
    DEFAULT_TIMEOUT,
    LegacyClientStats,
    LegacyMxpClient,
    LegacySubscriptionsUnsupported,
    open_legacy_client,
)
from .payloads import MAX_LEGACY_PAYLOAD, PayloadStyle
from .server import DEFAULT_EVENT_TYPE, LegacyServerStats, serve_legacy
from .trace import TRACE_IDS, TraceIdMap, trace_text, wire_trace

__all__ = [
    "DEFAULT_EVENT_TYPE",
    "DEFAULT_TIMEOUT",
    "MAX_LEGACY_PAYLOAD",
    "TRACE_IDS",
    "LegacyClientStats",
    "LegacyMxpClient",
    "LegacyServerStats",
    "LegacySubscriptionsUnsupported",
    "PayloadStyle",
    "TraceIdMap",
    "open_legacy_client",
    "serve_legacy",
    "trace_text",
    "wire_trace",
]
