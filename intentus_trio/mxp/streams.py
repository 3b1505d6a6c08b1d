"""Reliable streams (sans-IO): send buffers, reassembly buffers and the per-connection manager.

Stream ids follow QUIC: bit 0 says who opened the stream (0 client, 1 server), bit 1 whether it
is bidirectional (0) or unidirectional (1); ``id >> 2`` counts streams of one kind. Opening
stream *n* of a kind implicitly opens all lower ones, and MAX_STREAMS caps the count per kind.

A :class:`SendStream` keeps written data until it is acknowledged: STREAM frames name byte
ranges, a lost frame puts its range back for retransmission, an acknowledged one releases it.
A :class:`ReceiveStream` reassembles out-of-order, duplicated and overlapping ranges into one
in-order byte sequence and enforces final-size rules. :class:`StreamManager` multiplexes them:
stream limits, connection and stream flow control, control frames, and the scheduler.
"""

from __future__ import annotations

import bisect
import collections
from typing import Any

import attrs

from intentus_trio.mxp.flow import (
    FINAL_SIZE_ERROR,
    STREAM_LIMIT_ERROR,
    STREAM_STATE_ERROR,
    FlowControlError,
    ReceiveWindow,
    SendCredit,
)
from intentus_trio.mxp.rangeset import RangeSet
from intentus_trio.mxp.recovery import Delivery, RttEstimator
from intentus_trio.mxp.scheduler import DEFAULT_URGENCY, Scheduler
from intentus_trio.mxp.stream_frames import (
    STREAM_BASE,
    STREAM_FIN,
    STREAM_LEN,
    STREAM_OFF,
    AnyStreamFrame,
    DataBlocked,
    MaxData,
    MaxStreamData,
    MaxStreams,
    ResetStream,
    StopSending,
    StreamDataBlocked,
    StreamFrame,
    StreamsBlocked,
    encode_stream_frame,
)
from intentus_trio.mxp.varint import encode_varint, varint_size

_COMPACT_AT = 64 * 1024
MIN_STREAM_FRAME_ROOM = 24

__all__ = [
    "FlowControlError",
    "ReceiveStream",
    "SendStream",
    "StopSendingRequested",
    "StreamError",
    "StreamLimitReached",
    "StreamLimits",
    "StreamManager",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
]


class StreamError(Exception):
    """Local misuse of a stream (writing after FIN or reset, unknown stream...)."""


class StreamLimitReached(StreamError):
    """The peer's MAX_STREAMS does not allow another stream of this kind yet."""


def is_client_initiated(stream_id: int) -> bool:
    return stream_id & 1 == 0


def is_bidirectional(stream_id: int) -> bool:
    return stream_id & 2 == 0


def make_stream_id(index: int, *, client: bool, bidi: bool) -> int:
    return (index << 2) | (0 if client else 1) | (0 if bidi else 2)


@attrs.frozen
class StreamLimits:
    """What one side grants: receive windows (initial and auto-tuning cap), stream counts, and
    how much unacknowledged data a writer may buffer per stream before it should wait."""

    max_data: int = 1 << 20
    max_data_window: int = 16 << 20
    max_stream_data: int = 256 << 10
    max_stream_window: int = 4 << 20
    max_streams_bidi: int = 100
    max_streams_uni: int = 100
    send_buffer: int = 1 << 20


@attrs.frozen
class StreamOpened:
    stream_id: int


@attrs.frozen
class StreamReadable:
    """Data (or the end of the stream) can be read."""

    stream_id: int


@attrs.frozen
class StreamReset:
    """The peer abandoned its sending side; unread data is gone."""

    stream_id: int
    error_code: int


@attrs.frozen
class StopSendingRequested:
    """The peer asked us to stop sending; our side was reset with its code."""

    stream_id: int
    error_code: int


StreamEvent = StreamOpened | StreamReadable | StreamReset | StopSendingRequested


