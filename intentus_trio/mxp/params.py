"""Transport parameters exchanged inside the (encrypted, authenticated) Noise handshake payloads.

Encoding: a sequence of (varint id, varint length, value). Unknown ids are skipped so later
versions can add parameters. The handshake payload is ``varint(len(params)) || params`` followed
by zero padding, which lets the client pad its first datagram without a separate frame.
"""

from __future__ import annotations

import enum

import attrs

from intentus_trio.mxp.packet import CID_LEN
from intentus_trio.mxp.varint import DecodeError, decode_varint, encode_varint


class ParamId(enum.IntEnum):
    IDLE_TIMEOUT_MS = 0x01
    MAX_DATAGRAM_FRAME_SIZE = 0x02
    MAX_PACKET_SIZE = 0x03
    MAX_ACK_DELAY_MS = 0x04
    INITIAL_MAX_DATA = 0x05
    INITIAL_MAX_STREAM_DATA = 0x06
    INITIAL_MAX_STREAMS_BIDI = 0x07
    INITIAL_MAX_STREAMS_UNI = 0x08
    INITIAL_SCID = 0x10
    ORIGINAL_DCID = 0x11
    RETRY_SCID = 0x12
    REJECT_CODE = 0x20
    REJECT_REASON = 0x21


# what a peer that sends no stream parameters grants (streams.StreamLimits' defaults)
DEFAULT_MAX_DATA = 1 << 20
DEFAULT_MAX_STREAM_DATA = 256 << 10
DEFAULT_MAX_STREAMS = 100


class ParamsError(DecodeError):
    """Transport parameters were malformed or inconsistent."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """``decode_varint`` failing with ParamsError, the one error handshake code expects."""
    try:
        return decode_varint(data, pos)
    except DecodeError as exc:
        raise ParamsError(f"bad transport parameters: {exc}") from None


@attrs.frozen
class TransportParameters:
    initial_scid: bytes
    idle_timeout: float = 30.0
    max_datagram_frame_size: int = 1200
    max_packet_size: int = 1200
    max_ack_delay: float = 0.025
    initial_max_data: int = DEFAULT_MAX_DATA
    initial_max_stream_data: int = DEFAULT_MAX_STREAM_DATA
    initial_max_streams_bidi: int = DEFAULT_MAX_STREAMS
    initial_max_streams_uni: int = DEFAULT_MAX_STREAMS
    original_dcid: bytes | None = None
    retry_scid: bytes | None = None
    reject_code: int | None = None
    reject_reason: str = ""

    def encode(self) -> bytes:
        items: list[tuple[int, bytes]] = [
            (ParamId.IDLE_TIMEOUT_MS, encode_varint(round(self.idle_timeout * 1000))),
            (ParamId.MAX_DATAGRAM_FRAME_SIZE, encode_varint(self.max_datagram_frame_size)),
            (ParamId.MAX_PACKET_SIZE, encode_varint(self.max_packet_size)),
            (ParamId.MAX_ACK_DELAY_MS, encode_varint(round(self.max_ack_delay * 1000))),
            (ParamId.INITIAL_MAX_DATA, encode_varint(self.initial_max_data)),
            (ParamId.INITIAL_MAX_STREAM_DATA, encode_varint(self.initial_max_stream_data)),
            (ParamId.INITIAL_MAX_STREAMS_BIDI, encode_varint(self.initial_max_streams_bidi)),
            (ParamId.INITIAL_MAX_STREAMS_UNI, encode_varint(self.initial_max_streams_uni)),
            (ParamId.INITIAL_SCID, self.initial_scid),
        ]
        if self.original_dcid is not None:
            items.append((ParamId.ORIGINAL_DCID, self.original_dcid))
        if self.retry_scid is not None:
            items.append((ParamId.RETRY_SCID, self.retry_scid))
        if self.reject_code is not None:
            items.append((ParamId.REJECT_CODE, encode_varint(self.reject_code)))
            items.append((ParamId.REJECT_REASON, self.reject_reason.encode("utf-8")))
        out = bytearray()
        for pid, value in items:
            out += encode_varint(pid) + encode_varint(len(value)) + value
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> TransportParameters:
        values: dict[int, bytes] = {}
        pos = 0
        while pos < len(data):
            pid, pos = _varint(data, pos)
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ParamsError("truncated transport parameter")
            if pid in values:
                raise ParamsError("duplicate transport parameter")
            values[pid] = data[pos : pos + length]
            pos += length

        def number(pid: ParamId, default: int) -> int:
            raw = values.get(pid)
            if raw is None:
                return default
            value, end = _varint(raw, 0)
            if end != len(raw):
                raise ParamsError("bad integer transport parameter")
            return value

        def cid(pid: ParamId) -> bytes | None:
            raw = values.get(pid)
            if raw is not None and len(raw) != CID_LEN:
                raise ParamsError("bad connection id parameter")
            return raw

        scid = cid(ParamId.INITIAL_SCID)
        if scid is None:
            raise ParamsError("missing initial_scid")
        reject_code = number(ParamId.REJECT_CODE, -1)
        try:
            reason = values.get(ParamId.REJECT_REASON, b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParamsError("reject reason is not UTF-8") from exc
        params = cls(
            initial_scid=scid,
            idle_timeout=number(ParamId.IDLE_TIMEOUT_MS, 30_000) / 1000,
            max_datagram_frame_size=number(ParamId.MAX_DATAGRAM_FRAME_SIZE, 0),
            max_packet_size=number(ParamId.MAX_PACKET_SIZE, 1200),
            max_ack_delay=number(ParamId.MAX_ACK_DELAY_MS, 25) / 1000,
            initial_max_data=number(ParamId.INITIAL_MAX_DATA, DEFAULT_MAX_DATA),
            initial_max_stream_data=number(
                ParamId.INITIAL_MAX_STREAM_DATA, DEFAULT_MAX_STREAM_DATA
            ),
            initial_max_streams_bidi=number(ParamId.INITIAL_MAX_STREAMS_BIDI, DEFAULT_MAX_STREAMS),
            initial_max_streams_uni=number(ParamId.INITIAL_MAX_STREAMS_UNI, DEFAULT_MAX_STREAMS),
            original_dcid=cid(ParamId.ORIGINAL_DCID),
            retry_scid=cid(ParamId.RETRY_SCID),
            reject_code=None if reject_code < 0 else reject_code,
            reject_reason=reason,
        )
        if params.max_packet_size < 1200:
            raise ParamsError("max_packet_size below 1200")
        if max(params.initial_max_streams_bidi, params.initial_max_streams_uni) > 1 << 60:
            raise ParamsError("stream limit beyond the largest stream id")
        return params


def encode_handshake_payload(params: TransportParameters, pad_to: int = 0) -> bytes:
    body = params.encode()
    out = encode_varint(len(body)) + body
    if len(out) < pad_to:
        out += bytes(pad_to - len(out))
    return out


def decode_handshake_payload(payload: bytes) -> TransportParameters:
    length, pos = _varint(payload, 0)
    if pos + length > len(payload):
        raise ParamsError("truncated handshake payload")
    end = pos + length
    # counted in C: a Python loop over the client's ~1,000 padding bytes costs ~50 us
    if payload.count(0, end) != len(payload) - end:
        raise ParamsError("non-zero handshake padding")
    return TransportParameters.decode(payload[pos:end])
