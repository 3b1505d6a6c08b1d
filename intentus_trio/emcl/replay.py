"""Replay protection: a timestamp window and a bounded cache of nonces seen per sender.

An envelope is accepted once: its timestamp must lie within ``window`` seconds of the
receiver's clock, and its nonce must not have been seen from that sender inside the window.
Memory is bounded without weakening this: when a sender's cache is full its oldest entry is
dropped and the sender's floor rises to that entry's timestamp, so nothing at or below the
floor is accepted any more (it could be a replay of a forgotten nonce). Evicting a whole
sender raises a floor that applies to every sender the same way.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final

from .failures import Reason

DEFAULT_WINDOW: Final = 120.0
DEFAULT_PER_SENDER: Final = 65536
DEFAULT_MAX_SENDERS: Final = 4096


class _Seen:
    __slots__ = ("floor", "nonces", "order")

    def __init__(self) -> None:
        self.nonces: dict[bytes, float] = {}
        self.order: deque[bytes] = deque()
        self.floor = float("-inf")


class ReplayGuard:
    """Remembers accepted (sender, nonce) pairs; see the module docstring."""

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        per_sender: int = DEFAULT_PER_SENDER,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        if window <= 0 or per_sender <= 0 or max_senders <= 0:
            raise ValueError("window and cache sizes must be positive")
        self.window = window
        self.per_sender = per_sender
        self.max_senders = max_senders
        self._senders: OrderedDict[str, _Seen] = OrderedDict()
        self._floor = float("-inf")

    def check(self, sender: str, nonce: bytes, timestamp: float, now: float) -> Reason | None:
        """The reason to refuse this envelope, or None. Does not record it."""
        window = self.window
        if not now - window <= timestamp <= now + window or timestamp <= self._floor:
            return Reason.STALE
        seen = self._senders.get(sender)
        if seen is not None:
            if nonce in seen.nonces:
                return Reason.REPLAYED
            if timestamp <= seen.floor:
                return Reason.STALE
        return None

    def record(self, sender: str, nonce: bytes, timestamp: float, now: float) -> None:
        """Remember an accepted envelope (call after ``check`` and authentication)."""
        seen = self._senders.get(sender)
        if seen is None:
            seen = self._add_sender(sender)
        else:
            self._senders.move_to_end(sender)
        nonces, order = seen.nonces, seen.order
        nonces[nonce] = timestamp
        order.append(nonce)
        if len(order) > self.per_sender or nonces[order[0]] < now - self.window:
            self._prune(seen, now)

    def _add_sender(self, sender: str) -> _Seen:
        senders = self._senders
        if len(senders) >= self.max_senders:
            _, evicted = senders.popitem(last=False)
            if evicted.nonces:
                self._floor = max(self._floor, max(evicted.nonces.values()))
            self._floor = max(self._floor, evicted.floor)
        seen = senders[sender] = _Seen()
        return seen

    def _prune(self, seen: _Seen, now: float) -> None:
        nonces, order = seen.nonces, seen.order
        horizon = now - self.window
        # Entries outside the window would be refused as stale anyway.
        while order:
            first = nonces[order[0]]
            if first >= horizon and len(order) <= self.per_sender:
                break
            del nonces[order.popleft()]
            if first >= horizon:
                seen.floor = max(seen.floor, first)

    def __len__(self) -> int:
        return sum(len(s.nonces) for s in self._senders.values())