class SendStream:
    """The sending half: a buffer from the lowest unacknowledged offset to the write end.

    ``_lost`` holds ranges to retransmit; new data starts at ``_next_offset``. Acknowledged
    ranges above ``_acked_until`` wait in ``_acked`` until the gap below them closes; the dead
    prefix of the buffer is compacted in large steps, so acknowledging is O(log ranges).
    """

    __slots__ = (
        "_acked",
        "_acked_until",
        "_buf",
        "_buf_offset",
        "_fin_acked",
        "_fin_lost",
        "_fin_sent",
        "_lost",
        "_next_offset",
        "_sid_bytes",
        "credit",
        "fin_offset",
        "manager",
        "reset_acked",
        "reset_code",
        "stream_id",
    )

    def __init__(self, stream_id: int, credit: int, manager: StreamManager | None = None) -> None:
        self.stream_id = stream_id
        self._sid_bytes = encode_varint(stream_id)
        self.manager = manager
        self.credit = SendCredit(credit)
        self._buf = bytearray()
        self._buf_offset = 0
        self._acked_until = 0
        self._next_offset = 0
        self._acked = RangeSet(None)
        self._lost = RangeSet(None)
        self.fin_offset: int | None = None
        self._fin_sent = False
        self._fin_lost = False
        self._fin_acked = False
        self.reset_code: int | None = None
        self.reset_acked = False

    @property
    def write_offset(self) -> int:
        return self._buf_offset + len(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes written and not yet acknowledged."""
        return self.write_offset - self._acked_until

    @property
    def sent_offset(self) -> int:
        """The highest offset sent so far (the final size if the stream is reset)."""
        return self._next_offset

    @property
    def has_retransmit(self) -> bool:
        return self.reset_code is None and (bool(self._lost) or self._fin_lost)

    @property
    def has_new(self) -> bool:
        """New data within the stream's credit, or a FIN not yet sent."""
        if self.reset_code is not None:
            return False
        nxt = self._next_offset
        if nxt < self.write_offset:
            return self.credit.available > 0
        return self.fin_offset is not None and not self._fin_sent

    @property
    def credit_blocked(self) -> bool:
        return self._next_offset < self.write_offset and self.credit.available <= 0

    @property
    def is_done(self) -> bool:
        if self.reset_code is not None:
            return self.reset_acked
        return self._fin_acked and self._acked_until == self.fin_offset

    @property
    def settled(self) -> bool:
        """Nothing written (data, FIN, RESET_STREAM) still waits for the peer's
        acknowledgement: closing the connection now loses nothing of this half."""
        if self.reset_code is not None:
            return self.reset_acked
        return self.buffered == 0 and (self.fin_offset is None or self._fin_acked)

    def write(self, data: bytes | bytearray | memoryview, fin: bool = False) -> None:
        if self.reset_code is not None:
            raise StreamError("stream was reset")
        if self.fin_offset is not None:
            raise StreamError("stream already finished")
        self._buf += data
        if fin:
            self.fin_offset = self.write_offset

    def reset(self, error_code: int) -> bool:
        """Abandon sending; True if a RESET_STREAM must go out (not if already finished and
        acknowledged, or already reset)."""
        if self.reset_code is not None or self.is_done:
            return False
        self.reset_code = error_code
        self._lost.clear()
        self._acked.clear()
        self._buf_offset = self.write_offset
        self._buf.clear()
        return True

    def write_frame(
        self,
        out: bytearray,
        limit: int,
        conn_available: int,
        deliveries: list[tuple[Delivery, Any]],
    ) -> int | None:
        """Append one STREAM frame (a retransmission first, else new data) to ``out`` without
        exceeding ``limit``. Returns the new bytes sent (they consume connection credit), or
        None if nothing was written."""
        if self.reset_code is not None:
            return None
        room = limit - len(out)
        fixed = 1 + len(self._sid_bytes) + varint_size(room)  # type, id, length field
        fin_offset = self.fin_offset
        lost = self._lost
        if lost:
            first = lost.first()
            assert first is not None
            max_len = room - fixed - (varint_size(first[0]) if first[0] else 0)
            if max_len <= 0:
                return None
            taken = lost.shift_first(max_len)
            assert taken is not None
            start, end = taken[0], taken[1] + 1
            fin = (
                end == fin_offset and not self._fin_acked and (self._fin_lost or not self._fin_sent)
            )
            self._emit(out, start, end, fin)
            deliveries.append((self, (start, end - start, fin)))
            return 0
        nxt = self._next_offset
        if self._fin_lost and nxt == fin_offset:
            if room < fixed + varint_size(nxt):
                return None
            self._emit(out, nxt, nxt, True)
            deliveries.append((self, (nxt, 0, True)))
            return 0
        pending = self._buf_offset + len(self._buf) - nxt
        credit = self.credit
        allowed = min(pending, credit.limit - credit.used, conn_available)
        fin_ready = fin_offset is not None and not self._fin_sent
        if allowed <= 0 and not (fin_ready and pending == 0):
            return None
        length = min(allowed, room - fixed - (varint_size(nxt) if nxt else 0))
        if length < 0 or (length == 0 and not (fin_ready and pending == 0)):
            return None
        end = nxt + length
        fin = fin_ready and end == fin_offset
        self._emit(out, nxt, end, fin)
        self._next_offset = end
        credit.used += length
        deliveries.append((self, (nxt, length, fin)))
        return length

    def _emit(self, out: bytearray, start: int, end: int, fin: bool) -> None:
        ftype = STREAM_BASE | STREAM_LEN | (STREAM_FIN if fin else 0)
        if start:
            out.append(ftype | STREAM_OFF)
            out += self._sid_bytes
            out += encode_varint(start)
        else:
            out.append(ftype)
            out += self._sid_bytes
        out += encode_varint(end - start)
        if end > start:
            i = start - self._buf_offset
            view = memoryview(self._buf)
            out += view[i : i + end - start]
            view.release()
        if fin:
            self._fin_sent = True
            self._fin_lost = False

    # Delivery: the token is (offset, length, fin) of one STREAM frame.
    def on_acked(self, token: Any) -> None:
        start, length, fin = token
        if fin:
            self._fin_acked = True
            self._fin_lost = False
            if self.manager is not None and self.is_done:
                self.manager._maybe_close(self.stream_id)
        if not length or self.reset_code is not None:
            return
        lo = max(start, self._acked_until)
        hi = start + length - 1
        if lo > hi:
            return
        if self._lost:
            self._lost.remove_range(lo, hi)
        acked = self._acked
        if lo == self._acked_until:
            until = hi + 1
            # absorb acknowledged ranges the new one reaches (one, unless it spans several)
            while (first := acked.first()) is not None and first[0] <= until:
                until = max(until, first[1] + 1)
                acked.discard_below(until)
            self._acked_until = until
            dead = until - self._buf_offset
            if dead >= _COMPACT_AT and 2 * dead >= len(self._buf):
                del self._buf[:dead]
                self._buf_offset = until
            if until == self.fin_offset and self.manager is not None and self.is_done:
                self.manager._maybe_close(self.stream_id)
        else:
            acked.add_range(lo, hi)

    def on_lost(self, token: Any) -> None:
        if self.reset_code is not None:
            return
        start, length, fin = token
        if fin and not self._fin_acked:
            self._fin_lost = True
        if length:
            lo = max(start, self._acked_until)
            hi = start + length - 1
            if lo <= hi:
                if self._acked:
                    for a, b in self._acked.missing(lo, hi):
                        self._lost.add_range(a, b)
                else:
                    self._lost.add_range(lo, hi)
        if self.manager is not None and (self._lost or self._fin_lost):
            self.manager._retransmit[self.stream_id] = None


class ReceiveStream:
    """The receiving half: in-order bytes ready to read, plus out-of-order segments.

    Segments are kept disjoint (an arriving range is trimmed against its neighbours and swallows
    the ones it covers), so every byte is stored once and delivered once, in order. Memory is
    bounded by the flow-control window.
    """

    __slots__ = (
        "_contig_end",
        "_ready",
        "_ready_start",
        "_segments",
        "_starts",
        "final_size",
        "read_offset",
        "reset_code",
        "signalled",
        "stop_code",
        "stream_id",
        "window",
    )

    def __init__(self, stream_id: int, window: int, max_window: int | None = None) -> None:
        self.stream_id = stream_id
        self.window = ReceiveWindow(window, max_window)
        self._ready = bytearray()
        self._ready_start = 0
        self._contig_end = 0
        self._starts: list[int] = []
        self._segments: dict[int, bytes] = {}
        self.read_offset = 0
        self.final_size: int | None = None
        self.reset_code: int | None = None
        self.stop_code: int | None = None
        self.signalled = False

    @property
    def available(self) -> int:
        return len(self._ready) - self._ready_start

    @property
    def at_eof(self) -> bool:
        return self.final_size is not None and self.read_offset == self.final_size

    @property
    def is_done(self) -> bool:
        return self.at_eof or self.reset_code is not None

    @property
    def buffered_out_of_order(self) -> int:
        return sum(len(s) for s in self._segments.values())

    def _check_final_size(self, end: int, fin: bool) -> None:
        final = self.final_size
        if fin:
            if final is not None and final != end:
                raise FlowControlError("final size changed", FINAL_SIZE_ERROR)
            if end < self.window.highest:
                raise FlowControlError("final size below data already received", FINAL_SIZE_ERROR)
        elif final is not None and end > final:
            raise FlowControlError("data beyond the final size", FINAL_SIZE_ERROR)

    def on_data(self, offset: int, data: bytes | memoryview, fin: bool) -> int:
        """Take one STREAM frame; return how far the highest received offset advanced (for
        connection-level flow control)."""
        end = offset + len(data)
        self._check_final_size(end, fin)
        grown = self.window.on_received(end)
        if fin:
            self.final_size = end
            self.window.stop()
        if self.reset_code is not None:
            return grown
        if self.stop_code is not None:
            self.read_offset = self.window.highest
            return grown
        ce = self._contig_end
        if end <= ce:
            return grown
        if offset <= ce:
            self._ready += data[ce - offset :] if offset < ce else data
            self._contig_end = end
            if self._starts and self._starts[0] <= end:
                self._drain_segments()
        else:
            self._insert_segment(offset, data)
        return grown

    def _drain_segments(self) -> None:
        starts, segments = self._starts, self._segments
        k = 0
        ce = self._contig_end
        while k < len(starts) and starts[k] <= ce:
            s = starts[k]
            seg = segments.pop(s)
            e = s + len(seg)
            if e > ce:
                self._ready += memoryview(seg)[ce - s :]
                ce = e
            k += 1
        del starts[:k]
        self._contig_end = ce

    def _insert_segment(self, offset: int, data: bytes | memoryview) -> None:
        starts, segments = self._starts, self._segments
        end = offset + len(data)
        i = bisect.bisect_right(starts, offset)
        if i:
            prev = starts[i - 1]
            prev_end = prev + len(segments[prev])
            if prev_end >= end:
                return
            if prev_end > offset:
                data = data[prev_end - offset :]
                offset = prev_end
        j = i
        while j < len(starts) and starts[j] + len(segments[starts[j]]) <= end:
            del segments[starts[j]]
            j += 1
        del starts[i:j]
        if i < len(starts) and starts[i] < end:
            data = data[: starts[i] - offset]
        if data:
            starts.insert(i, offset)
            segments[offset] = bytes(data)

    def on_reset(self, error_code: int, final_size: int) -> tuple[int, int]:
        """The peer reset its side: returns (advance of the highest offset, bytes that will never
        be read) for connection-level flow control."""
        self._check_final_size(final_size, True)
        grown = self.window.on_received(final_size)
        self.final_size = final_size
        self.window.stop()
        if self.reset_code is not None:
            return grown, 0
        self.reset_code = error_code
        released = final_size - self.read_offset
        self._discard()
        return grown, released

    def stop(self, error_code: int) -> int:
        """We no longer want the data (STOP_SENDING): returns bytes released from the
        connection window (received but never to be read)."""
        self.stop_code = error_code
        self.signalled = True
        released = self.window.highest - self.read_offset
        self.read_offset = self.window.highest
        self._discard()
        self.window.stop()
        return released

    def _discard(self) -> None:
        self._ready.clear()
        self._ready_start = 0
        self._starts.clear()
        self._segments.clear()

    def read(self, max_bytes: int = -1) -> bytes:
        ready = self._ready
        start = self._ready_start
        avail = len(ready) - start
        n = avail if max_bytes < 0 else min(max_bytes, avail)
        if n <= 0:
            return b""
        if start == 0 and n == len(ready):
            out = bytes(ready)
            ready.clear()
        else:
            view = memoryview(ready)
            out = bytes(view[start : start + n])
            view.release()
            start += n
            if start == len(ready):
                ready.clear()
                start = 0
            elif start >= _COMPACT_AT and 2 * start >= len(ready):
                del ready[:start]
                start = 0
            self._ready_start = start
        self.read_offset += n
        return out


@attrs.define(slots=True, eq=False)
class Stream:
    stream_id: int
    send: SendStream | None
    recv: ReceiveStream | None


# control-frame delivery tokens: (kind, ...)
_MAX_DATA = 0
_MAX_STREAM_DATA = 1
_MAX_STREAMS = 2
_DATA_BLOCKED = 3
_STREAM_DATA_BLOCKED = 4
_STREAMS_BLOCKED = 5
_RESET = 6
_STOP = 7


class StreamManager:
    """All streams of one connection: opening (with limits), frames in, frames out, events.

    Feed it every stream-related frame with :meth:`handle_frame`; it raises
    :class:`FlowControlError` (with the close code) when the peer breaks a rule. The packet
    assembler calls :meth:`write_control` and :meth:`write_stream_frames`. ``rtt`` (the
    connection's estimator) lets receive windows auto-tune.
    """

    def __init__(
        self,
        *,
        is_client: bool,
        local: StreamLimits | None = None,
        peer: StreamLimits | None = None,
        scheduler: Scheduler | None = None,
        rtt: RttEstimator | None = None,
    ) -> None:
        self.is_client = is_client
        self.local = local = local if local is not None else StreamLimits()
        peer = peer if peer is not None else StreamLimits()
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.rtt = rtt
        self.send_credit = SendCredit(peer.max_data)
        self.recv_window = ReceiveWindow(local.max_data, local.max_data_window)
        self._peer_stream_data = peer.max_stream_data
        self._streams: dict[int, Stream] = {}
        self._events: collections.deque[StreamEvent] = collections.deque()
        # streams we open: count opened and the peer's limit, per kind (True = bidi)
        self._local_opened = {True: 0, False: 0}
        self._local_limit = {True: peer.max_streams_bidi, False: peer.max_streams_uni}
        self._streams_blocked_pending: dict[bool, int] = {}
        # streams the peer opens: count opened, count closed, limit we advertised
        self._peer_opened = {True: 0, False: 0}
        self._peer_closed = {True: 0, False: 0}
        self._peer_limit = {True: local.max_streams_bidi, False: local.max_streams_uni}
        self._max_streams_pending: dict[bool, bool] = {True: False, False: False}
        # ordered sets of stream ids owing something
        self._retransmit: dict[int, None] = {}
        self._max_stream_data_pending: dict[int, None] = {}
        self._stream_blocked_pending: dict[int, None] = {}
        self._reset_pending: dict[int, None] = {}
        self._stop_pending: dict[int, None] = {}

    # ------------------------------------------------------------------ application side

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

    def get(self, stream_id: int) -> Stream | None:
        return self._streams.get(stream_id)

    def __len__(self) -> int:
        return len(self._streams)

    def settled(self) -> bool:
        """Every stream's sending side is settled (see ``SendStream.settled``)."""
        return all(s.send is None or s.send.settled for s in self._streams.values())

    def can_open(self, bidi: bool = True) -> bool:
        return self._local_opened[bidi] < self._local_limit[bidi]

    def open_stream(self, bidi: bool = True, urgency: int = DEFAULT_URGENCY) -> int:
        """A new locally initiated stream id; raises StreamLimitReached (and tells the peer
        with STREAMS_BLOCKED) if the peer's MAX_STREAMS does not allow one."""
        index = self._local_opened[bidi]
        if index >= self._local_limit[bidi]:
            self._streams_blocked_pending[bidi] = self._local_limit[bidi]
            raise StreamLimitReached("the peer allows no more streams of this kind yet")
        self._local_opened[bidi] = index + 1
        sid = make_stream_id(index, client=self.is_client, bidi=bidi)
        self._create(sid)
        if urgency != DEFAULT_URGENCY:
            self.scheduler.set_urgency(sid, urgency)
        return sid

    def set_urgency(self, stream_id: int, urgency: int) -> None:
        self.scheduler.set_urgency(stream_id, urgency)

    def _send_half(self, stream_id: int) -> SendStream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.send is None:
            raise StreamError(f"stream {stream_id} cannot send")
        return stream.send

    def _recv_half(self, stream_id: int) -> ReceiveStream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.recv is None:
            raise StreamError(f"stream {stream_id} cannot receive")
        return stream.recv

    def write(
        self, stream_id: int, data: bytes | bytearray | memoryview, fin: bool = False
    ) -> None:
        """Queue data (it stays buffered until acknowledged: wait on :meth:`send_buffer_space`
        for backpressure)."""
        send = self._send_half(stream_id)
        send.write(data, fin)
        if send.has_new:
            self.scheduler.push(stream_id)
        elif send.credit_blocked:
            self._note_stream_blocked(send)

    def finish(self, stream_id: int) -> None:
        self.write(stream_id, b"", fin=True)

    def send_buffer_space(self, stream_id: int) -> int:
        return max(0, self.local.send_buffer - self._send_half(stream_id).buffered)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abandon our sending side (RESET_STREAM carries the final size)."""
        send = self._send_half(stream_id)
        if send.reset(error_code):
            self.scheduler.discard(stream_id)
            self._retransmit.pop(stream_id, None)
            self._stream_blocked_pending.pop(stream_id, None)
            self._reset_pending[stream_id] = None
        self._maybe_close(stream_id)

    def stop_sending(self, stream_id: int, error_code: int, now: float = 0.0) -> None:
        """Ask the peer to stop sending; data still arriving is dropped."""
        recv = self._recv_half(stream_id)
        if recv.is_done or recv.stop_code is not None:
            return
        released = recv.stop(error_code)
        self._consume_connection(released, now)
        self._max_stream_data_pending.pop(stream_id, None)
        self._stop_pending[stream_id] = None

    def read(self, stream_id: int, max_bytes: int = -1, now: float = 0.0) -> bytes:
        """Bytes ready in order (b"" at the end of the stream or when nothing is ready yet:
        check :meth:`at_eof`). Reading opens the flow-control windows again. A stream that
        finished and was discarded reads as b"" (its end was already reported)."""
        if stream_id not in self._streams and self._was_opened(stream_id):
            return b""
        recv = self._recv_half(stream_id)
        data = recv.read(max_bytes)
        if data:
            rtt = self._rtt_value()
            if recv.final_size is None:
                recv.window.on_consumed(len(data), now, rtt)
                if recv.window.update_pending:
                    self._max_stream_data_pending[stream_id] = None
            self._consume_connection(len(data), now)
        if recv.available == 0:
            recv.signalled = False
        if recv.is_done:
            self._maybe_close(stream_id)
        return data

    def _was_opened(self, stream_id: int) -> bool:
        bidi = is_bidirectional(stream_id)
        local = is_client_initiated(stream_id) == self.is_client
        opened = self._local_opened if local else self._peer_opened
        return stream_id >> 2 < opened[bidi]

    def at_eof(self, stream_id: int) -> bool:
        """True once everything was read (and for a stream already finished and forgotten)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return self._was_opened(stream_id)
        return stream.recv is None or stream.recv.at_eof

    def _rtt_value(self) -> float:
        return self.rtt.smoothed_rtt if self.rtt is not None else 0.1

    def _consume_connection(self, size: int, now: float) -> None:
        if size > 0:
            self.recv_window.on_consumed(size, now, self._rtt_value())

    # ------------------------------------------------------------------ stream table

    def _create(self, stream_id: int) -> Stream:
        local = is_client_initiated(stream_id) == self.is_client
        bidi = is_bidirectional(stream_id)
        send = SendStream(stream_id, self._peer_stream_data, self) if bidi or local else None
        recv = (
            ReceiveStream(stream_id, self.local.max_stream_data, self.local.max_stream_window)
            if bidi or not local
            else None
        )
        stream = Stream(stream_id, send, recv)
        self._streams[stream_id] = stream
        return stream

    def _stream_for_peer_frame(self, stream_id: int, *, receiving: bool) -> Stream | None:
        """The stream a peer frame refers to, opening peer streams as needed; None if it was
        already closed (late frames are ignored). Raises on frames that break the rules."""
        stream = self._streams.get(stream_id)
        if stream is not None and (stream.recv if receiving else stream.send) is not None:
            return stream
        local = is_client_initiated(stream_id) == self.is_client
        bidi = is_bidirectional(stream_id)
        if not bidi and local == receiving:
            raise FlowControlError(
                f"frame for the wrong direction of stream {stream_id}", STREAM_STATE_ERROR
            )
        if stream is not None:
            return stream
        index = stream_id >> 2
        if local:
            if index >= self._local_opened[bidi]:
                raise FlowControlError(f"stream {stream_id} was never opened", STREAM_STATE_ERROR)
            return None
        if index >= self._peer_limit[bidi]:
            raise FlowControlError(
                f"stream {stream_id} beyond the stream limit", STREAM_LIMIT_ERROR
            )
        if index < self._peer_opened[bidi]:
            return None
        for i in range(self._peer_opened[bidi], index + 1):
            sid = make_stream_id(i, client=not self.is_client, bidi=bidi)
            stream = self._create(sid)
            self._events.append(StreamOpened(sid))
        self._peer_opened[bidi] = index + 1
        return stream

    def _maybe_close(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.send is not None and not stream.send.is_done:
            return
        if stream.recv is not None and not stream.recv.is_done:
            return
        del self._streams[stream_id]
        self.scheduler.forget(stream_id)
        for pending in (
            self._retransmit,
            self._max_stream_data_pending,
            self._stream_blocked_pending,
            self._stop_pending,
        ):
            pending.pop(stream_id, None)
        if is_client_initiated(stream_id) != self.is_client:
            bidi = is_bidirectional(stream_id)
            self._peer_closed[bidi] += 1
            initial = self.local.max_streams_bidi if bidi else self.local.max_streams_uni
            if self._peer_closed[bidi] + initial - self._peer_limit[bidi] >= max(1, initial // 2):
                self._max_streams_pending[bidi] = True

    # ------------------------------------------------------------------ frames in

    def handle_frame(self, frame: AnyStreamFrame, now: float = 0.0) -> None:
        if isinstance(frame, StreamFrame):
            self._on_stream(frame)
        elif isinstance(frame, MaxStreamData):
            stream = self._stream_for_peer_frame(frame.stream_id, receiving=False)
            if stream is not None and stream.send is not None:
                send = stream.send
                if send.credit.update(frame.maximum):
                    self._stream_blocked_pending.pop(frame.stream_id, None)
                    if send.has_new:
                        self.scheduler.push(frame.stream_id)
        elif isinstance(frame, MaxData):
            self.send_credit.update(frame.maximum)
        elif isinstance(frame, MaxStreams):
            if frame.maximum > self._local_limit[frame.bidi]:
                self._local_limit[frame.bidi] = frame.maximum
                self._streams_blocked_pending.pop(frame.bidi, None)
        elif isinstance(frame, ResetStream):
            self._on_reset(frame, now)
        elif isinstance(frame, StopSending):
            stream = self._stream_for_peer_frame(frame.stream_id, receiving=False)
            if stream is not None and stream.send is not None:
                if stream.send.reset_code is None and not stream.send.is_done:
                    self._events.append(StopSendingRequested(frame.stream_id, frame.error_code))
                self.reset_stream(frame.stream_id, frame.error_code)
        elif isinstance(frame, StreamDataBlocked):
            self._stream_for_peer_frame(frame.stream_id, receiving=True)
        elif isinstance(frame, (DataBlocked, StreamsBlocked)):
            pass  # informational: our windows move when the application reads
        else:  # pragma: no cover - the union is exhausted above
            raise TypeError(f"not a stream frame: {frame!r}")

    def _on_stream(self, frame: StreamFrame) -> None:
        stream = self._stream_for_peer_frame(frame.stream_id, receiving=True)
        if stream is None or stream.recv is None:
            return
        recv = stream.recv
        grown = recv.on_data(frame.offset, frame.data, frame.fin)
        if grown:
            window = self.recv_window
            window.on_received(window.highest + grown)
            if recv.stop_code is not None:
                self._consume_connection(grown, 0.0)
        self._signal(recv)

    def _signal(self, recv: ReceiveStream) -> None:
        if not recv.signalled and (recv.available or recv.at_eof):
            recv.signalled = True
            self._events.append(StreamReadable(recv.stream_id))
        if recv.final_size is not None:
            self._max_stream_data_pending.pop(recv.stream_id, None)
        if recv.at_eof:
            self._maybe_close(recv.stream_id)

    def _on_reset(self, frame: ResetStream, now: float) -> None:
        stream = self._stream_for_peer_frame(frame.stream_id, receiving=True)
        if stream is None or stream.recv is None:
            return
        recv = stream.recv
        was_reset = recv.reset_code is not None
        grown, released = recv.on_reset(frame.error_code, frame.final_size)
        if grown:
            window = self.recv_window
            window.on_received(window.highest + grown)
        self._consume_connection(released, now)
        self._max_stream_data_pending.pop(frame.stream_id, None)
        self._stop_pending.pop(frame.stream_id, None)
        if not was_reset:
            self._events.append(StreamReset(frame.stream_id, frame.error_code))
        self._maybe_close(frame.stream_id)

    # ------------------------------------------------------------------ frames out

    def has_control(self) -> bool:
        return bool(
            self.recv_window.update_pending
            or self.send_credit.blocked_pending
            or self._max_stream_data_pending
            or self._reset_pending
            or self._stop_pending
            or self._stream_blocked_pending
            or self._streams_blocked_pending
            or self._max_streams_pending[True]
            or self._max_streams_pending[False]
        )

    def has_work(self) -> bool:
        """Anything ack-eliciting to send (control frames, retransmissions, new data)."""
        return (
            bool(self._retransmit)
            or (bool(self.scheduler) and self.send_credit.available > 0)
            or self.has_control()
        )

    def _note_stream_blocked(self, send: SendStream) -> None:
        send.credit.note_blocked()
        if send.credit.blocked_pending:
            self._stream_blocked_pending[send.stream_id] = None

    def write_control(
        self, out: bytearray, limit: int, now: float, deliveries: list[tuple[Delivery, Any]]
    ) -> bool:
        """Append the control frames that fit; True if any was written."""
        if not self.has_control():
            return False
        start = len(out)

        def put(frame: AnyStreamFrame, token: tuple[Any, ...]) -> bool:
            encoded = encode_stream_frame(frame)
            if len(out) + len(encoded) > limit:
                return False
            out.extend(encoded)
            deliveries.append((self, token))
            return True

        window = self.recv_window
        if window.update_pending and limit - len(out) >= 9:
            value = window.take_update(now)
            if value is not None:
                put(MaxData(value), (_MAX_DATA, value))
        for bidi in (True, False):
            if self._max_streams_pending[bidi] and limit - len(out) >= 9:
                self._max_streams_pending[bidi] = False
                initial = self.local.max_streams_bidi if bidi else self.local.max_streams_uni
                self._peer_limit[bidi] = max(
                    self._peer_limit[bidi], self._peer_closed[bidi] + initial
                )
                value = self._peer_limit[bidi]
                put(MaxStreams(bidi, value), (_MAX_STREAMS, bidi, value))
        for sid in list(self._reset_pending):
            stream = self._streams.get(sid)
            send = stream.send if stream is not None else None
            if send is None or send.reset_code is None:
                del self._reset_pending[sid]
                continue
            if not put(ResetStream(sid, send.reset_code, send.sent_offset), (_RESET, sid)):
                break
            del self._reset_pending[sid]
        for sid in list(self._stop_pending):
            stream = self._streams.get(sid)
            recv = stream.recv if stream is not None else None
            if recv is None or recv.stop_code is None:
                del self._stop_pending[sid]
                continue
            if not put(StopSending(sid, recv.stop_code), (_STOP, sid)):
                break
            del self._stop_pending[sid]
        for sid in list(self._max_stream_data_pending):
            stream = self._streams.get(sid)
            recv = stream.recv if stream is not None else None
            if recv is None or recv.final_size is not None or recv.stop_code is not None:
                del self._max_stream_data_pending[sid]
                continue
            if limit - len(out) < 17:
                break
            del self._max_stream_data_pending[sid]
            value = recv.window.take_update(now)
            if value is not None:
                put(MaxStreamData(sid, value), (_MAX_STREAM_DATA, sid, value))
        blocked = self.send_credit.take_blocked()
        if blocked is not None and not put(DataBlocked(blocked), (_DATA_BLOCKED, blocked)):
            self.send_credit.blocked_pending = True
        for sid in list(self._stream_blocked_pending):
            stream = self._streams.get(sid)
            send = stream.send if stream is not None else None
            value = send.credit.take_blocked() if send is not None else None
            if send is None or value is None:
                del self._stream_blocked_pending[sid]
                continue
            if not put(StreamDataBlocked(sid, value), (_STREAM_DATA_BLOCKED, sid, value)):
                send.credit.blocked_pending = True
                break
            del self._stream_blocked_pending[sid]
        for bidi, value in list(self._streams_blocked_pending.items()):
            if not put(StreamsBlocked(bidi, value), (_STREAMS_BLOCKED, bidi, value)):
                break
            del self._streams_blocked_pending[bidi]
        return len(out) > start

    def write_stream_frames(
        self, out: bytearray, limit: int, deliveries: list[tuple[Delivery, Any]]
    ) -> bool:
        """Fill ``out`` up to ``limit`` with STREAM frames: retransmissions first, then new data
        in scheduler order within flow-control credit. True if any frame was written."""
        wrote = False
        streams = self._streams
        retransmit = self._retransmit
        while retransmit and limit - len(out) >= MIN_STREAM_FRAME_ROOM:
            sid = next(iter(retransmit))
            stream = streams.get(sid)
            send = stream.send if stream is not None else None
            if send is None or not send.has_retransmit:
                del retransmit[sid]
                continue
            if send.write_frame(out, limit, 0, deliveries) is None:
                break
            wrote = True
            if not send.has_retransmit:
                del retransmit[sid]
        scheduler = self.scheduler
        credit = self.send_credit
        while limit - len(out) >= MIN_STREAM_FRAME_ROOM:
            head = scheduler.peek()
            if head is None:
                break
            sid = head
            stream = streams.get(sid)
            send = stream.send if stream is not None else None
            if send is None:
                scheduler.discard(sid)
                continue
            before = len(out)
            sent = send.write_frame(out, limit, credit.limit - credit.used, deliveries)
            if sent is None:
                if not send.has_new or send.credit_blocked:
                    scheduler.discard(sid)
                    if send.credit_blocked:
                        self._note_stream_blocked(send)
                    continue
                if credit.available <= 0:
                    credit.note_blocked()
                break
            credit.used += sent
            wrote = True
            more = send.has_new
            scheduler.charge(sid, len(out) - before, more)
            if not more and send.credit_blocked:
                self._note_stream_blocked(send)
        return wrote

    # Delivery for control frames and resets: tokens are (kind, ...).
    def on_acked(self, token: Any) -> None:
        if token[0] == _RESET:
            stream = self._streams.get(token[1])
            if stream is not None and stream.send is not None:
                stream.send.reset_acked = True
                self._maybe_close(token[1])

    def on_lost(self, token: Any) -> None:
        kind = token[0]
        if kind == _MAX_DATA:
            self.recv_window.on_lost(token[1])
        elif kind == _MAX_STREAM_DATA:
            stream = self._streams.get(token[1])
            recv = stream.recv if stream is not None else None
            if recv is not None and recv.final_size is None and recv.stop_code is None:
                recv.window.on_lost(token[2])
                if recv.window.update_pending:
                    self._max_stream_data_pending[token[1]] = None
        elif kind == _MAX_STREAMS:
            if token[2] == self._peer_limit[token[1]]:
                self._max_streams_pending[token[1]] = True
        elif kind == _RESET:
            stream = self._streams.get(token[1])
            if stream is not None and stream.send is not None and not stream.send.reset_acked:
                self._reset_pending[token[1]] = None
        elif kind == _STOP:
            stream = self._streams.get(token[1])
            if stream is not None and stream.recv is not None and stream.recv.reset_code is None:
                self._stop_pending[token[1]] = None
        # BLOCKED frames are advisory: a lost one is not repeated
