"""``MxpStream``: one reliable MXP stream as a ``trio.abc.HalfCloseableStream``.

A stream is a thin view on the sans-IO ``StreamManager`` of its connection. Nothing runs in a
task of its own: the connection's receive loop processes datagrams inline and wakes the one
task parked in ``receive_some`` (or in a send-side call) directly with
``trio.lowlevel.reschedule``, so delivering data costs one task switch and no channel hop.

Backpressure: ``send_all`` copies into the stream's send buffer, which holds data until the
peer acknowledges it; once ``Configuration.stream_send_buffer`` bytes are unacknowledged the
writer waits. Flow control stops the packets themselves when the peer's reader stalls, so a
reader that stops reading ends up stopping the writer, with nothing lost.
"""

from __future__ import annotations

import contextlib
import operator
from typing import TYPE_CHECKING

import trio

from intentus_trio.mxp.scheduler import URGENCY_LEVELS
from intentus_trio.mxp.streams import StreamError, is_bidirectional, is_client_initiated

if TYPE_CHECKING:
    from intentus_trio.mxp.driver import MxpConnection
    from intentus_trio.mxp.streams import StreamManager

__all__ = ["MxpStream", "StreamResetError", "StreamStoppedError"]


class StreamResetError(trio.BrokenResourceError):
    """The peer reset its sending side (RESET_STREAM): data not read yet is gone."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        super().__init__(f"stream {stream_id} reset by the peer (code {error_code})")


class StreamStoppedError(trio.BrokenResourceError):
    """The peer asked us to stop sending (STOP_SENDING); our side was reset with its code."""

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        super().__init__(f"stream {stream_id}: the peer stopped reading (code {error_code})")


def _abort(stream: MxpStream, reader: bool) -> trio.lowlevel.Abort:
    if reader:
        stream._reader = None
    else:
        stream._writer = None
        stream._conn._send_waiters.pop(stream.stream_id, None)
    return trio.lowlevel.Abort.SUCCEEDED


class MxpStream(trio.abc.HalfCloseableStream):
    """A reliable, ordered, flow-controlled byte stream of an ``MxpConnection``.

    Obtained from ``conn.open_stream()`` or ``conn.accept_stream()``. Besides the trio stream
    interface: ``reset(code)`` abandons the sending side (the peer's reads raise
    ``StreamResetError``), ``stop_sending(code)`` tells the peer to stop (its writes raise
    ``StreamStoppedError``), and ``urgency`` (0 most urgent .. 7, default 3) orders streams
    competing for the connection. A stream the peer has not seen yet becomes visible to it
    (``accept_stream``) with its first data or end of stream.

    ``aclose()`` ends the stream gracefully: the sending side is finished (data written so far
    is still delivered) and, if the peer's data was not read to the end, the peer is told to
    stop sending (code 0).
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_eof_sent",
        "_peer_reset",
        "_peer_stopped",
        "_reader",
        "_receiving",
        "_reset_sent",
        "_sending",
        "_stopped",
        "_urgency",
        "_writer",
        "can_receive",
        "can_send",
        "stream_id",
    )

    def __init__(self, conn: MxpConnection, stream_id: int, urgency: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._urgency = urgency
        local = is_client_initiated(stream_id) == conn.connection.is_client
        bidi = is_bidirectional(stream_id)
        self.can_send = bidi or local
        self.can_receive = bidi or not local
        self._closed = False
        self._eof_sent = False
        self._reset_sent = False
        self._stopped = False
        self._peer_reset: int | None = None
        self._peer_stopped: int | None = None
        self._reader: trio.lowlevel.Task | None = None
        self._writer: trio.lowlevel.Task | None = None
        self._receiving = False
        self._sending = False

    # ------------------------------------------------------------------ attributes

    @property
    def urgency(self) -> int:
        return self._urgency

    @urgency.setter
    def urgency(self, value: int) -> None:
        if not 0 <= value < URGENCY_LEVELS:
            raise ValueError(f"urgency must be 0..{URGENCY_LEVELS - 1}")
        self._urgency = value
        manager = self._conn.connection.streams
        if manager is not None and manager.get(self.stream_id) is not None:
            manager.set_urgency(self.stream_id, value)

    @property
    def connection(self) -> MxpConnection:
        return self._conn

    def __repr__(self) -> str:
        return f"<MxpStream {self.stream_id} urgency={self._urgency}>"

    # ------------------------------------------------------------------ parking

    async def _park(self, reader: bool) -> None:
        task = trio.lowlevel.current_task()
        if reader:
            self._reader = task
        else:
            self._writer = task
        await trio.lowlevel.wait_task_rescheduled(lambda _: _abort(self, reader))

    def _wake_reader(self) -> None:
        task = self._reader
        if task is not None:
            self._reader = None
            trio.lowlevel.reschedule(task)

    def _wake_writer(self) -> None:
        task = self._writer
        if task is not None:
            self._writer = None
            self._conn._send_waiters.pop(self.stream_id, None)
            trio.lowlevel.reschedule(task)

    def _wake_all(self) -> None:
        self._wake_reader()
        self._wake_writer()

    def _manager(self) -> StreamManager:
        manager = self._conn.connection.streams
        assert manager is not None
        return manager

    # ------------------------------------------------------------------ receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes (all that is ready if None), waiting for some; ``b""``
        once the peer finished its side and everything was read."""
        if max_bytes is None:
            limit = -1
        else:
            limit = operator.index(max_bytes)
            if limit < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._receiving = True
        try:
            blocked = False
            conn = self._conn
            sid = self.stream_id
            while True:
                if self._closed or self._stopped:
                    raise trio.ClosedResourceError("this side closed the stream")
                if not self.can_receive:
                    data = b""
                    break
                manager = conn.connection.streams
                assert manager is not None
                data = manager.read(sid, limit, trio.current_time())
                if data:
                    if manager.has_control():
                        conn._service(trio.current_time())  # window updates
                    break
                if self._peer_reset is not None:
                    raise StreamResetError(sid, self._peer_reset)
                if manager.at_eof(sid):
                    break
                if conn._close_reason is not None:
                    raise conn._closed_error()
                blocked = True
                await self._park(True)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def stop_sending(self, code: int = 0) -> None:
        """Tell the peer we will not read any more (its writes then raise
        ``StreamStoppedError`` with ``code``); unread data is dropped, later reads raise
        ``trio.ClosedResourceError``."""
        if self._stopped or not self.can_receive:
            return
        self._stopped = True
        conn = self._conn
        if conn._close_reason is None:
            with contextlib.suppress(StreamError):  # already finished and forgotten
                self._manager().stop_sending(self.stream_id, code, trio.current_time())
            conn._service(trio.current_time())
        self._wake_reader()

    # ------------------------------------------------------------------ sending

    def _check_send(self) -> None:
        if self._closed or self._eof_sent or self._reset_sent:
            raise trio.ClosedResourceError("this side closed the stream for sending")
        if not self.can_send:
            raise trio.ClosedResourceError("a receive-only stream")
        if self._peer_stopped is not None:
            raise StreamStoppedError(self.stream_id, self._peer_stopped)
        if self._conn._close_reason is not None:
            raise self._conn._closed_error()

    def _space(self) -> int:
        try:
            return self._manager().send_buffer_space(self.stream_id)
        except StreamError:
            return 1  # forgotten: the caller's next check raises

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of ``data``, waiting while the send buffer is full."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        try:
            self._check_send()
            view = memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            blocked = False
            conn = self._conn
            sid = self.stream_id
            while view:
                space = self._space()
                if space > 0:
                    chunk = view[:space]
                    self._manager().write(sid, chunk)
                    view = view[len(chunk) :]
                    conn._service(trio.current_time())
                    if not view:
                        break
                blocked = True
                conn._send_waiters[sid] = self
                await self._park(False)
                self._check_send()
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        try:
            self._check_send()
            blocked = False
            while self._space() <= 0:
                blocked = True
                self._conn._send_waiters[self.stream_id] = self
                await self._park(False)
                try:
                    self._check_send()
                except trio.BrokenResourceError:
                    return  # a send would not block: it would fail at once
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Finish the sending side (the peer reads ``b""`` after the data); idempotent."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("this side closed the stream")
        self._finish()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _finish(self) -> None:
        if self._eof_sent or self._reset_sent or not self.can_send:
            return
        self._eof_sent = True
        conn = self._conn
        if conn._close_reason is not None or self._peer_stopped is not None:
            return
        try:
            self._manager().finish(self.stream_id)
        except StreamError:
            return  # reset meanwhile (STOP_SENDING not dispatched yet)
        conn._service(trio.current_time())

    def reset(self, code: int = 0) -> None:
        """Abandon the sending side: unsent and unacknowledged data is dropped and the peer's
        reads raise ``StreamResetError`` with ``code``. Later writes raise
        ``trio.ClosedResourceError``."""
        if self._reset_sent or not self.can_send:
            return
        self._reset_sent = True
        conn = self._conn
        if conn._close_reason is None:
            with contextlib.suppress(StreamError):  # finished, acknowledged and forgotten
                self._manager().reset_stream(self.stream_id, code)
            conn._service(trio.current_time())
        self._wake_writer()

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        if not self._closed:
            self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        self._closed = True
        self._finish()
        if self.can_receive and not self._stopped:
            self._stopped = True
            conn = self._conn
            manager = conn.connection.streams
            if conn._close_reason is None and manager is not None:
                with contextlib.suppress(StreamError):  # read to the end and forgotten
                    manager.stop_sending(self.stream_id, 0, trio.current_time())
                conn._service(trio.current_time())
        self._conn._forget_stream(self)
        self._wake_all()
