"""The MXP message codec: golden vector, strict validation, streaming, properties, fuzzing."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import attrs
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.message import (
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD_SIZE,
    DecodeErrorReason,
    MessageFlags,
    MessageType,
    MxpDecodeError,
    MxpMessage,
    decode,
    decode_prefix,
    encode,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
GOLDEN = SHARED / "vectors" / "mxp" / "golden.json"

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
messages = st.builds(
    MxpMessage,
    type=st.sampled_from(MessageType),
    payload=st.binary(max_size=2048),
    message_id=U64,
    trace_id=U64,
    flags=st.integers(min_value=0, max_value=15).map(MessageFlags),
)


def frame(
    *,
    magic: int = MAGIC,
    type_code: int = 0x10,
    flags: int = 0,
    reserved: int = 0,
    length: int | None = None,
    payload: bytes = b"data",
    checksum: int | None = None,
) -> bytes:
    """Hand-built wire bytes, with a correct checksum unless one is given."""
    body = struct.pack(
        "<IBBHQQQ",
        magic,
        type_code,
        flags,
        reserved,
        7,
        9,
        len(payload) if length is None else length,
    )
    body += payload
    digest = xxhash.xxh3_64_intdigest(body) if checksum is None else checksum
    return body + struct.pack("<Q", digest)


def reason_of(data: bytes) -> DecodeErrorReason:
    with pytest.raises(MxpDecodeError) as info:
        decode(data)
    return info.value.reason


# -- golden vector ---------------------------------------------------------------------------


def golden_vectors() -> list[dict[str, Any]]:
    if not GOLDEN.is_file():
        pytest.skip(f"shared MXP golden vectors not found at {GOLDEN}")
    vectors: list[dict[str, Any]] = json.loads(GOLDEN.read_text())["vectors"]
    return vectors


def test_golden_vectors_reproduced_exactly() -> None:
    for vector in golden_vectors():
        message = MxpMessage(
            type=MessageType(vector["type"]),
            payload=bytes.fromhex(vector["payload_hex"]),
            message_id=int(vector["message_id"], 16),
            trace_id=int(vector["trace_id"], 16),
            flags=MessageFlags(vector["flags"]),
        )
        assert message.type.label == vector["type_name"]
        wire = bytes.fromhex(vector["encoded_hex"])
        assert encode(message) == wire
        assert decode(wire) == message
        assert decode_prefix(wire) == (message, len(wire))


def test_wire_layout() -> None:
    wire = encode(MxpMessage(MessageType.ACK, b"abc", 1, 2, MessageFlags.REQUIRES_ACK))
    assert wire[:4] == bytes([0x31, 0x50, 0x58, 0x4D])
    assert wire[4] == 0xF0 and wire[5] == 0x04 and wire[6:8] == b"\0\0"
    assert len(wire) == HEADER_SIZE + 3 + 8
    assert wire[-8:] == xxhash.xxh3_64(wire[:-8]).intdigest().to_bytes(8, "little")


def test_type_labels_follow_the_reference_names() -> None:
    assert [t.label for t in MessageType] == [
        "AgentRegister",
        "AgentDiscover",
        "AgentHeartbeat",
        "Call",
        "Response",
        "Event",
        "StreamOpen",
        "StreamChunk",
        "StreamClose",
        "Ack",
        "Error",
    ]


# -- strict decoding: one reason per failure ------------------------------------------------


def test_valid_hand_built_frame_decodes() -> None:
    message = decode(frame())
    assert (message.type, message.payload, message.message_id, message.trace_id) == (
        MessageType.CALL,
        b"data",
        7,
        9,
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DecodeErrorReason.TRUNCATED),
        (b"1PX", DecodeErrorReason.TRUNCATED),
        (frame()[:31], DecodeErrorReason.TRUNCATED),
        (frame()[:-1], DecodeErrorReason.TRUNCATED),
        (b"XXXX" + bytes(10), DecodeErrorReason.BAD_MAGIC),
        (frame(magic=0x314D5058), DecodeErrorReason.BAD_MAGIC),
        (frame(reserved=1), DecodeErrorReason.BAD_RESERVED),
        (frame(reserved=0x8000), DecodeErrorReason.BAD_RESERVED),
        (frame(type_code=0x00), DecodeErrorReason.UNKNOWN_TYPE),
        (frame(type_code=0x13), DecodeErrorReason.UNKNOWN_TYPE),
        (frame(type_code=0xFF), DecodeErrorReason.UNKNOWN_TYPE),
        (frame(flags=0x10), DecodeErrorReason.BAD_FLAGS),
        (frame(flags=0x80), DecodeErrorReason.BAD_FLAGS),
        (frame(length=MAX_PAYLOAD_SIZE + 1, payload=b""), DecodeErrorReason.TOO_LARGE),
        (frame(length=(1 << 64) - 1, payload=b""), DecodeErrorReason.TOO_LARGE),
        (frame(checksum=0), DecodeErrorReason.BAD_CHECKSUM),
        (frame() + b"\0", DecodeErrorReason.TRAILING_BYTES),
        (frame() + frame(), DecodeErrorReason.TRAILING_BYTES),
        (frame(length=3), DecodeErrorReason.TRAILING_BYTES),
        (frame(length=5), DecodeErrorReason.TRUNCATED),
    ],
)
def test_each_failure_has_its_reason(data: bytes, reason: DecodeErrorReason) -> None:
    assert reason_of(data) is reason


@pytest.mark.parametrize("bit", range(4, 8))
def test_flag_bits_4_to_7_are_rejected(bit: int) -> None:
    assert reason_of(frame(flags=1 << bit)) is DecodeErrorReason.BAD_FLAGS


def test_every_defined_type_and_flag_combination_decodes() -> None:
    for message_type in MessageType:
        for flags in range(16):
            message = decode(frame(type_code=message_type, flags=flags))
            assert message.type is message_type
            assert message.flags == flags
            assert type(message.flags) is MessageFlags


def test_error_is_a_value_error_with_reason_and_message() -> None:
    with pytest.raises(ValueError, match="bad_checksum"):
        decode(frame(checksum=1))


def test_accepts_bytearray_and_memoryview() -> None:
    wire = frame()
    assert decode(bytearray(wire)) == decode(wire)
    assert decode(memoryview(wire)) == decode(wire)
    assert decode(memoryview(b"xx" + wire)[2:]) == decode(wire)
    assert type(decode(bytearray(wire)).payload) is bytes


def test_maximum_payload_round_trips() -> None:
    message = MxpMessage(MessageType.STREAM_CHUNK, bytes(MAX_PAYLOAD_SIZE))
    assert decode(encode(message)) == message


# -- construction is validated (local misuse raises at once) ----------------------------------


def test_construction_validates_fields() -> None:
    with pytest.raises(ValueError):
        MxpMessage(0x13)
    with pytest.raises(ValueError):
        MxpMessage(MessageType.CALL, message_id=1 << 64)
    with pytest.raises(ValueError):
        MxpMessage(MessageType.CALL, trace_id=-1)
    with pytest.raises(ValueError):
        MxpMessage(MessageType.CALL, flags=0x10)
    with pytest.raises(ValueError):
        MxpMessage(MessageType.CALL, bytes(MAX_PAYLOAD_SIZE + 1))
    with pytest.raises(TypeError):
        MxpMessage(MessageType.CALL, 5)  # type: ignore[arg-type]
    message = MxpMessage(0x11, bytearray(b"x"), flags=3)
    assert message.type is MessageType.RESPONSE
    assert message.flags == MessageFlags.COMPRESSED | MessageFlags.ENCRYPTED
    assert type(message.payload) is bytes
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.message_id = 3  # type: ignore[misc]


# -- streaming ----------------------------------------------------------------------------------


def test_decode_prefix_waits_for_a_whole_message() -> None:
    wire = encode(MxpMessage(MessageType.EVENT, b"streamed payload", 5, 6))
    for cut in range(len(wire)):
        assert decode_prefix(wire[:cut]) is None
    message, consumed = decode_prefix(wire + b"next") or (None, 0)
    assert consumed == len(wire)
    assert message == decode(wire)


def test_decode_prefix_rejects_a_bad_header_without_waiting() -> None:
    with pytest.raises(MxpDecodeError) as info:
        decode_prefix(b"GET ")
    assert info.value.reason is DecodeErrorReason.BAD_MAGIC
    with pytest.raises(MxpDecodeError) as info:
        decode_prefix(b"1X")
    assert info.value.reason is DecodeErrorReason.BAD_MAGIC
    with pytest.raises(MxpDecodeError) as info:
        decode_prefix(frame(length=MAX_PAYLOAD_SIZE + 1, payload=b"")[:HEADER_SIZE])
    assert info.value.reason is DecodeErrorReason.TOO_LARGE
    with pytest.raises(MxpDecodeError) as info:
        decode_prefix(frame(checksum=2))
    assert info.value.reason is DecodeErrorReason.BAD_CHECKSUM


@given(st.lists(messages, max_size=8), st.data())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_stream_of_messages_split_anywhere(msgs: list[MxpMessage], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    buffer = bytearray()
    out: list[MxpMessage] = []
    for chunk in chunks:
        buffer += chunk
        while (result := decode_prefix(buffer)) is not None:
            message, consumed = result
            out.append(message)
            del buffer[:consumed]
    assert out == msgs
    assert not buffer


# -- properties and fuzzing -----------------------------------------------------------------------


@given(messages)
def test_round_trip(message: MxpMessage) -> None:
    wire = encode(message)
    assert len(wire) == 40 + len(message.payload)
    decoded = decode(wire)
    assert decoded == message
    assert hash(decoded) == hash(message)
    assert type(decoded.type) is MessageType
    assert decode_prefix(wire) == (message, len(wire))


@given(st.binary(max_size=512))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    with contextlib.suppress(MxpDecodeError):
        decode(data)
    with contextlib.suppress(MxpDecodeError):
        decode_prefix(data)


@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_magic(data: bytes) -> None:
    for candidate in (MAGIC.to_bytes(4, "little") + data, frame()[:8] + data):
        with contextlib.suppress(MxpDecodeError):
            decode(candidate)
        with contextlib.suppress(MxpDecodeError):
            decode_prefix(candidate)


@given(messages, st.data())
def test_single_bit_flips_are_always_detected(message: MxpMessage, data: st.DataObject) -> None:
    wire = bytearray(encode(message))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[bit >> 3] ^= 1 << (bit & 7)
    with pytest.raises(MxpDecodeError):
        decode(bytes(wire))


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


@given(messages, st.lists(MUTATIONS, min_size=1, max_size=6))
def test_mutated_messages_only_raise_decode_errors(
    message: MxpMessage, mutations: list[tuple[str, int, int]]
) -> None:
    wire = bytearray(encode(message))
    for kind, position, value in mutations:
        at = position % (len(wire) + 1)
        if kind == "flip" and wire:
            wire[at % len(wire)] ^= value or 1
        elif kind == "cut":
            del wire[at:]
        elif kind == "extend":
            wire += bytes([value]) * position
        elif kind == "insert":
            wire.insert(at, value)
        elif kind == "delete" and wire:
            del wire[at % len(wire)]
    for decoder in (decode, decode_prefix):
        with contextlib.suppress(MxpDecodeError):
            decoder(bytes(wire))
