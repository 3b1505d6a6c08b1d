"""QUIC-style variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, 62-bit values."""

from __future__ import annotations

VARINT_MAX = (1 << 62) - 1


class DecodeError(ValueError):
    """Bytes on the wire could not be parsed."""


def varint_size(value: int) -> int:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    if value <= VARINT_MAX:
        return 8
    raise ValueError("varint out of range")


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint out of range")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError("varint out of range")


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Return (value, next position); raise DecodeError if the bytes run out."""
    if pos >= len(data):
        raise DecodeError("truncated varint")
    first = data[pos]
    size = 1 << (first >> 6)
    end = pos + size
    if end > len(data):
        raise DecodeError("truncated varint")
    if size == 1:
        return first, end
    value = int.from_bytes(data[pos:end], "big") & ((1 << (8 * size - 2)) - 1)
    return value, end
