"""Frames for reliable streams and flow control, in the QUIC-like layout of ``frames.py``.

Type codes (one byte, every field after it a varint unless stated):

====================  ===========  ==========================================================
code                  frame        fields
====================  ===========  ==========================================================
0x08-0x0f             STREAM       stream id, [offset if 0x04], [length if 0x02], data;
                                   0x01 = FIN. Without 0x02 the data runs to the packet end.
0x10                  MAX_DATA             maximum (connection receive limit, bytes)
0x11                  MAX_STREAM_DATA      stream id, maximum
0x12 / 0x13           MAX_STREAMS          maximum cumulative count (bidi / uni)
0x14                  DATA_BLOCKED         limit the sender is blocked at
0x15                  STREAM_DATA_BLOCKED  stream id, limit
0x16 / 0x17           STREAMS_BLOCKED      limit (bidi / uni)
0x18                  RESET_STREAM         stream id, application error code, final size
0x19                  STOP_SENDING         stream id, application error code
====================  ===========  ==========================================================

All of them are ack-eliciting. ``decode_payload`` parses a whole packet payload holding these
and the frames of ``frames.py`` (one loop, so the dispatcher can adopt it as is).
"""

from __future__ import annotations

import enum

import attrs

from intentus_trio.mxp.frames import (
    Ack,
    Close,
    Frame,
    FrameError,
    Padding,
    decode_base_frame,
    encode_frame,
)
from intentus_trio.mxp.varint import DecodeError, decode_varint, encode_varint, varint_size

STREAM_BASE = 0x08
STREAM_FIN = 0x01
STREAM_LEN = 0x02
STREAM_OFF = 0x04
MAX_STREAM_ID = (1 << 62) - 1


class StreamFrameType(enum.IntEnum):
    STREAM = 0x08
    MAX_DATA = 0x10
    MAX_STREAM_DATA = 0x11
    MAX_STREAMS_BIDI = 0x12
    MAX_STREAMS_UNI = 0x13
    DATA_BLOCKED = 0x14
    STREAM_DATA_BLOCKED = 0x15
    STREAMS_BLOCKED_BIDI = 0x16
    STREAMS_BLOCKED_UNI = 0x17
    RESET_STREAM = 0x18
    STOP_SENDING = 0x19


@attrs.frozen(eq=False)
class StreamFrame:
    """``data`` is a view into the packet on decode; compare with ``bytes(frame.data)``."""

    stream_id: int
    offset: int
    data: bytes | memoryview
    fin: bool = False

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamFrame):
            return NotImplemented
        return (self.stream_id, self.offset, self.fin) == (
            other.stream_id,
            other.offset,
            other.fin,
        ) and bytes(self.data) == bytes(other.data)

    def __hash__(self) -> int:
        return hash((self.stream_id, self.offset, self.fin, bytes(self.data)))


@attrs.frozen
class MaxData:
    maximum: int


@attrs.frozen
class MaxStreamData:
    stream_id: int
    maximum: int


@attrs.frozen
class MaxStreams:
    bidi: bool
    maximum: int


@attrs.frozen
class DataBlocked:
    limit: int


@attrs.frozen
class StreamDataBlocked:
    stream_id: int
    limit: int


@attrs.frozen
class StreamsBlocked:
    bidi: bool
    limit: int


@attrs.frozen
class ResetStream:
    stream_id: int
    error_code: int
    final_size: int


@attrs.frozen
class StopSending:
    stream_id: int
    error_code: int


StreamControlFrame = (
    MaxData
    | MaxStreamData
    | MaxStreams
    | DataBlocked
    | StreamDataBlocked
    | StreamsBlocked
    | ResetStream
    | StopSending
)
AnyStreamFrame = StreamFrame | StreamControlFrame
STREAM_FRAME_CLASSES = (
    StreamFrame,
    MaxData,
    MaxStreamData,
    MaxStreams,
    DataBlocked,
    StreamDataBlocked,
    StreamsBlocked,
    ResetStream,
    StopSending,
)
AnyFrame = Frame | AnyStreamFrame


