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
