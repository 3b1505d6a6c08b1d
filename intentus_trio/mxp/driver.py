"""The trio driver of one MXP connection, and the object users hold.

The carrier's receive loop (which belongs to the client or the listener) hands each datagram
straight to its connection's sans-IO ``receive_datagram`` (no channel, no task switch) and,
once the socket is drained, calls ``_service``. Each connection has one task of its own, a
*timer* task that sleeps in a cancel scope whose deadline follows the sans-IO ``get_timer()``.
Whoever touches the sans-IO connection (datagrams, a timer, a user call) then calls
``_service``: events are dispatched (a stream's waiting reader is rescheduled directly),
packets are sent, blocked writers and stream openers are woken, the timer deadline is moved.
All of it is synchronous, so calls never interleave.

On an established connection the deadline is only ever moved *earlier* between wakeups: a
timer that fires too early just recomputes ``get_timer()`` and sleeps again. On a busy
connection the timer moves back and forth twice per round trip (delayed ACK, then idle
timeout), and moving a trio deadline costs more than the occasional spurious wakeup. During the
handshake and the close the timer changes rarely, so it follows ``get_timer()`` exactly there:
a closing connection then wakes once, when its drain period ends.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from intentus_trio.mxp.carrier import Address, DatagramCarrier
from intentus_trio.mxp.connection import Connection, DatagramTooLarge
from intentus_trio.mxp.events import (
    ConnectionClosed,
    DatagramReceived,
    ErrorCode,
    HandshakeCompleted,
    KeyUpdated,
    StopSendingRequested,
    StreamOpened,
    StreamReadable,
    StreamReset,
)
from intentus_trio.mxp.noise import DHLEN, KeyPair
from intentus_trio.mxp.scheduler import DEFAULT_URGENCY, URGENCY_LEVELS
from intentus_trio.mxp.stats import PathStats, Stats
from intentus_trio.mxp.stream import MxpStream, StreamResetError, StreamStoppedError
from intentus_trio.mxp.streams import StreamLimitReached

__all__ = [
    "ConnectionClosedError",
    "DatagramTooLarge",
    "DriverStats",
    "HandshakeError",
    "MxpConnection",
    "MxpStream",
    "PublicKeyLike",
    "StaticKeyLike",
    "StreamResetError",
    "StreamStoppedError",
    "public_key_bytes",
    "static_keypair",
]

DEFAULT_INBOX_SIZE = 512
DEFAULT_RECEIVE_QUEUE_SIZE = 256
MAX_DRAIN = 64
"""Datagrams a receive loop processes before it services its connections (sends ACKs)."""


# --------------------------------------------------------------------------- errors


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        if code >= ErrorCode.APPLICATION_ERROR:
            return f"APPLICATION_ERROR+{code - ErrorCode.APPLICATION_ERROR}"
        return "UNKNOWN"


class ConnectionClosedError(trio.BrokenResourceError):
    """The connection ended (peer close, timeout, protocol error); carries the close reason.

    Raised by operations on a connection that the peer or the protocol closed. A connection
    the application closed itself raises ``trio.ClosedResourceError`` instead."""

    def __init__(self, error_code: int, reason: str, by_peer: bool) -> None:
        self.error_code = error_code
        self.reason = reason
        self.by_peer = by_peer
        who = "by the peer" if by_peer else "locally"
        super().__init__(
            f"connection closed {who}: {_code_name(error_code)} (0x{error_code:x})"
            + (f": {reason}" if reason else "")
        )

    @classmethod
    def from_event(cls, event: ConnectionClosed) -> ConnectionClosedError:
        return cls(event.error_code, event.reason, event.by_peer)


class HandshakeError(ConnectionClosedError):
    """The handshake did not complete: timeout, wrong server key, or rejected by the server."""


@attrs.define
class DriverStats:
    """What the trio driver dropped or did, next to the protocol's own ``Stats``."""

    inbox_dropped: int = 0
    """Always 0: datagrams are processed in the receive loop, not queued per connection."""
    received_dropped: int = 0
    """User datagrams dropped because the application's receive queue was full."""
    send_failed: int = 0
    """Packets the carrier refused (OS buffer full, transient error)."""
    admission_dropped: int = 0
    """INITIALs dropped because the server's admission queue was full (listener only)."""
    accept_dropped: int = 0
    """Established connections refused with SERVER_BUSY: accept backlog full (listener only)."""
    key_updates: int = 0
    """Key updates started by the peer."""
    timer_wakeups: int = 0
    """Times the connection's timer woke the driver."""
    timer_wakeups_early: int = 0
    """...of which with nothing due (a deadline that had moved later): wasted work."""


