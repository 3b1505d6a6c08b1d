"""MXP packet headers, connection ids and packet-number truncation (RFC 9000 §17, §A.2, §A.3).

Two header forms share bit 7 of the first byte as the discriminator:

* long headers (handshake, retry) carry the magic, the version and both connection ids;
* short headers (protected 1-RTT packets) carry only the destination connection id and a
  truncated, header-protected packet number.

Connection ids have a fixed length (``CID_LEN``) so short headers parse without a length byte.
"""

from __future__ import annotations

import enum

import attrs

from intentus_trio.mxp.varint import DecodeError, decode_varint, encode_varint

CID_LEN = 8
MAGIC = b"iMX"
VERSION = 1
LONG_FORM = 0x80
FIXED_BIT = 0x40
KEY_PHASE_BIT = 0x04
PN_LEN_MASK = 0x03
SHORT_RESERVED = 0x18
# first byte + magic + version + two connection ids
LONG_HEADER_LEN = 1 + len(MAGIC) + 1 + 2 * CID_LEN
SHORT_PN_OFFSET = 1 + CID_LEN
RETRY_TAG_LEN = 16
MIN_INITIAL_DATAGRAM = 1200


class PacketType(enum.IntEnum):
    INITIAL = 0
    HANDSHAKE = 1
    RETRY = 2


class PacketError(DecodeError):
    """A packet header could not be parsed."""


@attrs.frozen
class LongPacket:
    """A parsed long-header packet. ``body`` is the Noise message (INITIAL/HANDSHAKE) or the
    integrity tag (RETRY); ``token`` is set for INITIAL and RETRY."""

    packet_type: PacketType
    version: int
    dcid: bytes
    scid: bytes
    token: bytes
    body: bytes


def is_long_header(data: bytes) -> bool:
    return bool(data) and bool(data[0] & LONG_FORM)


def destination_cid(data: bytes) -> bytes | None:
    """The destination connection id of either header form, or None if too short."""
    if not data:
        return None
    start = 1 + len(MAGIC) + 1 if data[0] & LONG_FORM else 1
    if len(data) < start + CID_LEN:
        return None
    return data[start : start + CID_LEN]


def encode_long_packet(
    packet_type: PacketType,
    dcid: bytes,
    scid: bytes,
    body: bytes,
    *,
    token: bytes = b"",
    version: int = VERSION,
) -> bytes:
    if len(dcid) != CID_LEN or len(scid) != CID_LEN:
        raise ValueError("connection ids must be CID_LEN bytes")
    out = bytearray((LONG_FORM | FIXED_BIT | (packet_type << 4),))
    out += MAGIC
    out.append(version)
    out += dcid
    out += scid
    if packet_type in (PacketType.INITIAL, PacketType.RETRY):
        out += encode_varint(len(token))
        out += token
    elif token:
        raise ValueError("only INITIAL and RETRY packets carry a token")
    out += body
    return bytes(out)


def parse_long_packet(data: bytes) -> LongPacket:
    if len(data) < LONG_HEADER_LEN:
        raise PacketError("long header truncated")
    first = data[0]
    if not first & LONG_FORM or not first & FIXED_BIT or first & 0x0F:
        raise PacketError("bad long-header first byte")
    if data[1 : 1 + len(MAGIC)] != MAGIC:
        raise PacketError("bad magic")
    version = data[1 + len(MAGIC)]
    ptype_value = (first >> 4) & 0x03
    if ptype_value > PacketType.RETRY:
        raise PacketError("unknown long-header packet type")
    ptype = PacketType(ptype_value)
    pos = 1 + len(MAGIC) + 1
    dcid = data[pos : pos + CID_LEN]
    scid = data[pos + CID_LEN : pos + 2 * CID_LEN]
    pos += 2 * CID_LEN
    token = b""
    if ptype in (PacketType.INITIAL, PacketType.RETRY):
        length, pos = decode_varint(data, pos)
        if pos + length > len(data):
            raise PacketError("token truncated")
        token = data[pos : pos + length]
        pos += length
    body = data[pos:]
    if ptype == PacketType.RETRY and len(body) != RETRY_TAG_LEN:
        raise PacketError("bad retry integrity tag length")
    return LongPacket(ptype, version, dcid, scid, token, body)


# --------------------------------------------------------------------------- packet numbers


def encode_packet_number(full_pn: int, largest_acked: int | None) -> tuple[int, int]:
    """Truncate ``full_pn`` to the fewest bytes the peer can expand (RFC 9000 §A.2).

    Returns (truncated value, length in bytes 1..4).
    """
    num_unacked = full_pn + 1 if largest_acked is None else full_pn - largest_acked
    min_bits = num_unacked.bit_length() + 1
    nbytes = max(1, (min_bits + 7) // 8)
    if nbytes > 4:
        raise ValueError("too many unacknowledged packets to encode the packet number")
    return full_pn & ((1 << (8 * nbytes)) - 1), nbytes


def decode_packet_number(largest_pn: int, truncated_pn: int, pn_nbits: int) -> int:
    """Expand a truncated packet number next to the largest one received (RFC 9000 §A.3)."""
    expected_pn = largest_pn + 1
    pn_win = 1 << pn_nbits
    pn_hwin = pn_win // 2
    pn_mask = pn_win - 1
    candidate_pn = (expected_pn & ~pn_mask) | truncated_pn
    if candidate_pn <= expected_pn - pn_hwin and candidate_pn < (1 << 62) - pn_win:
        return candidate_pn + pn_win
    if candidate_pn > expected_pn + pn_hwin and candidate_pn >= pn_win:
        return candidate_pn - pn_win
    return candidate_pn
