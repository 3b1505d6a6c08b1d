"""Events a connection reports to its driver (via ``next_event()``)."""

from __future__ import annotations

import enum

import attrs

from intentus_trio.mxp.streams import (
    StopSendingRequested,
    StreamOpened,
    StreamReadable,
    StreamReset,
)

__all__ = [
    "ConnectionClosed",
    "DatagramReceived",
    "ErrorCode",
    "Event",
    "HandshakeCompleted",
    "KeyUpdated",
    "StopSendingRequested",
    "StreamOpened",
    "StreamReadable",
    "StreamReset",
]


class ErrorCode(enum.IntEnum):
    """Close reasons. Codes from ``APPLICATION_ERROR`` up belong to the application."""

    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    PROTOCOL_VIOLATION = 0x02
    FRAME_ENCODING_ERROR = 0x03
    TRANSPORT_PARAMETER_ERROR = 0x04
    IDLE_TIMEOUT = 0x05
    HANDSHAKE_TIMEOUT = 0x06
    AUTHENTICATION_FAILED = 0x07
    ACCESS_DENIED = 0x08
    SERVER_BUSY = 0x09
    FLOW_CONTROL_ERROR = 0x20
    FINAL_SIZE_ERROR = 0x21
    STREAM_LIMIT_ERROR = 0x22
    STREAM_STATE_ERROR = 0x23
    APPLICATION_ERROR = 0x100


@attrs.frozen
class HandshakeCompleted:
    connection_id: bytes
    remote_static: bytes


@attrs.frozen
class DatagramReceived:
    connection_id: bytes
    data: bytes


@attrs.frozen
class KeyUpdated:
    """The peer started a key update; both directions now use key ``generation``."""

    connection_id: bytes
    generation: int


@attrs.frozen
class ConnectionClosed:
    connection_id: bytes
    error_code: int
    reason: str
    by_peer: bool


Event = (
    HandshakeCompleted
    | DatagramReceived
    | KeyUpdated
    | ConnectionClosed
    | StreamOpened
    | StreamReadable
    | StreamReset
    | StopSendingRequested
)
