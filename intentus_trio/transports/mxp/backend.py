"""What the transport needs from a connection, and where connections come from.

The transport speaks to connections through ``StreamConnection``: open or accept reliable
byte streams (``trio.abc.HalfCloseableStream``, resettable when the carrier allows), learn
when the connection ended, close it. ``MxpConnection`` is one; ``TcpStreamBackend``
(``tcpstreams.py``) provides the same over plain TCP for tests. A ``Backend`` opens client
connections and listens for them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from ...mxp import (
    Configuration,
    ConnectionClosedError,
    MxpConnection,
    ServerConfiguration,
    mxp_connect,
    mxp_listen,
)
from ...mxp.noise import KeyPair

Address = tuple[str, int]
ClientPolicy = Callable[[bytes, Address], bool]

#: Errors that mean "this stream (or its connection) is gone".
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class StreamConnection(Protocol):
    async def open_stream(
        self, *, bidirectional: bool = True, urgency: int = 3
    ) -> trio.abc.HalfCloseableStream: ...

    async def accept_stream(self) -> trio.abc.HalfCloseableStream: ...

    @property
    def is_closed(self) -> bool: ...

    async def wait_closed(self) -> object: ...

    def close(self, error_code: int = 0, reason: str = "") -> None: ...


class StreamListener(Protocol):
    @property
    def local_address(self) -> Address: ...

    async def accept(self) -> StreamConnection: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Opens connections to servers and listens for clients."""

    def connect(
        self, address: Address, server_key: bytes, *, static_key: KeyPair | None,
        connect_timeout: float, options: dict[str, Any],
    ) -> AbstractAsyncContextManager[StreamConnection]: ...

    def listen(
        self, bind: Address, static_key: KeyPair, client_policy: ClientPolicy,
        options: dict[str, Any],
    ) -> AbstractAsyncContextManager[StreamListener]: ...


def streams_available() -> bool:
    """Whether this build's MXP connections carry reliable streams."""
    return hasattr(MxpConnection, "open_stream") and hasattr(MxpConnection, "accept_stream")


class StreamsUnavailable(RuntimeError):
    """The MXP driver of this build has no reliable streams yet."""


def _require_streams() -> None:
    if not streams_available():
        raise StreamsUnavailable("this build's MXP connections have no reliable streams")


class _MxpListener:
    def __init__(self, listener: Any) -> None:
        self._listener = listener

    @property
    def local_address(self) -> Address:
        address: Address = self._listener.local_address
        return address

    async def accept(self) -> StreamConnection:
        conn: StreamConnection = await self._listener.accept()
        return conn

    def close(self) -> None:
        self._listener.close()


class MxpBackend:
    """Connections over MXP (encrypted, authenticated, reliable streams over UDP).

    ``options`` go to ``mxp_connect`` / ``mxp_listen`` (e.g. ``idle_timeout`` is a
    ``Configuration`` field and is applied there; the rest are driver options)."""

    @asynccontextmanager
    async def connect(
        self, address: Address, server_key: bytes, *, static_key: KeyPair | None,
        connect_timeout: float, options: dict[str, Any],
    ) -> Any:
        _require_streams()
        config_fields, driver = _split(options)
        key = static_key if static_key is not None else KeyPair.generate()
        config = Configuration(key, **config_fields)
        async with mxp_connect(address, server_key, config, connect_timeout=connect_timeout,
                               **driver) as conn:
            yield conn

    @asynccontextmanager
    async def listen(
        self, bind: Address, static_key: KeyPair, client_policy: ClientPolicy,
        options: dict[str, Any],
    ) -> Any:
        _require_streams()
        config_fields, driver = _split(options)
        config = ServerConfiguration(Configuration(static_key, **config_fields), client_policy)
        async with mxp_listen(bind, config, **driver) as listener:
            yield _MxpListener(listener)


_CONFIG_FIELDS = frozenset(a.name for a in attrs.fields(Configuration))


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {k: v for k, v in options.items() if k in _CONFIG_FIELDS and k != "static_key"}
    driver = {k: v for k, v in options.items() if k not in _CONFIG_FIELDS}
    return config, driver


def closed_reason(exc: BaseException) -> str:
    """A short text for why a connection or stream failed."""
    if isinstance(exc, ConnectionClosedError):
        return str(exc)
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    shown = cause or exc
    text = str(shown)
    return f"{type(shown).__name__}: {text}" if text else type(shown).__name__
