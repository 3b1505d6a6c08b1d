"""MXP: the encrypted reliable UDP transport (sans-IO core and its trio driver).

The trio-facing API (see docs/mxp-driver.md)::

    async with mxp_listen(("127.0.0.1", 0), server_config) as listener:
        async for conn in listener: ...
    async with mxp_connect(address, server_public_key) as conn:
        stream = await conn.open_stream()           # trio.abc.HalfCloseableStream
        await stream.send_all(b"hi"); await stream.send_eof(); await stream.receive_some()
        await conn.send_datagram(b"hi"); await conn.receive_datagram()
"""

from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.config import (
    Configuration,
    ServerConfiguration,
    allow_any,
    allow_keys,
)
from intentus_trio.mxp.driver import (
    ConnectionClosedError,
    DatagramTooLarge,
    DriverStats,
    HandshakeError,
    MxpConnection,
)
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.listener import MxpListener, mxp_listen, serve_mxp
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.mxp.stats import PathStats
from intentus_trio.mxp.stream import MxpStream, StreamResetError, StreamStoppedError

__all__ = [
    "Configuration",
    "ConnectionClosedError",
    "DatagramTooLarge",
    "DriverStats",
    "ErrorCode",
    "HandshakeError",
    "KeyPair",
    "MxpConnection",
    "MxpListener",
    "MxpStream",
    "PathStats",
    "ServerConfiguration",
    "StreamResetError",
    "StreamStoppedError",
    "allow_any",
    "allow_keys",
    "mxp_connect",
    "mxp_listen",
    "serve_mxp",
]