async def application_turn() -> None:
    """Let the tasks woken by received data run before an ACK is sent for it.

    A receive loop that owes an ACK now wakes the readers (``wake``), waits here, then services
    the connection: a reply written meanwhile carried the ACK, otherwise an ACK-only packet
    goes now. trio runs the tasks woken in one round in the next, in either order, so it
    takes two rounds to be sure they ran first. This is what lets ``max_ack_delay`` be 0
    without a separate ACK for every request.
    """
    await trio.lowlevel.checkpoint()
    await trio.lowlevel.checkpoint()


# --------------------------------------------------------------------------- keys


class _HasPrivate(Protocol):
    @property
    def private(self) -> bytes: ...


class _HasPublic(Protocol):
    @property
    def public(self) -> bytes: ...


StaticKeyLike = KeyPair | _HasPrivate | bytes | str | os.PathLike[str]
"""A static X25519 private key: a ``KeyPair``, anything with ``.private`` (such as
``intentus_trio.keys.X25519KeyPair``), 32 raw bytes, or the path of a private key file written
by ``intentus-trio keygen x25519`` (read with ``intentus_trio.keys.load_x25519``)."""

PublicKeyLike = bytes | _HasPublic | str | os.PathLike[str]
"""A static X25519 public key: 32 raw bytes, anything with ``.public``, or the path of a
``.pub`` file written by ``intentus-trio keygen x25519``."""


def static_keypair(key: StaticKeyLike) -> KeyPair:
    """A ``KeyPair`` from any of the forms ``StaticKeyLike`` allows."""
    if isinstance(key, KeyPair):
        return key
    if isinstance(key, str | os.PathLike):
        from intentus_trio.keys import load_x25519

        key = load_x25519(key)
    private = key if isinstance(key, bytes | bytearray | memoryview) else key.private
    return KeyPair.from_private(bytes(private))


def public_key_bytes(key: PublicKeyLike) -> bytes:
    """The 32 raw bytes of any of the forms ``PublicKeyLike`` allows."""
    if isinstance(key, str | os.PathLike):
        from intentus_trio.keys import load_public_key

        key = load_public_key(key, "x25519-public")
    raw = key if isinstance(key, bytes | bytearray | memoryview) else key.public
    raw = bytes(raw)
    if len(raw) != DHLEN:
        raise ValueError(f"an X25519 public key is {DHLEN} bytes, got {len(raw)}")
    return raw


# --------------------------------------------------------------------------- helpers


def send_all(
    carrier: DatagramCarrier, out: list[tuple[bytes, Address]], stats: DriverStats
) -> None:
    for data, addr in out:
        try:
            sent = carrier.send_nowait(data, addr)
        except (trio.ClosedResourceError, OSError):
            sent = False
        if not sent:
            stats.send_failed += 1


# --------------------------------------------------------------------------- the connection


