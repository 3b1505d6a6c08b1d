"""The MXP message codec: the framing the MXP reference implementation puts on the wire.

    header (32 bytes, little-endian)
        magic u32 = 0x4D585031 ("1PXM" on the wire), type u8, flags u8, reserved u16 = 0,
        message_id u64, trace_id u64, payload_len u64 (<= 16 MiB)
    payload (payload_len bytes)
    checksum u64 = XXH3-64 (seed 0) of header + payload, little-endian

Decoding is strict — every field is checked and each failure has its own `DecodeErrorReason` —
because the bytes come from the network: a peer's garbage must become one well-defined error,
never an arbitrary exception or a half-valid message.
"""

from __future__ import annotations

import enum
import struct

import attrs
import xxhash

__all__ = [
    "CHECKSUM_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD_SIZE",
    "DecodeErrorReason",
    "MessageFlags",
    "MessageType",
    "MxpDecodeError",
    "MxpMessage",
    "decode",
    "decode_prefix",
    "encode",
]

MAGIC = 0x4D585031
HEADER_SIZE = 32
CHECKSUM_SIZE = 8
OVERHEAD = HEADER_SIZE + CHECKSUM_SIZE
MAX_PAYLOAD_SIZE = 16 * 1024 * 1024
MAX_U64 = (1 << 64) - 1

_HEADER = struct.Struct("<IBBHQQQ")
_CHECKSUM = struct.Struct("<Q")
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")
_xxh3 = xxhash.xxh3_64_intdigest


class MessageType(enum.IntEnum):
    AGENT_REGISTER = 0x01
    AGENT_DISCOVER = 0x02
    AGENT_HEARTBEAT = 0x03
    CALL = 0x10
    RESPONSE = 0x11
    EVENT = 0x12
    STREAM_OPEN = 0x20
    STREAM_CHUNK = 0x21
    STREAM_CLOSE = 0x22
    ACK = 0xF0
    ERROR = 0xF1

    @property
    def label(self) -> str:
        """The name the reference implementation uses ("AgentRegister", "Call", ...)."""
        return "".join(part.capitalize() for part in self.name.split("_"))


class MessageFlags(enum.IntFlag):
    NONE = 0
    COMPRESSED = 0x01
    ENCRYPTED = 0x02
    REQUIRES_ACK = 0x04
    FINAL = 0x08


_KNOWN_FLAGS = 0x0F
_TYPES: dict[int, MessageType] = {t.value: t for t in MessageType}
# IntFlag construction is slow; decoding sees at most 16 distinct flag values.
_FLAGS: tuple[MessageFlags, ...] = tuple(MessageFlags(v) for v in range(16))


class DecodeErrorReason(enum.StrEnum):
    TRUNCATED = "truncated"
    BAD_MAGIC = "bad_magic"
    BAD_RESERVED = "bad_reserved"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FLAGS = "bad_flags"
    TOO_LARGE = "too_large"
    BAD_CHECKSUM = "bad_checksum"
    TRAILING_BYTES = "trailing_bytes"


class MxpDecodeError(ValueError):
    """Bytes that are not one valid MXP message; `reason` says which check failed."""

    def __init__(self, reason: DecodeErrorReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def _check_u64(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"{attribute.name} must fit in an unsigned 64-bit integer: {value!r}")


def _check_flags(_: object, attribute: attrs.Attribute[MessageFlags], value: MessageFlags) -> None:
    if not 0 <= value <= _KNOWN_FLAGS:
        raise ValueError(f"flags has undefined bits set: {int(value):#x}")


def _check_payload(_: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) > MAX_PAYLOAD_SIZE:
        raise ValueError(f"payload of {len(value)} bytes exceeds {MAX_PAYLOAD_SIZE}")


def _to_type(value: int) -> MessageType:
    return value if type(value) is MessageType else MessageType(value)


def _to_flags(value: int) -> MessageFlags:
    return value if type(value) is MessageFlags else MessageFlags(value)


def _to_bytes(value: bytes | bytearray | memoryview) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"payload must be bytes-like, not {type(value).__name__}")


