"""MXP transport: intents, streams and events over MXP's encrypted, multiplexed streams.

``open_client("mxp://host:port?key=<server public key>")`` gives an ``MxpTransport``;
``serve(router, "mxp://127.0.0.1:0", ...)`` runs a server under ``nursery.start`` and reports
its URL, key included. See ``docs/transports/mxp.md``.
"""

from .backend import Backend, MxpBackend, StreamConnection, StreamsUnavailable, streams_available
from .client import MxpSubscription, MxpTransport, open_client
from .endpoint import DEFAULT_PORT, MxpEndpoint, format_key
from .pool import MxpPool, PoolStats
from .server import MxpServer, ServerStats, serve
from .tcpstreams import TcpStreamBackend

__all__ = [
    "DEFAULT_PORT",
    "Backend",
    "MxpBackend",
    "MxpEndpoint",
    "MxpPool",
    "MxpServer",
    "MxpSubscription",
    "MxpTransport",
    "PoolStats",
    "ServerStats",
    "StreamConnection",
    "StreamsUnavailable",
    "TcpStreamBackend",
    "format_key",
    "open_client",
    "serve",
    "streams_available",
]