class MxpConnection:
    """An MXP connection as the application sees it: reliable streams, unreliable datagrams,
    key update, close.

    Obtained from ``mxp_connect`` (client) or a listener (server); it lives in tasks of the
    nursery that produced it. Operations after the connection ended raise
    ``ConnectionClosedError`` (with the close reason) or, after the application's own close,
    ``trio.ClosedResourceError``."""

    def __init__(
        self,
        conn: Connection,
        carrier: DatagramCarrier,
        *,
        stats: DriverStats | None = None,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
        on_established: Callable[[MxpConnection], None] | None = None,
        on_closed: Callable[[MxpConnection], None] | None = None,
    ) -> None:
        del inbox_size  # datagrams are processed in the receive loop
        self._conn = conn
        self._carrier = carrier
        self.driver_stats = stats if stats is not None else DriverStats()
        self._queue_send, self._queue_recv = trio.open_memory_channel[bytes](receive_queue_size)
        self._timer_scope: trio.CancelScope | None = None
        self._armed = math.inf
        self._established = trio.Event()
        self._closed = trio.Event()
        self._close_reason: ConnectionClosed | None = None
        self._closed_locally = False
        self._finished = False
        self._on_established = on_established
        self._on_closed = on_closed
        # streams the application holds, by id
        self._streams: dict[int, MxpStream] = {}
        # writers waiting for send-buffer space, checked after every service
        self._send_waiters: dict[int, MxpStream] = {}
        self._incoming: collections.deque[MxpStream] = collections.deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._open_lot = trio.lowlevel.ParkingLot()
        self._flush_lot = trio.lowlevel.ParkingLot()

    # ------------------------------------------------------------------ information

    @property
    def connection(self) -> Connection:
        """The sans-IO connection (for inspection; drive it only through this object)."""
        return self._conn

    @property
    def stats(self) -> Stats:
        """Protocol counters; on a server they are shared by all its connections."""
        return self._conn.stats

    def path_stats(self) -> PathStats:
        """This connection's RTT, congestion window and loss-recovery counters."""
        return self._conn.path_stats()

    @property
    def local_address(self) -> Address:
        return self._carrier.local_address

    @property
    def remote_address(self) -> Address:
        return self._conn.peer_address

    @property
    def remote_static_key(self) -> bytes:
        """The peer's authenticated static X25519 public key."""
        key = self._conn.remote_static
        assert key is not None
        return key

    @property
    def max_datagram_size(self) -> int:
        """The largest payload ``send_datagram`` accepts."""
        return self._conn.max_datagram_size()

    @property
    def key_generation(self) -> int:
        return self._conn.key_generation

    @property
    def is_closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> ConnectionClosed | None:
        return self._close_reason

    # ------------------------------------------------------------------ streams

    async def open_stream(
        self, *, bidirectional: bool = True, urgency: int = DEFAULT_URGENCY,
        timeout: float | None = None,
    ) -> MxpStream:  # fmt: skip
        """A new stream to the peer. Waits while the peer's stream limit (MAX_STREAMS) allows
        no more; ``timeout`` then raises ``trio.TooSlowError``. The peer sees the stream
        (``accept_stream``) when its first data or end of stream arrives."""
        if not 0 <= urgency < URGENCY_LEVELS:
            raise ValueError(f"urgency must be 0..{URGENCY_LEVELS - 1}")
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            self._check_open()
            manager = self._conn.streams
            assert manager is not None
            try:
                sid = manager.open_stream(bidirectional, urgency)
                break
            except StreamLimitReached:
                self._service(trio.current_time())  # tell the peer: STREAMS_BLOCKED
            blocked = True
            with trio.move_on_at(deadline):
                await self._open_lot.park()
                continue
            raise trio.TooSlowError("the peer allows no more streams")
        stream = MxpStream(self, sid, urgency)
        self._streams[sid] = stream
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    async def accept_stream(self, *, timeout: float | None = None) -> MxpStream:
        """The next stream the peer opened; ``timeout`` raises ``trio.TooSlowError``."""
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while not self._incoming:
            self._check_open()
            blocked = True
            with trio.move_on_at(deadline):
                await self._accept_lot.park()
                continue
            raise trio.TooSlowError("no stream from the peer")
        stream = self._incoming.popleft()
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    def streams(self) -> _IncomingStreams:
        """``async for stream in conn.streams()``: streams the peer opens, until the
        connection ends (a NO_ERROR close ends the loop, any other reason raises)."""
        return _IncomingStreams(self)

    def _flushed(self) -> bool:
        manager = self._conn.streams
        return self._close_reason is not None or manager is None or manager.settled()

    async def wait_flushed(self) -> None:
        """Wait until the peer has acknowledged all stream data, ends of stream and resets
        written so far (or the connection ended). ``close`` abandons what is not acknowledged
        yet, so a graceful close waits for this first, bounded by a timeout of its own: a
        peer that stops reading or vanishes never acknowledges."""
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = False
        while not self._flushed():
            blocked = True
            await self._flush_lot.park()
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _forget_stream(self, stream: MxpStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._send_waiters.pop(stream.stream_id, None)

    def _wake_writers(self) -> None:
        manager = self._conn.streams
        for sid, stream in list(self._send_waiters.items()):
            if manager is None or manager.get(sid) is None:
                stream._wake_writer()
                continue
            if manager.send_buffer_space(sid) > 0:
                stream._wake_writer()

    # ------------------------------------------------------------------ datagrams

    async def send_datagram(self, data: bytes) -> None:
        """Send one unreliable datagram (at most ``max_datagram_size`` bytes; larger raises
        ``DatagramTooLarge``). Returns once it is handed to the carrier (or, when the
        congestion window is full, queued behind it)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        self._conn.send_datagram(data)
        self._service(trio.current_time())
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_datagram(self, *, timeout: float | None = None) -> bytes:
        """The next datagram from the peer (datagrams that arrived before the connection
        ended are still delivered). ``timeout`` raises ``trio.TooSlowError`` when it expires."""
        try:
            if timeout is None:
                return await self._queue_recv.receive()
            with trio.fail_after(timeout):
                return await self._queue_recv.receive()
        except trio.EndOfChannel:
            raise self._closed_error() from None

    def __aiter__(self) -> MxpConnection:
        return self

    async def __anext__(self) -> bytes:
        """Datagrams until the connection ends; a clean close (NO_ERROR) ends the iteration,
        any other reason raises ``ConnectionClosedError``."""
        try:
            return await self._queue_recv.receive()
        except trio.EndOfChannel:
            if self._ended_cleanly():
                raise StopAsyncIteration from None
            raise self._closed_error() from None

    def _ended_cleanly(self) -> bool:
        reason = self._close_reason
        return self._closed_locally or (
            reason is not None and reason.error_code == ErrorCode.NO_ERROR
        )

    # ------------------------------------------------------------------ control

    def request_key_update(self) -> bool:
        """Move to fresh keys now; False if the previous update is not confirmed yet."""
        self._check_open()
        started = self._conn.request_key_update()
        self._service(trio.current_time())
        return started

    def ping(self) -> None:
        """Send an ack-eliciting PING (keeps NAT bindings and idle timers fresh)."""
        self._check_open()
        self._conn.ping()
        self._service(trio.current_time())

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close with a reason the peer sees; sends the CLOSE at once (best effort). Idempotent.
        Stream data not yet acknowledged is abandoned: finish the exchange (read the peer's
        answer) or ``wait_flushed`` first."""
        if self._close_reason is None:
            self._closed_locally = True
        self._conn.close(trio.current_time(), error_code, reason)
        self._service(trio.current_time())

    async def aclose(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        self.close(error_code, reason)
        await trio.lowlevel.checkpoint()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection ends; return why."""
        await self._closed.wait()
        assert self._close_reason is not None
        return self._close_reason

    async def __aenter__(self) -> MxpConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._conn.state.value
        host, port = self._conn.peer_address
        return f"<MxpConnection {self._conn.host_cid.hex()} peer={host}:{port} {state}>"

    def _check_open(self) -> None:
        if self._close_reason is not None:
            raise self._closed_error()

    def _closed_error(self) -> Exception:
        reason = self._close_reason
        if self._closed_locally or reason is None:
            return trio.ClosedResourceError("the connection was closed by this side")
        return ConnectionClosedError.from_event(reason)

    # ------------------------------------------------------------------ driver side

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Process one received datagram (the receive loop calls this, then ``service``)."""
        self._conn.receive_datagram(data, addr, now)

    def service(self, now: float) -> None:
        """Act on everything received since the last call: events, sends, timer."""
        self._service(now)

    def ack_due(self, now: float) -> bool:
        """What was received owes the peer an ACK by ``now`` (see ``application_turn``)."""
        return self._conn.ack_due(now)

    def wake(self) -> None:
        """Hand what was received to the tasks waiting for it, sending nothing yet."""
        events = self._conn._events
        while events:
            self._dispatch(events.popleft())

    def feed(self, item: tuple[bytes, Address]) -> None:
        """Process one datagram and act on it at once."""
        now = trio.current_time()
        self._conn.receive_datagram(item[0], item[1], now)
        self._service(now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the timer task until the connection is closed (or cancelled)."""
        try:
            self._service(trio.current_time())  # the first handshake packet
            task_status.started()
            await self._timer_loop()
        finally:
            self._finish()

    async def wait_established(self) -> None:
        """Wait for the handshake; raise ``HandshakeError`` if the connection ended first."""
        await self._established.wait()
        reason = self._close_reason
        if reason is not None and not self._conn.is_established:
            raise HandshakeError(reason.error_code, reason.reason, reason.by_peer)

    async def _timer_loop(self) -> None:
        conn = self._conn
        while not conn.is_closed:
            timer = conn.get_timer()
            self._armed = math.inf if timer is None else timer
            with trio.CancelScope(deadline=self._armed) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            now = trio.current_time()
            timer = conn.get_timer()
            self.driver_stats.timer_wakeups += 1
            if timer is not None and now >= timer:
                conn.handle_timer(now)
                self._service(now)
            else:
                self.driver_stats.timer_wakeups_early += 1

    def _service(self, now: float) -> None:
        """After any input: dispatch events, send what is due, wake writers, move the timer."""
        conn = self._conn
        events = conn._events
        while events:
            self._dispatch(events.popleft())
        out = conn.datagrams_to_send(now)
        if out:
            send_all(self._carrier, out, self.driver_stats)
        if conn.is_closed:
            self._finish()
            return
        if self._send_waiters:
            self._wake_writers()
        if self._open_lot:
            manager = conn.streams
            if manager is not None and (manager.can_open(True) or manager.can_open(False)):
                self._open_lot.unpark_all()
        if self._flush_lot and self._flushed():
            self._flush_lot.unpark_all()
        # Follow the timer both ways: a deadline left earlier than needed (an ACK that rode
        # on a reply, a probe timeout pushed back by an acknowledgement) would wake the
        # driver for nothing, which costs far more than moving the deadline.
        timer = conn.get_timer()
        armed = math.inf if timer is None else timer
        if armed != self._armed:
            scope = self._timer_scope
            if scope is not None:
                self._armed = scope.deadline = armed

    def _dispatch(self, event: object) -> None:
        kind = type(event)
        if kind is StreamReadable:
            assert isinstance(event, StreamReadable)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._wake_reader()
        elif kind is StreamOpened:
            assert isinstance(event, StreamOpened)
            stream = MxpStream(self, event.stream_id, DEFAULT_URGENCY)
            self._streams[event.stream_id] = stream
            self._incoming.append(stream)
            self._accept_lot.unpark()
        elif kind is DatagramReceived:
            assert isinstance(event, DatagramReceived)
            try:
                self._queue_send.send_nowait(event.data)
            except trio.WouldBlock:
                self.driver_stats.received_dropped += 1
            except trio.ClosedResourceError:
                pass
        elif kind is StreamReset:
            assert isinstance(event, StreamReset)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._peer_reset = event.error_code
                stream._wake_reader()
        elif kind is StopSendingRequested:
            assert isinstance(event, StopSendingRequested)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._peer_stopped = event.error_code
                stream._wake_writer()
        elif kind is HandshakeCompleted:
            self._established.set()
            if self._on_established is not None:
                self._on_established(self)
        elif kind is KeyUpdated:
            self.driver_stats.key_updates += 1
        elif kind is ConnectionClosed:
            assert isinstance(event, ConnectionClosed)
            if self._close_reason is None:
                self._close_reason = event
            self._queue_send.close()
            self._established.set()
            self._closed.set()
            self._wake_everyone()

    def _wake_everyone(self) -> None:
        for stream in list(self._streams.values()):
            stream._wake_all()
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._flush_lot.unpark_all()

    def _finish(self) -> None:
        """The connection is over (closed, or its task is ending): stop the timer task."""
        if self._close_reason is None:
            # tasks cancelled from outside before any close: record it for the application
            self._closed_locally = True
            self._conn.close(trio.current_time(), ErrorCode.NO_ERROR, "")
            while (event := self._conn.next_event()) is not None:
                self._dispatch(event)
        if self._finished:
            return
        self._finished = True
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        if self._on_closed is not None:
            self._on_closed(self)


class _IncomingStreams:
    """The async iterator of ``MxpConnection.streams()``."""

    def __init__(self, conn: MxpConnection) -> None:
        self._conn = conn

    def __aiter__(self) -> _IncomingStreams:
        return self

    async def __anext__(self) -> MxpStream:
        try:
            return await self._conn.accept_stream()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._conn._ended_cleanly():
                raise StopAsyncIteration from None
            raise