@attrs.frozen
class MxpMessage:
    """One MXP message. Constructing an invalid one is local misuse and raises ValueError."""

    type: MessageType = attrs.field(converter=_to_type)
    payload: bytes = attrs.field(default=b"", converter=_to_bytes, validator=_check_payload)
    message_id: int = attrs.field(default=0, validator=_check_u64)
    trace_id: int = attrs.field(default=0, validator=_check_u64)
    flags: MessageFlags = attrs.field(
        default=MessageFlags.NONE, converter=_to_flags, validator=_check_flags
    )


def encode(message: MxpMessage) -> bytes:
    payload = message.payload
    body = (
        _HEADER.pack(
            MAGIC,
            message.type,
            message.flags,
            0,
            message.message_id,
            message.trace_id,
            len(payload),
        )
        + payload
    )
    return body + _CHECKSUM.pack(_xxh3(body))


def _parse_header(
    data: bytes | bytearray | memoryview,
) -> tuple[MessageType, MessageFlags, int, int, int]:
    magic, type_code, flags, reserved, message_id, trace_id, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MxpDecodeError(DecodeErrorReason.BAD_MAGIC, f"{magic:#010x}")
    if reserved:
        raise MxpDecodeError(DecodeErrorReason.BAD_RESERVED, f"{reserved:#06x}")
    message_type = _TYPES.get(type_code)
    if message_type is None:
        raise MxpDecodeError(DecodeErrorReason.UNKNOWN_TYPE, f"{type_code:#04x}")
    if flags & ~_KNOWN_FLAGS:
        raise MxpDecodeError(DecodeErrorReason.BAD_FLAGS, f"{flags:#04x}")
    if length > MAX_PAYLOAD_SIZE:
        raise MxpDecodeError(DecodeErrorReason.TOO_LARGE, f"payload_len {length}")
    return message_type, _FLAGS[flags], message_id, trace_id, length


def _build(
    view: memoryview,
    message_type: MessageType,
    flags: MessageFlags,
    message_id: int,
    trace_id: int,
    length: int,
) -> MxpMessage:
    end = HEADER_SIZE + length
    (checksum,) = _CHECKSUM.unpack_from(view, end)
    if _xxh3(view[:end]) != checksum:
        raise MxpDecodeError(DecodeErrorReason.BAD_CHECKSUM)
    # The fields were validated above; skip attrs' converters and validators on this hot path.
    message = object.__new__(MxpMessage)
    object.__setattr__(message, "type", message_type)
    object.__setattr__(message, "payload", bytes(view[HEADER_SIZE:end]))
    object.__setattr__(message, "message_id", message_id)
    object.__setattr__(message, "trace_id", trace_id)
    object.__setattr__(message, "flags", flags)
    return message


def decode(data: bytes | bytearray | memoryview) -> MxpMessage:
    """Decode exactly one message (e.g. one datagram); anything else is an MxpDecodeError."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if size < HEADER_SIZE:
        if size >= 4 and view[:4] != _MAGIC_BYTES:
            raise MxpDecodeError(DecodeErrorReason.BAD_MAGIC)
        raise MxpDecodeError(DecodeErrorReason.TRUNCATED, f"{size} bytes, header needs 32")
    message_type, flags, message_id, trace_id, length = _parse_header(view)
    expected = OVERHEAD + length
    if size < expected:
        raise MxpDecodeError(DecodeErrorReason.TRUNCATED, f"{size} bytes, message needs {expected}")
    if size > expected:
        raise MxpDecodeError(DecodeErrorReason.TRAILING_BYTES, f"{size - expected} extra bytes")
    return _build(view, message_type, flags, message_id, trace_id, length)


def decode_prefix(buf: bytes | bytearray | memoryview) -> tuple[MxpMessage, int] | None:
    """Decode the message at the start of a byte stream.

    Returns (message, bytes consumed), or None while the buffer holds only part of a message.
    A bad header raises as soon as it is visible, so a stream reader never waits for up to
    16 MiB that a broken peer announced.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if size < HEADER_SIZE:
        if view[: min(size, 4)] != _MAGIC_BYTES[:size]:
            raise MxpDecodeError(DecodeErrorReason.BAD_MAGIC)
        return None
    message_type, flags, message_id, trace_id, length = _parse_header(view)
    end = OVERHEAD + length
    if size < end:
        return None
    return _build(view, message_type, flags, message_id, trace_id, length), end