def stream_header(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """Type byte, id, offset (if non-zero) and length of a STREAM frame: the hot path writes
    this and then the data itself, without building a frame object."""
    ftype = STREAM_BASE | STREAM_LEN | (STREAM_FIN if fin else 0)
    if offset:
        return (
            bytes((ftype | STREAM_OFF,))
            + encode_varint(stream_id)
            + encode_varint(offset)
            + encode_varint(length)
        )
    return bytes((ftype,)) + encode_varint(stream_id) + encode_varint(length)


def stream_header_size(stream_id: int, offset: int, length: int) -> int:
    size = 1 + varint_size(stream_id) + varint_size(length)
    return size + varint_size(offset) if offset else size


def stream_overhead(stream_id: int, offset: int, room: int) -> int:
    """Header bytes of the largest STREAM frame that fits ``room`` (length field sized for it)."""
    return 1 + varint_size(stream_id) + (varint_size(offset) if offset else 0) + varint_size(room)


def encode_stream_frame(frame: AnyFrame) -> bytes:
    """Encode any frame, the ones of ``frames.py`` included."""
    if isinstance(frame, StreamFrame):
        return stream_header(frame.stream_id, frame.offset, len(frame.data), frame.fin) + bytes(
            frame.data
        )
    if isinstance(frame, MaxData):
        return b"\x10" + encode_varint(frame.maximum)
    if isinstance(frame, MaxStreamData):
        return b"\x11" + encode_varint(frame.stream_id) + encode_varint(frame.maximum)
    if isinstance(frame, MaxStreams):
        return (b"\x12" if frame.bidi else b"\x13") + encode_varint(frame.maximum)
    if isinstance(frame, DataBlocked):
        return b"\x14" + encode_varint(frame.limit)
    if isinstance(frame, StreamDataBlocked):
        return b"\x15" + encode_varint(frame.stream_id) + encode_varint(frame.limit)
    if isinstance(frame, StreamsBlocked):
        return (b"\x16" if frame.bidi else b"\x17") + encode_varint(frame.limit)
    if isinstance(frame, ResetStream):
        return (
            b"\x18"
            + encode_varint(frame.stream_id)
            + encode_varint(frame.error_code)
            + encode_varint(frame.final_size)
        )
    if isinstance(frame, StopSending):
        return b"\x19" + encode_varint(frame.stream_id) + encode_varint(frame.error_code)
    return encode_frame(frame)


def is_ack_eliciting(frame: AnyFrame) -> bool:
    return not isinstance(frame, (Ack, Padding, Close))


def decode_frame(data: bytes | memoryview, pos: int) -> tuple[AnyFrame, int]:
    """Decode the frame starting at ``pos``; return it and the position after it."""
    try:
        return _decode_frame(data, pos)
    except FrameError:
        raise
    except DecodeError as exc:
        raise FrameError(str(exc)) from exc
    except IndexError as exc:  # the inline varint fast paths ran off the end
        raise FrameError("truncated frame") from exc


def decode_payload(data: bytes | memoryview) -> list[AnyFrame]:
    """Parse a whole packet payload; raise FrameError on anything malformed."""
    view = memoryview(data)
    frames: list[AnyFrame] = []
    pos = 0
    end = len(view)
    try:
        while pos < end:
            frame, pos = _decode_frame(view, pos)
            frames.append(frame)
    except FrameError:
        raise
    except DecodeError as exc:
        raise FrameError(str(exc)) from exc
    except IndexError as exc:  # the inline varint fast paths ran off the end
        raise FrameError("truncated frame") from exc
    return frames


def _decode_frame(data: bytes | memoryview, pos: int) -> tuple[AnyFrame, int]:
    end = len(data)
    ftype = data[pos]
    pos += 1
    if ftype < STREAM_BASE:  # the secure channel's own frames (ACK, DATAGRAM, PING, ...)
        return decode_base_frame(ftype, data, pos, end)
    if STREAM_BASE <= ftype <= 0x0F:
        stream_id = data[pos] if pos < end else 0xFF
        if stream_id < 0x40:  # one-byte id: the common case, without a call
            pos += 1
        else:
            stream_id, pos = decode_varint(data, pos)
        offset = 0
        if ftype & STREAM_OFF:
            if data[pos] >> 6 == 2 and pos + 4 <= end:  # four-byte offset, without a call
                offset = int.from_bytes(data[pos : pos + 4], "big") & 0x3FFF_FFFF
                pos += 4
            else:
                offset, pos = decode_varint(data, pos)
        if ftype & STREAM_LEN:
            if data[pos] >> 6 == 1:  # two-byte length: the common case, without a call
                length = ((data[pos] & 0x3F) << 8) | data[pos + 1]
                pos += 2
            else:
                length, pos = decode_varint(data, pos)
            if pos + length > end:
                raise FrameError("truncated STREAM frame")
        else:
            length = end - pos
        if offset + length > MAX_STREAM_ID:
            raise FrameError("STREAM frame beyond the largest offset")
        view = data[pos : pos + length]
        return StreamFrame(stream_id, offset, view, bool(ftype & STREAM_FIN)), pos + length
    if ftype == StreamFrameType.MAX_DATA:
        value, pos = decode_varint(data, pos)
        return MaxData(value), pos
    if ftype == StreamFrameType.MAX_STREAM_DATA:
        sid, pos = decode_varint(data, pos)
        value, pos = decode_varint(data, pos)
        return MaxStreamData(sid, value), pos
    if ftype in (StreamFrameType.MAX_STREAMS_BIDI, StreamFrameType.MAX_STREAMS_UNI):
        value, pos = decode_varint(data, pos)
        return MaxStreams(ftype == StreamFrameType.MAX_STREAMS_BIDI, value), pos
    if ftype == StreamFrameType.DATA_BLOCKED:
        value, pos = decode_varint(data, pos)
        return DataBlocked(value), pos
    if ftype == StreamFrameType.STREAM_DATA_BLOCKED:
        sid, pos = decode_varint(data, pos)
        value, pos = decode_varint(data, pos)
        return StreamDataBlocked(sid, value), pos
    if ftype in (StreamFrameType.STREAMS_BLOCKED_BIDI, StreamFrameType.STREAMS_BLOCKED_UNI):
        value, pos = decode_varint(data, pos)
        return StreamsBlocked(ftype == StreamFrameType.STREAMS_BLOCKED_BIDI, value), pos
    if ftype == StreamFrameType.RESET_STREAM:
        sid, pos = decode_varint(data, pos)
        code, pos = decode_varint(data, pos)
        size, pos = decode_varint(data, pos)
        return ResetStream(sid, code, size), pos
    if ftype == StreamFrameType.STOP_SENDING:
        sid, pos = decode_varint(data, pos)
        code, pos = decode_varint(data, pos)
        return StopSending(sid, code), pos
    return decode_base_frame(ftype, data, pos, end)
