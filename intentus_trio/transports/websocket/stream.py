"""How bytes and messages move under the WebSocket library, on the hot path of every call.

Two shortcuts, each measured to matter for a round trip of a few hundred microseconds:

* ``DirectStream`` writes to a plain TCP socket synchronously. A trio socket write always
  yields to the scheduler afterwards, and a yield costs about as much as a cancel scope;
  a frame that fits in the socket buffer (the common case) is written here with no yield.
  A write the buffer cannot take at once is finished shielded from cancellation and
  bounded by ``send_timeout``: a half-written frame cannot be taken back, and a peer that
  does not read for that long is treated as gone.
* ``DirectWriter`` frames a message and writes it at once when no other write is under
  way, where the library's ``send_message`` would first yield to take its write lock. It
  takes that same lock (without waiting), so frames never interleave.
* ``deliver_messages`` hands each received message to a callback from the library's own
  reader task instead of through its internal queue, sparing one task switch per message
  on each side. It relies on the library's queue attributes; when they are not what it
  expects, a pump task reading ``get_message()`` does the same job one switch slower.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto import WSConnection
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

log = logging.getLogger("intentus_trio.transports.websocket")

#: Called with each received message (text or binary).
OnMessage = Callable[[str | bytes], Awaitable[None]]
#: Called once when no more messages will come, with the close reason if known.
OnClosed = Callable[[CloseReason | None], None]


class DirectStream(trio.abc.HalfCloseableStream):
    """A ``trio.SocketStream`` whose writes complete without yielding when they can."""

    def __init__(self, stream: trio.SocketStream, send_timeout: float) -> None:
        self.stream = stream
        self.send_timeout = send_timeout
        #: Why a write failed, once one has (read by the Link to report the failure).
        self.failure: str | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        fd = self.stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket is closed")
        view = memoryview(data)
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.failure = self.failure or os.strerror(exc.errno or errno.EIO)
            raise trio.BrokenResourceError(self.failure) from exc
        if sent == len(view):
            return
        deadline = trio.current_time() + self.send_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            await self.stream.send_all(view[sent:])
        if scope.cancelled_caught:
            self.failure = f"peer did not read for {self.send_timeout} s"
            raise trio.BrokenResourceError(self.failure)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


class DirectWriter:
    """Writes text messages of ``ws`` through ``stream`` without yielding when it can."""

    def __init__(self, ws: WebSocketConnection, stream: DirectStream, wsproto: WSConnection,
                 lock: trio.StrictFIFOLock) -> None:
        self.ws = ws
        self.stream = stream
        self._wsproto = wsproto
        self._lock = lock

    @classmethod
    def of(cls, ws: WebSocketConnection, stream: DirectStream | None) -> DirectWriter | None:
        """The writer for ``ws`` over ``stream``; None when the library is not as expected
        (then ``send_message`` is the way)."""
        wsproto = getattr(ws, "_wsproto", None)
        lock = getattr(ws, "_stream_lock", None)
        if stream is None or not isinstance(wsproto, WSConnection) or not isinstance(
            lock, trio.StrictFIFOLock
        ):
            return None
        return cls(ws, stream, wsproto, lock)

    def ready(self) -> bool:
        """True when a message can be written now (open, and no write under way)."""
        return self.ws.closed is None and not self._lock.locked()

    async def send(self, text: str) -> None:
        """Write one message; only after ``ready()`` and without a yield in between.

        Raises ``trio.BrokenResourceError`` if the connection cannot take it.
        """
        lock = self._lock
        lock.acquire_nowait()
        try:
            try:
                data = self._wsproto.send(TextMessage(data=text))
            except LocalProtocolError as exc:
                raise trio.BrokenResourceError("the connection is closing") from exc
            await self.stream.send_all(data)
        finally:
            lock.release()


class _Sink:
    """Takes the place of the library's message queue (both ends of it)."""

    def __init__(self, ws: WebSocketConnection, on_message: OnMessage, on_closed: OnClosed):
        self._ws = ws
        self._on_message = on_message
        self._on_closed: OnClosed | None = on_closed

    def _close(self) -> None:
        on_closed, self._on_closed = self._on_closed, None
        if on_closed is not None:
            on_closed(self._ws.closed)

    # The sending end, as the library's reader task uses it.
    async def send(self, message: str | bytes) -> None:
        if self._on_closed is None:
            raise trio.ClosedResourceError
        await self._on_message(message)

    async def aclose(self) -> None:
        self._close()

    def close(self) -> None:
        self._close()

    # The receiving end: only ever closed (the library closes it on a 1009 close).
    async def receive(self) -> str | bytes:
        raise trio.EndOfChannel


def _queue_of(ws: WebSocketConnection) -> tuple[Any, Any] | None:
    send = getattr(ws, "_send_channel", None)
    receive = getattr(ws, "_recv_channel", None)
    if isinstance(send, trio.MemorySendChannel) and isinstance(
        receive, trio.MemoryReceiveChannel
    ):
        return send, receive
    return None


async def deliver_messages(
    ws: WebSocketConnection, nursery: trio.Nursery, on_message: OnMessage, on_closed: OnClosed
) -> bool:
    """Route every message ``ws`` receives to ``on_message``, in order; ``on_closed`` once
    at the end. Returns True when messages come straight from the library's reader task.

    ``on_message`` runs in that reader task: while it waits, nothing is read (TCP carries
    the backpressure) and pings go unanswered; it must not raise.
    """
    queue = _queue_of(ws)
    if queue is None:
        nursery.start_soon(_pump, ws, on_message, on_closed)
        return False
    receive = queue[1]
    # Messages queued before the switch come first; the last check for more and the switch
    # happen without a yield in between, so none can slip past.
    while True:
        try:
            message = receive.receive_nowait()
        except trio.WouldBlock:
            break
        except (trio.EndOfChannel, trio.ClosedResourceError):
            on_closed(ws.closed)
            return True
        await on_message(message)
    sink = _Sink(ws, on_message, on_closed)
    vars(ws)["_send_channel"] = sink
    vars(ws)["_recv_channel"] = sink
    if ws.closed is not None:
        sink.close()
    return True


async def _pump(ws: WebSocketConnection, on_message: OnMessage, on_closed: OnClosed) -> None:
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed as exc:
            on_closed(exc.reason)
            return
        await on_message(message)
