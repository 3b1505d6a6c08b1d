"""WebSocket transport (RFC-0007 §4.3): persistent multiplexed sessions, streams and events.

``open_client(url, **options)`` gives a ``WebSocketClient``; ``serve(router, url, ...)`` runs
a server under ``nursery.start``. See ``docs/transports/websocket.md`` for the wire format,
the options, and the delivery and backpressure rules.
"""

from .calls import WebSocketSubscription
from .client import ClientStats, WebSocketClient, open_client
from .server import ServerStats, WebSocketServer, serve
from .wire import Control

__all__ = [
    "ClientStats",
    "Control",
    "ServerStats",
    "WebSocketClient",
    "WebSocketServer",
    "WebSocketSubscription",
    "open_client",
    "serve",
]
