"""Frames carried inside protected MXP packets, each with an explicit type code.

Layouts are QUIC-like (varints everywhere) so the ACK frame can later serve reliable streams
unchanged. Codes 0x08-0x0f are reserved for STREAM frames; an unknown code is a protocol error
because a frame's length cannot be known without understanding its type.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs

from intentus_trio.mxp.varint import DecodeError, decode_varint, encode_varint, varint_size
from intentus_trio.protocol._fastnew import fast_constructor


class FrameType(enum.IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    CLOSE = 0x03
    DATAGRAM = 0x04
    # 0x08-0x0f: STREAM (reserved)


class FrameError(DecodeError):
    """A frame was malformed or of an unknown type."""


@attrs.frozen
class Padding:
    length: int = 1


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Ack:
    """Acknowledged packet numbers as inclusive (first, last) ranges, highest range first.

    ``delay`` is how long (in microseconds) the sender held the largest one before acking.
    """

    ranges: tuple[tuple[int, int], ...]
    delay: int = 0

    @property
    def largest(self) -> int:
        return self.ranges[0][1]

    def __contains__(self, pn: object) -> bool:
        return any(lo <= pn <= hi for lo, hi in self.ranges)  # type: ignore[operator]


@attrs.frozen
class Close:
    error_code: int
    reason: str = ""


@attrs.frozen
class Datagram:
    data: bytes


Frame = Padding | Ping | Ack | Close | Datagram

ACK_ELICITING = (Ping, Datagram)

# plain ints: comparing with an IntEnum member looks it up on the class on every frame
_PADDING = int(FrameType.PADDING)
_PING = int(FrameType.PING)
_ACK = int(FrameType.ACK)
_CLOSE = int(FrameType.CLOSE)
_DATAGRAM = int(FrameType.DATAGRAM)
# every field given, already checked by the decoder: no frozen-attrs __init__ per frame
_new_ack = fast_constructor(Ack)
_new_datagram = fast_constructor(Datagram)


def _check_ranges(ranges: Sequence[tuple[int, int]]) -> None:
    if not ranges:
        raise ValueError("an ACK needs at least one range")
    prev_lo: int | None = None
    for lo, hi in ranges:
        if lo > hi or lo < 0:
            raise ValueError("bad ACK range")
        if prev_lo is not None and hi + 1 >= prev_lo:
            raise ValueError("ACK ranges must be descending and disjoint")
        prev_lo = lo


def encode_ack(ranges: Sequence[tuple[int, int]], delay: int) -> bytes:
    """An ACK frame from ranges already known to be well formed (descending, disjoint): the
    ACK tracker writes one per outgoing ACK without building and checking an ``Ack``."""
    hi0 = ranges[0][1]
    lo0 = ranges[0][0]
    out = bytearray(b"\x02")
    out += encode_varint(hi0)
    out += encode_varint(delay)
    out += encode_varint(len(ranges) - 1)
    out += encode_varint(hi0 - lo0)
    prev_lo = lo0
    for lo, hi in ranges[1:]:
        out += encode_varint(prev_lo - hi - 2)
        out += encode_varint(hi - lo)
        prev_lo = lo
    return bytes(out)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, Datagram):
        return b"\x04" + encode_varint(len(frame.data)) + frame.data
    if isinstance(frame, Ack):
        _check_ranges(frame.ranges)
        return encode_ack(frame.ranges, frame.delay)
    if isinstance(frame, Ping):
        return b"\x01"
    if isinstance(frame, Padding):
        return bytes(frame.length)
    if isinstance(frame, Close):
        reason = frame.reason.encode("utf-8")
        return b"\x03" + encode_varint(frame.error_code) + encode_varint(len(reason)) + reason
    raise TypeError(f"not a frame: {frame!r}")


def encode_frames(frames: Iterable[Frame]) -> bytes:
    return b"".join(encode_frame(f) for f in frames)


def frame_size(frame: Frame) -> int:
    if isinstance(frame, Datagram):
        return 1 + varint_size(len(frame.data)) + len(frame.data)
    return len(encode_frame(frame))


def datagram_overhead(length: int) -> int:
    return 1 + varint_size(length)


def decode_base_frame(
    ftype: int, data: bytes | memoryview, pos: int, end: int
) -> tuple[Frame, int]:
    """Decode one secure-channel frame whose type byte was at ``pos - 1``."""
    if ftype == _ACK:
        largest, pos = decode_varint(data, pos)
        delay, pos = decode_varint(data, pos)
        count, pos = decode_varint(data, pos)
        first, pos = decode_varint(data, pos)
        if first > largest or count > end:
            raise FrameError("bad ACK frame")
        hi = largest
        lo = largest - first
        ranges = [(lo, hi)]
        for _ in range(count):
            gap, pos = decode_varint(data, pos)
            length, pos = decode_varint(data, pos)
            hi = lo - gap - 2
            lo = hi - length
            if lo < 0:
                raise FrameError("ACK range below zero")
            ranges.append((lo, hi))
        return _new_ack(tuple(ranges), delay), pos
    if ftype == _PADDING:
        start = pos - 1
        while pos < end and data[pos] == 0:
            pos += 1
        return Padding(pos - start), pos
    if ftype == _PING:
        return Ping(), pos
    if ftype == _DATAGRAM:
        length, pos = decode_varint(data, pos)
        if pos + length > end:
            raise FrameError("truncated DATAGRAM frame")
        return _new_datagram(bytes(data[pos : pos + length])), pos + length
    if ftype == _CLOSE:
        code, pos = decode_varint(data, pos)
        length, pos = decode_varint(data, pos)
        if pos + length > end:
            raise FrameError("truncated CLOSE frame")
        try:
            reason = bytes(data[pos : pos + length]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("CLOSE reason is not UTF-8") from exc
        return Close(code, reason), pos + length
    raise FrameError(f"unknown frame type 0x{ftype:02x}")


def decode_frames(data: bytes | memoryview) -> list[Frame]:
    """Parse a packet payload of secure-channel frames; raise FrameError on anything malformed."""
    frames: list[Frame] = []
    pos = 0
    end = len(data)
    try:
        while pos < end:
            frame, pos = decode_base_frame(data[pos], data, pos + 1, end)
            frames.append(frame)
    except FrameError:
        raise
    except DecodeError as exc:
        raise FrameError(str(exc)) from exc
    return frames
