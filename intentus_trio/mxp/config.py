"""Connection and server settings."""

from __future__ import annotations

import os
from collections.abc import Callable

import attrs

from intentus_trio.mxp.congestion import CONTROLLERS
from intentus_trio.mxp.noise import KeyPair

Address = tuple[str, int]
ClientPolicy = Callable[[bytes, Address], bool]

DEFAULT_PROLOGUE = b"intentus-mxp/1"


def _known_controller(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # refused here, not after a handshake when the connection builds its controller
    if value not in CONTROLLERS:
        raise ValueError(f"congestion_control must be one of {sorted(CONTROLLERS)}, "
                         f"not {value!r}")


@attrs.frozen
class Configuration:
    """Settings shared by both roles; all durations in seconds, sizes in bytes.

    The stream settings are what this side grants the peer (receive windows, which auto-tune
    from the initial value up to the ``*_window`` cap, and stream counts) plus how much
    unacknowledged data one stream may buffer before its writer waits (``stream_send_buffer``).
    See docs/mxp-tuning.md.
    """

    static_key: KeyPair
    idle_timeout: float = 30.0
    keepalive_interval: float | None = None
    max_datagram_frame_size: int = 1200
    max_packet_size: int = 1200
    max_ack_delay: float = 0.001
    handshake_initial_rto: float = 0.25
    handshake_max_rto: float = 2.0
    handshake_timeout: float = 10.0
    key_discard_delay: float = 3.0
    key_update_after_packets: int | None = None
    replay_window: int = 1024
    max_pending_datagrams: int = 256
    prologue: bytes = DEFAULT_PROLOGUE
    congestion_control: str = attrs.field(default="newreno", validator=_known_controller)
    pacing: bool = True
    ack_eliciting_threshold: int = 2
    max_data: int = 1 << 20
    max_data_window: int = 16 << 20
    max_stream_data: int = 256 << 10
    max_stream_window: int = 4 << 20
    max_streams_bidi: int = 100
    max_streams_uni: int = 100
    stream_send_buffer: int = 1 << 20


def allow_keys(keys: set[bytes] | frozenset[bytes] | list[bytes]) -> ClientPolicy:
    """A client policy accepting exactly these static public keys."""
    allowed = frozenset(keys)
    return lambda key, addr: key in allowed


def allow_any(key: bytes, addr: Address) -> bool:
    """A client policy accepting every client that completes the handshake (the server still
    learns, and the application can check, each client's static key)."""
    return True


@attrs.frozen
class ServerConfiguration:
    """Server-wide settings. ``client_policy(static_key, address)`` decides who may connect."""

    connection: Configuration
    client_policy: ClientPolicy
    require_retry: bool = False
    retry_when_half_open_above: int | None = 64
    max_half_open: int = 256
    token_lifetime: float = 10.0
    token_secret: bytes = attrs.field(factory=lambda: os.urandom(32), repr=False)
    replay_cache_size: int = 8192
