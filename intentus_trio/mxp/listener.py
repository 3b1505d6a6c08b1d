"""An MXP server on one carrier: ``mxp_listen`` (accept loop) and ``serve_mxp`` (handlers).

One receive loop per carrier drains the socket after each wakeup and routes every datagram
by connection id to its connection's input channel with ``send_nowait``. Datagrams that belong
to no connection and could be an INITIAL go to one admission task over a bounded channel
(full: dropped and counted), so a flood of handshakes, which cost Diffie-Hellman work, never
delays the datagrams of established connections in the receive loop. Everything else no
connection claims is refused by the sans-IO ``ServerEndpoint`` at once, and counted there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import trio

from intentus_trio._groups import unwrap_single
from intentus_trio.mxp.carrier import Address, DatagramCarrier, open_udp_carrier
from intentus_trio.mxp.config import ServerConfiguration
from intentus_trio.mxp.connection import Connection
from intentus_trio.mxp.driver import (
    DEFAULT_INBOX_SIZE,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    MAX_DRAIN,
    DriverStats,
    MxpConnection,
    application_turn,
    send_all,
)
from intentus_trio.mxp.endpoint import ServerEndpoint
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.packet import LONG_FORM, MIN_INITIAL_DATAGRAM
from intentus_trio.mxp.stats import Stats
from intentus_trio.transports.lifetime import shielded_nursery

__all__ = ["MxpListener", "mxp_listen", "serve_mxp"]

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 64
DEFAULT_ADMISSION_QUEUE_SIZE = 64

Handler = Callable[[MxpConnection], Awaitable[object]]


class MxpListener:
    """Accepts MXP connections on one carrier. Use ``mxp_listen`` to get one.

    Connections are handed out once their handshake is confirmed (``accept()`` or
    ``async for conn in listener``); if the application does not take them fast enough the
    backlog fills and further ones are closed with SERVER_BUSY."""

    def __init__(
        self,
        config: ServerConfiguration,
        carrier: DatagramCarrier,
        nursery: trio.Nursery,
        *,
        backlog: int = DEFAULT_BACKLOG,
        admission_queue_size: int = DEFAULT_ADMISSION_QUEUE_SIZE,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    ) -> None:
        self.config = config
        self.endpoint = ServerEndpoint(config)
        self.driver_stats = DriverStats()
        self._carrier = carrier
        self._nursery = nursery
        self._inbox_size = inbox_size
        self._receive_queue_size = receive_queue_size
        self._drivers: dict[bytes, MxpConnection] = {}
        self._admit_send, self._admit_recv = trio.open_memory_channel[tuple[bytes, Address]](
            admission_queue_size
        )
        self._accept_send, self._accept_recv = trio.open_memory_channel[MxpConnection](backlog)

    @property
    def local_address(self) -> Address:
        return self._carrier.local_address

    @property
    def stats(self) -> Stats:
        """Protocol counters of the whole server (all its connections share them)."""
        return self.endpoint.stats

    @property
    def connections(self) -> list[MxpConnection]:
        """Live connections, including handshakes not confirmed yet."""
        return list(self._drivers.values())

    def half_open_count(self) -> int:
        return self.endpoint.half_open_count()

    async def accept(self, *, timeout: float | None = None) -> MxpConnection:
        """The next established connection; ``trio.ClosedResourceError`` once closed,
        ``trio.TooSlowError`` if ``timeout`` expires first."""
        try:
            if timeout is None:
                return await self._accept_recv.receive()
            with trio.fail_after(timeout):
                return await self._accept_recv.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("the listener is closed") from None

    def __aiter__(self) -> MxpListener:
        return self

    async def __anext__(self) -> MxpConnection:
        try:
            return await self._accept_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "server closing") -> None:
        """Close every connection (CLOSE frames sent at once, best effort) and stop accepting."""
        self._accept_send.close()
        for conn in list(self._drivers.values()):
            conn.close(error_code, reason)

    # ------------------------------------------------------------------ tasks

    async def receive_loop(self) -> None:
        """Wake once, process up to MAX_DRAIN datagrams inline (each by its connection), then
        service every connection that received something."""
        carrier = self._carrier
        route = self.endpoint.route
        drivers = self._drivers
        touched: dict[MxpConnection, None] = {}
        owing: list[MxpConnection] = []
        try:
            while True:
                await carrier.wait_readable()
                now = trio.current_time()
                for _ in range(MAX_DRAIN):
                    item = carrier.receive_nowait()
                    if item is None:
                        break
                    data = item[0]
                    conn = route(data)
                    if conn is not None:
                        driver = drivers[conn.host_cid]
                        driver.receive(data, item[1], now)
                        touched[driver] = None
                    elif len(data) >= MIN_INITIAL_DATAGRAM and data[0] & LONG_FORM:
                        try:
                            self._admit_send.send_nowait(item)
                        except trio.WouldBlock:
                            self.driver_stats.admission_dropped += 1
                    else:
                        # cheap refusals: counted by the endpoint, no state created
                        self.endpoint.admit(data, item[1], now)
                        self._drain_endpoint()
                for driver in touched:
                    if driver.ack_due(now):
                        driver.wake()
                        owing.append(driver)
                    else:
                        driver.service(now)
                touched.clear()
                if owing:
                    await application_turn()
                    now = trio.current_time()
                    for driver in owing:
                        driver.service(now)
                    owing.clear()
        except trio.ClosedResourceError:
            return

    async def admission_loop(self) -> None:
        endpoint = self.endpoint
        async for item in self._admit_recv:
            data, addr = item
            conn = endpoint.route(data)
            if conn is not None:
                # a retransmitted INITIAL whose first copy was admitted meanwhile
                self._drivers[conn.host_cid].feed(item)
                continue
            now = trio.current_time()
            new = endpoint.admit(data, addr, now)
            self._drain_endpoint()
            if new is not None:
                self._start(new)

    def _drain_endpoint(self) -> None:
        out = self.endpoint.take_stateless_datagrams()
        if out:
            send_all(self._carrier, out, self.driver_stats)
        # rejections are reported on the endpoint; the connection itself expires on its timer
        while self.endpoint.next_event() is not None:
            pass

    def _start(self, conn: Connection) -> None:
        mxp = MxpConnection(
            conn,
            self._carrier,
            stats=self.driver_stats,
            inbox_size=self._inbox_size,
            receive_queue_size=self._receive_queue_size,
            on_established=self._announce,
            on_closed=self._forget,
        )
        self._drivers[conn.host_cid] = mxp
        self._nursery.start_soon(mxp.run)

    def _announce(self, conn: MxpConnection) -> None:
        try:
            self._accept_send.send_nowait(conn)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.driver_stats.accept_dropped += 1
            conn.close(ErrorCode.SERVER_BUSY, "accept backlog full")

    def _forget(self, conn: MxpConnection) -> None:
        self.endpoint.forget(conn.connection)
        if self._drivers.get(conn.connection.host_cid) is conn:
            del self._drivers[conn.connection.host_cid]


@asynccontextmanager
async def mxp_listen(
    bind: tuple[str, int] | DatagramCarrier,
    config: ServerConfiguration,
    *,
    backlog: int = DEFAULT_BACKLOG,
    admission_queue_size: int = DEFAULT_ADMISSION_QUEUE_SIZE,
    inbox_size: int = DEFAULT_INBOX_SIZE,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    socket_buffer_size: int | None = 1 << 20,
) -> AsyncIterator[MxpListener]:
    """Serve MXP on ``bind``: a (host, port) to bind a UDP socket on (port 0 picks a free
    port; see ``listener.local_address``) or an existing carrier.

    The listener's tasks (receive loop, connections) run until the block is left, also while
    the caller is being cancelled, so a server can still finish its work during a graceful
    shutdown. Leaving the block closes every connection (CLOSE frames sent, best effort), ends
    all their tasks and closes the socket this call opened."""
    if isinstance(bind, tuple):
        carrier: DatagramCarrier = await open_udp_carrier(
            bind[0],
            bind[1],
            receive_buffer_size=socket_buffer_size,
            send_buffer_size=socket_buffer_size,
        )
        own_carrier = True
    else:
        carrier, own_carrier = bind, False
    try:
        with unwrap_single():
            async with trio.open_nursery() as outer:
                # The receive loop and the connections' tasks live in a nursery that the
                # caller's cancellation does not reach: a server cancelled into a graceful
                # shutdown still receives and sends while its calls in flight finish.
                stop = trio.Event()
                tasks: trio.Nursery = await outer.start(shielded_nursery, stop)
                listener = MxpListener(
                    config,
                    carrier,
                    tasks,
                    backlog=backlog,
                    admission_queue_size=admission_queue_size,
                    inbox_size=inbox_size,
                    receive_queue_size=receive_queue_size,
                )
                tasks.start_soon(listener.receive_loop)
                tasks.start_soon(listener.admission_loop)
                try:
                    yield listener
                finally:
                    listener.close()
                    stop.set()
    finally:
        if own_carrier:
            carrier.close()


async def _run_handler(handler: Handler, conn: MxpConnection) -> None:
    try:
        await handler(conn)
    except Exception:
        log.exception("MXP connection handler failed (%r)", conn)
        conn.close(ErrorCode.INTERNAL_ERROR, "handler failed")
    finally:
        conn.close()


async def serve_mxp(
    handler: Handler,
    bind: tuple[str, int] | DatagramCarrier,
    config: ServerConfiguration,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> NoReturn:
    """Run ``handler(conn)`` in its own task for every connection until cancelled;
    ``await nursery.start(serve_mxp, handler, ("127.0.0.1", 0), config)`` returns the bound
    address. The connection is closed (NO_ERROR) when its handler returns; a handler that
    raises is logged and its connection closed with INTERNAL_ERROR, and serving goes on.
    ``options`` are those of ``mxp_listen``."""
    async with mxp_listen(bind, config, **options) as listener:
        task_status.started(listener.local_address)
        with unwrap_single():
            async with trio.open_nursery() as handlers:
                async for conn in listener:
                    handlers.start_soon(_run_handler, handler, conn)
    raise AssertionError("unreachable: the accept loop ends only by cancellation")
