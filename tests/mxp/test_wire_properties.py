"""Property tests for the MXP wire pieces: varints, packet numbers, frames, replay window,
packet and header protection."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.mxp.frames import (
    Ack,
    Close,
    Datagram,
    Frame,
    FrameError,
    Padding,
    Ping,
    decode_frames,
    encode_frame,
    encode_frames,
    frame_size,
)
from intentus_trio.mxp.keyupdate import OneRttKeys, Opened
from intentus_trio.mxp.packet import (
    CID_LEN,
    SHORT_PN_OFFSET,
    PacketError,
    PacketType,
    decode_packet_number,
    destination_cid,
    encode_long_packet,
    encode_packet_number,
    parse_long_packet,
)
from intentus_trio.mxp.protection import (
    MAX_PACKET,
    MIN_SHORT_PACKET,
    TAG_LEN,
    HeaderProtector,
    remove_header_protection,
)
from intentus_trio.mxp.rangeset import RangeSet
from intentus_trio.mxp.replay import ReplayWindow
from intentus_trio.mxp.varint import VARINT_MAX, DecodeError, decode_varint, encode_varint

DCID = bytes(range(CID_LEN))


@given(st.integers(0, VARINT_MAX))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw + b"junk", 0) == (value, len(raw))
    with pytest.raises(DecodeError):
        decode_varint(raw[:-1], 0) if len(raw) > 1 else decode_varint(b"", 0)


def test_varint_rejects_out_of_range() -> None:
    for bad in (-1, VARINT_MAX + 1):
        with pytest.raises(ValueError):
            encode_varint(bad)


@given(
    largest_acked=st.integers(0, 2**40),
    gap=st.integers(1, 2**30),
    extra_received=st.integers(0, 2**30),
)
def test_packet_number_truncation_round_trip(
    largest_acked: int, gap: int, extra_received: int
) -> None:
    full = largest_acked + gap
    try:
        truncated, nbytes = encode_packet_number(full, largest_acked)
    except ValueError:
        assert gap >= 2**31
        return
    # The receiver has seen anything between largest_acked and full - 1.
    largest_received = largest_acked + min(extra_received, gap - 1)
    assert decode_packet_number(largest_received, truncated, nbytes * 8) == full


def test_packet_number_rfc_examples() -> None:
    assert decode_packet_number(0xA82F30EA, 0x9B32, 16) == 0xA82F9B32
    assert encode_packet_number(0xAC5C02, 0xABE8B3) == (0x5C02, 2)
    assert encode_packet_number(0xACE8FE, 0xABE8B3) == (0xACE8FE, 3)
    assert encode_packet_number(0, None) == (0, 1)


frames_strategy: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Ping),
    st.builds(Datagram, st.binary(max_size=300)),
    st.builds(Close, st.integers(0, VARINT_MAX), st.text(max_size=50)),
    st.builds(Padding, st.integers(1, 20)),
)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    lo = draw(st.integers(0, 2**32))
    ranges = []
    for _ in range(draw(st.integers(1, 10))):
        hi = lo + draw(st.integers(0, 1000))
        ranges.append((lo, hi))
        lo = hi + draw(st.integers(2, 1000))
    return Ack(tuple(reversed(ranges)), draw(st.integers(0, 2**40)))


@given(st.lists(st.one_of(frames_strategy, acks()), max_size=8))
def test_frames_round_trip(frames: list[Frame]) -> None:
    # Adjacent PADDING frames merge on decode, so compare after merging them.
    merged: list[Frame] = []
    for f in frames:
        if isinstance(f, Padding) and merged and isinstance(merged[-1], Padding):
            merged[-1] = Padding(merged[-1].length + f.length)
        else:
            merged.append(f)
    raw = encode_frames(frames)
    assert decode_frames(raw) == merged
    assert sum(frame_size(f) for f in frames) == len(raw)


@given(st.binary(max_size=200))
def test_frame_decoder_only_raises_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frames(data)


@given(st.lists(st.one_of(frames_strategy, acks()), min_size=1, max_size=4), st.data())
def test_truncated_frames_fail_cleanly(frames: list[Frame], data: st.DataObject) -> None:
    raw = encode_frames(frames)
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(FrameError):
        decode_frames(raw[:cut])


def test_unknown_frame_type_rejected() -> None:
    with pytest.raises(FrameError):
        decode_frames(b"\x01\x3f")


def test_ack_encoding_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        encode_frame(Ack(((1, 5), (3, 4))))
    with pytest.raises(ValueError):
        encode_frame(Ack(()))


@given(st.lists(st.integers(0, 3000), max_size=300), st.integers(1, 256))
def test_replay_window_matches_reference_model(pns: list[int], size: int) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    largest = -1
    for pn in pns:
        expected = pn not in seen and (pn > largest or largest - pn < size)
        assert window.accept(pn) == expected
        if expected:
            seen.add(pn)
            largest = max(largest, pn)


@given(st.lists(st.integers(0, 500), max_size=200))
def test_rangeset_matches_set(values: list[int]) -> None:
    rs = RangeSet(max_ranges=1000)
    for v in values:
        rs.add(v)
    covered = {x for lo, hi in rs.descending() for x in range(lo, hi + 1)}
    assert covered == set(values)
    ranges = rs.descending()
    for (lo1, _), (_, hi2) in itertools.pairwise(ranges):
        assert hi2 + 1 < lo1


def _pair() -> tuple[OneRttKeys, OneRttKeys]:
    return OneRttKeys(b"a" * 32, b"b" * 32), OneRttKeys(b"b" * 32, b"a" * 32)


@given(
    pn=st.integers(0, 2**40),
    pn_len=st.integers(1, 4),
    payload=st.binary(max_size=200),
)
def test_packet_protection_round_trip(pn: int, pn_len: int, payload: bytes) -> None:
    sender, receiver = _pair()
    if pn >= 2 ** (8 * pn_len - 1):
        receiver.replay.largest = pn - 1
    raw = sender.protect(DCID, pn, pn & ((1 << (8 * pn_len)) - 1), pn_len, payload)
    assert raw[1 : 1 + CID_LEN] == DCID
    # header protection hides the packet number bytes and the low first-byte bits
    hp = HeaderProtector(b"a" * 32)
    unmasked = remove_header_protection(hp, raw)
    assert unmasked is not None
    header, truncated, length = unmasked
    assert (length, truncated) == (pn_len, pn & ((1 << (8 * pn_len)) - 1))
    assert header[0] & 0x03 == pn_len - 1
    assert header[1 : 1 + CID_LEN] == DCID
    opened = receiver.unprotect(raw, 0.0)
    assert isinstance(opened, Opened)
    assert opened.pn == pn
    assert opened.payload[: len(payload)] == payload
    assert not any(opened.payload[len(payload) :])
    assert receiver.unprotect(raw, 0.0) == "replay"


@given(
    largest=st.integers(-1, 2**40),
    pn_len=st.integers(1, 4),
    offset=st.integers(-(2**31) + 1, 2**31),
)
def test_unprotect_expands_packet_numbers_like_decode_packet_number(
    largest: int, pn_len: int, offset: int
) -> None:
    window = 1 << (8 * pn_len)
    pn = largest + 1 + offset % window - window // 2 + 1
    sender, receiver = _pair()
    if pn < 0 or pn == largest or pn <= largest - receiver.replay.size:
        return  # not a number, a replay or out of the replay window
    receiver.replay.largest = largest
    truncated = pn & (window - 1)
    opened = receiver.unprotect(sender.protect(DCID, pn, truncated, pn_len, b"\x01"), 0.0)
    assert isinstance(opened, Opened)
    assert opened.pn == pn == decode_packet_number(largest, truncated, 8 * pn_len)


def test_protection_buffers_grow_for_large_packets() -> None:
    sender, receiver = _pair()
    for pn, size in enumerate((100, 5000, MAX_PACKET - MIN_SHORT_PACKET, 1200)):
        payload = bytes([pn + 1]) * size
        raw = sender.protect(DCID, pn, pn, 1, payload)
        assert len(raw) == SHORT_PN_OFFSET + 1 + size + TAG_LEN
        opened = receiver.unprotect(raw, 0.0)
        assert isinstance(opened, Opened) and opened.payload == payload
    with pytest.raises(ValueError):
        sender.protect(DCID, 9, 9, 1, bytes(MAX_PACKET))
    assert receiver.unprotect(bytes([0x40]) * (MAX_PACKET + 1), 0.0) == "malformed"


@given(st.data())
def test_any_bit_flip_is_rejected(data: st.DataObject) -> None:
    sender, receiver = _pair()
    raw = bytearray(sender.protect(DCID, 7, 7, 1, b"\x01hello"))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert isinstance(receiver.unprotect(bytes(raw), 0.0), str)
    assert receiver.replay.largest == -1


def test_long_packet_round_trip_and_errors() -> None:
    scid = b"\xaa" * CID_LEN
    raw = encode_long_packet(PacketType.INITIAL, DCID, scid, b"noise", token=b"tok")
    parsed = parse_long_packet(raw)
    assert (parsed.packet_type, parsed.dcid, parsed.scid) == (PacketType.INITIAL, DCID, scid)
    assert (parsed.token, parsed.body) == (b"tok", b"noise")
    assert destination_cid(raw) == DCID
    for cut in range(len(raw) - len(b"noise") - 1):
        with pytest.raises(DecodeError):
            parse_long_packet(raw[:cut])
    with pytest.raises(PacketError):
        parse_long_packet(raw[:1] + b"xyz" + raw[4:])
    retry = encode_long_packet(PacketType.RETRY, DCID, scid, bytes(16), token=b"t")
    assert parse_long_packet(retry).token == b"t"
    with pytest.raises(PacketError):
        parse_long_packet(retry[:-1])
