"""Round trips and malformed input for the stream and flow-control frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.mxp.frames import Ack, Close, Datagram, FrameError, Padding, Ping
from intentus_trio.mxp.stream_frames import (
    AnyFrame,
    DataBlocked,
    MaxData,
    MaxStreamData,
    MaxStreams,
    ResetStream,
    StopSending,
    StreamDataBlocked,
    StreamFrame,
    StreamsBlocked,
    decode_frame,
    decode_payload,
    encode_stream_frame,
    is_ack_eliciting,
    stream_header,
    stream_header_size,
    stream_overhead,
)
from intentus_trio.mxp.varint import VARINT_MAX

v62 = st.integers(0, VARINT_MAX)
sid = st.integers(0, 2**40)


def _ack_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    hi = draw(st.integers(0, 2**30))
    ranges: list[tuple[int, int]] = []
    while hi >= 0 and len(ranges) < 5:
        lo = hi - draw(st.integers(0, min(hi, 50)))
        ranges.append((lo, hi))
        hi = lo - 2 - draw(st.integers(0, 50))
    return tuple(ranges)


acks = st.composite(lambda draw: Ack(_ack_ranges(draw), draw(st.integers(0, 10**6))))()

frames: st.SearchStrategy[AnyFrame] = st.one_of(
    st.builds(StreamFrame, sid, st.integers(0, 2**50), st.binary(max_size=300), st.booleans()),
    st.builds(MaxData, v62),
    st.builds(MaxStreamData, sid, v62),
    st.builds(MaxStreams, st.booleans(), v62),
    st.builds(DataBlocked, v62),
    st.builds(StreamDataBlocked, sid, v62),
    st.builds(StreamsBlocked, st.booleans(), v62),
    st.builds(ResetStream, sid, v62, v62),
    st.builds(StopSending, sid, v62),
    st.just(Ping()),
    st.builds(Datagram, st.binary(max_size=100)),
    st.builds(Close, st.integers(0, 2**20), st.text(max_size=20)),
    acks,
)


@given(st.lists(frames, max_size=12))
def test_payload_round_trip(items: list[AnyFrame]) -> None:
    payload = b"".join(encode_stream_frame(f) for f in items)
    assert decode_payload(payload) == items


@given(frames)
def test_single_frame_round_trip_and_position(frame: AnyFrame) -> None:
    encoded = encode_stream_frame(frame)
    decoded, pos = decode_frame(b"\x01" + encoded + b"\x01", 1)
    assert decoded == frame
    assert pos == 1 + len(encoded)


@given(st.lists(frames, min_size=1, max_size=6), st.data())
def test_truncation_never_passes_silently(items: list[AnyFrame], data: st.DataObject) -> None:
    payload = b"".join(encode_stream_frame(f) for f in items)
    cut = data.draw(st.integers(0, len(payload) - 1))
    try:
        decoded = decode_payload(payload[:cut])
    except FrameError:
        return
    # a cut can only land on a frame boundary or inside data without a length field
    assert len(decoded) <= len(items)


@given(sid, st.integers(0, 2**50), st.integers(0, 2000), st.booleans())
def test_stream_header_sizes(stream_id: int, offset: int, length: int, fin: bool) -> None:
    header = stream_header(stream_id, offset, length, fin)
    assert len(header) == stream_header_size(stream_id, offset, length)
    assert stream_overhead(stream_id, offset, length) >= len(header)
    frame, _ = decode_frame(header + bytes(length), 0)
    assert isinstance(frame, StreamFrame)
    assert (frame.stream_id, frame.offset, len(frame.data), frame.fin) == (
        stream_id,
        offset,
        length,
        fin,
    )


def test_stream_frame_without_length_runs_to_the_end() -> None:
    # type 0x0c: OFF set, LEN clear, FIN clear
    payload = bytes([0x0C, 0x04, 0x05]) + b"abc"
    (frame,) = decode_payload(payload)
    assert frame == StreamFrame(4, 5, b"abc")
    (frame,) = decode_payload(bytes([0x09, 0x00]))
    assert frame == StreamFrame(0, 0, b"", fin=True)


def test_frame_codes_are_documented_values() -> None:
    assert encode_stream_frame(MaxData(1))[0] == 0x10
    assert encode_stream_frame(MaxStreamData(0, 1))[0] == 0x11
    assert encode_stream_frame(MaxStreams(True, 1))[0] == 0x12
    assert encode_stream_frame(MaxStreams(False, 1))[0] == 0x13
    assert encode_stream_frame(DataBlocked(1))[0] == 0x14
    assert encode_stream_frame(StreamDataBlocked(0, 1))[0] == 0x15
    assert encode_stream_frame(StreamsBlocked(True, 1))[0] == 0x16
    assert encode_stream_frame(StreamsBlocked(False, 1))[0] == 0x17
    assert encode_stream_frame(ResetStream(0, 1, 2))[0] == 0x18
    assert encode_stream_frame(StopSending(0, 1))[0] == 0x19
    assert encode_stream_frame(StreamFrame(0, 0, b"x"))[0] == 0x0A


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x00\x05ab",  # length beyond the payload
        b"\x11\x00",  # MAX_STREAM_DATA without its maximum
        b"\x18\x00\x00",  # RESET_STREAM without final size
        b"\x1a",  # unknown type
        b"\x0e" + b"\xff" * 8 + b"\x00",  # offset + length beyond 2^62
    ],
)
def test_malformed(payload: bytes) -> None:
    with pytest.raises(FrameError):
        decode_payload(payload)


def test_ack_eliciting() -> None:
    assert not is_ack_eliciting(Ack(((0, 0),)))
    assert not is_ack_eliciting(Padding(3))
    assert not is_ack_eliciting(Close(0))
    assert is_ack_eliciting(Ping())
    assert is_ack_eliciting(MaxData(5))
    assert is_ack_eliciting(StreamFrame(0, 0, b""))


def test_stream_frame_equality_compares_bytes() -> None:
    view = memoryview(b"xxabc")[2:]
    assert StreamFrame(1, 2, view) == StreamFrame(1, 2, b"abc")
    assert StreamFrame(1, 2, b"abc") != StreamFrame(1, 2, b"abd")
    assert hash(StreamFrame(1, 2, view)) == hash(StreamFrame(1, 2, b"abc"))
    assert StreamFrame(0, 3, b"ab").end == 5


@given(sid, st.integers(0, 2**50), st.binary(min_size=1, max_size=300), st.booleans())
def test_every_cut_of_a_stream_frame_is_rejected(
    stream_id: int, offset: int, data: bytes, fin: bool
) -> None:
    encoded = encode_stream_frame(StreamFrame(stream_id, offset, data, fin))
    for cut in range(1, len(encoded)):
        with pytest.raises(FrameError):
            decode_payload(encoded[:cut])
