"""Counters for traffic and for every kind of dropped packet."""

from __future__ import annotations

import collections
import enum

import attrs


class Drop(enum.StrEnum):
    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"
    UNKNOWN_CID = "unknown_cid"
    AUTH = "auth"
    REPLAY = "replay"
    NO_KEYS = "no_keys"
    UNEXPECTED = "unexpected"
    DUPLICATE_HANDSHAKE = "duplicate_handshake"
    INITIAL_TOO_SMALL = "initial_too_small"
    HALF_OPEN_LIMIT = "half_open_limit"
    INVALID_TOKEN = "invalid_token"
    EXPIRED_TOKEN = "expired_token"
    REPLAYED_INITIAL = "replayed_initial"
    CLOSED = "closed"
    AMPLIFICATION_LIMIT = "amplification_limit"
    QUEUE_FULL = "queue_full"


@attrs.define
class Stats:
    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    retries_sent: int = 0
    handshakes_completed: int = 0
    drops: collections.Counter[str] = attrs.field(factory=collections.Counter)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


@attrs.frozen
class PathStats:
    """A snapshot of one connection's path estimates and loss-recovery counters (see
    docs/mxp-tuning.md). Times in seconds, sizes in bytes."""

    smoothed_rtt: float = 0.0
    min_rtt: float = 0.0
    rttvar: float = 0.0
    latest_rtt: float = 0.0
    cwnd: int = 0
    """Congestion window: bytes the sender may have in flight."""
    ssthresh: float = 0.0
    """Slow-start threshold (infinite until the first loss)."""
    bytes_in_flight: int = 0
    congestion_events: int = 0
    """Window reductions (at most one per round trip of losses)."""
    pacing_rate: float = 0.0
    """Bytes per second the pacer allows (infinite before the first RTT sample, or unpaced)."""
    packets_sent: int = 0
    packets_acked: int = 0
    packets_lost: int = 0
    """Ack-eliciting packets declared lost (their frames were queued again)."""
    spurious_losses: int = 0
    """Packets declared lost and acknowledged later (reordering beyond the threshold)."""
    ptos: int = 0
    """Probe timeouts: nothing acknowledged for a whole PTO period."""
    persistent_congestion: int = 0
    packet_threshold: int = 3
    """Reordering distance tolerated before a packet is declared lost (adapts upward)."""
    acks_sent: int = 0
    open_streams: int = 0
