"""The replay guard: window, per-sender nonce cache, bounded memory without forgetting."""

from __future__ import annotations

import pytest

from intentus_trio.emcl import ReplayGuard
from intentus_trio.emcl.failures import Reason


def accept(guard: ReplayGuard, sender: str, nonce: bytes, ts: float, now: float) -> Reason | None:
    reason = guard.check(sender, nonce, ts, now)
    if reason is None:
        guard.record(sender, nonce, ts, now)
    return reason


def test_window_and_duplicates() -> None:
    guard = ReplayGuard(window=10)
    assert accept(guard, "a", b"n1", 100, 100) is None
    assert accept(guard, "a", b"n1", 100, 101) is Reason.REPLAYED
    assert accept(guard, "b", b"n1", 100, 101) is None  # per sender
    assert accept(guard, "a", b"n2", 89, 100) is Reason.STALE
    assert accept(guard, "a", b"n3", 111, 100) is Reason.STALE
    assert accept(guard, "a", b"n4", 110, 100) is None


def test_expired_entries_are_dropped() -> None:
    guard = ReplayGuard(window=10)
    for i in range(100):
        assert accept(guard, "a", bytes([i]), float(i), float(i)) is None
    assert len(guard) <= 12


def test_full_sender_cache_raises_the_floor_instead_of_forgetting() -> None:
    guard = ReplayGuard(window=100, per_sender=4)
    for i in range(6):
        assert accept(guard, "a", bytes([i]), 10.0 + i, 20.0) is None
    assert len(guard) == 4
    # Nonces 0 and 1 were forgotten; their replays are still refused (as stale).
    assert accept(guard, "a", bytes([0]), 10.0, 20.0) is Reason.STALE
    assert accept(guard, "a", bytes([1]), 11.0, 20.0) is Reason.STALE
    assert accept(guard, "a", b"new", 16.0, 20.0) is None


def test_evicted_sender_raises_a_global_floor() -> None:
    guard = ReplayGuard(window=100, max_senders=2)
    assert accept(guard, "a", b"x", 10.0, 20.0) is None
    assert accept(guard, "b", b"x", 11.0, 20.0) is None
    assert accept(guard, "c", b"x", 12.0, 20.0) is None  # evicts "a"
    assert accept(guard, "a", b"x", 10.0, 20.0) is Reason.STALE
    assert accept(guard, "d", b"y", 9.0, 20.0) is Reason.STALE
    assert accept(guard, "a", b"z", 13.0, 20.0) is None


def test_bad_configuration() -> None:
    with pytest.raises(ValueError):
        ReplayGuard(window=0)
