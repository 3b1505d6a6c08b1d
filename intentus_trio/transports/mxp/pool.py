"""Client connections, shared by server (address, key): one each by default, reused by
every call and re-established on the next call after one is lost.

A connection lives in a task of the pool's nursery, inside the backend's connect context,
until it ends or the pool closes. Concurrent callers that find no connection share one
connection attempt; its failure is every waiter's failure (CONNECTION_FAILURE), and the
next call tries again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ...mxp.noise import KeyPair
from ...protocol.errors import ConnectionFailure, TransportTimeout
from .backend import Backend, MxpBackend, StreamConnection, closed_reason
from .endpoint import MxpEndpoint

log = logging.getLogger("intentus_trio.transports.mxp")

PeerKey = tuple[str, int, bytes]


@attrs.define
class PoolStats:
    attempts: int = 0
    connects: int = 0
    connect_failures: int = 0
    #: Connections that ended (lost, closed by the server, or idle).
    disconnects: int = 0


class Link:
    """One pooled connection and how many streams it carries now."""

    __slots__ = ("closed", "conn", "in_flight", "scope")

    def __init__(self, conn: StreamConnection) -> None:
        self.conn = conn
        self.in_flight = 0
        self.closed = False
        self.scope = trio.CancelScope()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.conn.is_closed

    async def open_stream(self, urgency: int) -> trio.abc.HalfCloseableStream:
        return await self.conn.open_stream(bidirectional=True, urgency=urgency)


class _Attempt:
    __slots__ = ("done", "failure", "link")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.link: Link | None = None
        self.failure: str | None = None


class MxpPool:
    """Connections to MXP servers for any number of transports (``pool=`` option).

    ``connections_per_peer`` connections are kept per (address, server key) once calls need
    them; calls go to the one carrying the fewest streams. ``static_key`` is this client's
    identity (default: a key generated for the pool). ``options`` go to the backend
    (``mxp_connect``'s options and ``Configuration`` fields such as ``idle_timeout``).
    """

    def __init__(
        self,
        *,
        static_key: KeyPair | None = None,
        connect_timeout: float = 10.0,
        connections_per_peer: int = 1,
        backend: Backend | None = None,
        **options: Any,
    ) -> None:
        if connections_per_peer < 1:
            raise ValueError("connections_per_peer must be >= 1")
        self.static_key = static_key if static_key is not None else KeyPair.generate()
        self.connect_timeout = connect_timeout
        self.connections_per_peer = connections_per_peer
        self.backend: Backend = backend if backend is not None else MxpBackend()
        self.options = options
        self.stats = PoolStats()
        self._links: dict[PeerKey, list[Link]] = {}
        self._attempts: dict[PeerKey, _Attempt] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MxpPool]:
        """Own the pool's connections inside the block (``async with pool.running()``)."""
        if self._nursery is not None or self._closed:
            raise RuntimeError("an MxpPool runs once")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._closed = True
                nursery.cancel_scope.cancel()

    async def __aenter__(self) -> MxpPool:
        self._cm = self.running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    def links(self, endpoint: MxpEndpoint) -> list[Link]:
        """The live connections to ``endpoint`` (for inspection)."""
        key = _peer(endpoint)
        return [link for link in self._links.get(key, ()) if link.usable]

    def close_connections(self, endpoint: MxpEndpoint) -> None:
        """Drop the connections to ``endpoint``; the next call connects afresh."""
        for link in self._links.get(_peer(endpoint), ()):
            link.conn.close()
            link.scope.cancel()

    async def link(self, endpoint: MxpEndpoint, deadline: float = math.inf) -> Link:
        """A connection to ``endpoint``: the least busy live one, or a new one.

        Raises ConnectionFailure (the attempt failed, or the pool is closed) or
        TransportTimeout (still connecting at ``deadline``)."""
        key = _peer(endpoint)
        while True:
            if self._closed or self._nursery is None:
                raise ConnectionFailure("the MXP connection pool is closed")
            live = [link for link in self._links.get(key, ()) if link.usable]
            attempt = self._attempts.get(key)
            if len(live) < self.connections_per_peer and attempt is None:
                attempt = self._attempts[key] = _Attempt()
                self._nursery.start_soon(self._run, endpoint, key, attempt)
            if live:
                return min(live, key=lambda link: link.in_flight)
            assert attempt is not None
            with trio.move_on_at(deadline):
                await attempt.done.wait()
            if not attempt.done.is_set():
                raise TransportTimeout(f"still connecting to {endpoint.url} at the deadline",
                                       details={"url": endpoint.url})
            if attempt.failure is not None:
                raise ConnectionFailure(
                    f"cannot connect to {endpoint.url}: {attempt.failure}",
                    details={"url": endpoint.url, "reason": attempt.failure})

    async def _run(self, endpoint: MxpEndpoint, key: PeerKey, attempt: _Attempt) -> None:
        self.stats.attempts += 1
        link: Link | None = None
        assert endpoint.key is not None
        try:
            async with self.backend.connect(
                endpoint.address, endpoint.key, static_key=self.static_key,
                connect_timeout=self.connect_timeout, options=self.options,
            ) as conn:
                link = Link(conn)
                self._links.setdefault(key, []).append(link)
                self.stats.connects += 1
                attempt.link = link
                self._finish(key, attempt)
                with link.scope:
                    await conn.wait_closed()
        except Exception as exc:
            if link is None:
                self.stats.connect_failures += 1
                attempt.failure = _explain(exc)
                log.debug("connecting to %s failed: %s", endpoint.url, attempt.failure)
        finally:
            self._finish(key, attempt)
            if link is not None:
                link.closed = True
                self.stats.disconnects += 1
                links = self._links.get(key, [])
                if link in links:
                    links.remove(link)
                if not links:
                    self._links.pop(key, None)

    def _finish(self, key: PeerKey, attempt: _Attempt) -> None:
        if self._attempts.get(key) is attempt:
            del self._attempts[key]
        if attempt.link is None and attempt.failure is None:
            attempt.failure = "the connection attempt was abandoned"
        attempt.done.set()


def _peer(endpoint: MxpEndpoint) -> PeerKey:
    if endpoint.key is None:
        raise ValueError("an MXP endpoint needs the server's public key")
    return endpoint.host, endpoint.port, endpoint.key


def _explain(exc: BaseException) -> str:
    from ...mxp import HandshakeError
    from ...mxp.events import ErrorCode

    if isinstance(exc, HandshakeError):
        if exc.error_code == ErrorCode.HANDSHAKE_TIMEOUT:
            return ("no valid handshake reply (the server is unreachable, or does not hold "
                    "the key in the URL)")
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return closed_reason(exc)
