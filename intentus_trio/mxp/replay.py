"""A sliding replay window over packet numbers.

Packets may arrive out of order inside the window; a packet number seen before, or older than
the window, is refused. Check before decrypting (cheap), mark only after authentication, so
forged packets cannot poison the window.
"""

from __future__ import annotations


class ReplayWindow:
    __slots__ = ("_mask", "bits", "largest", "size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self.largest = -1
        # bit i set <=> packet number (largest - i) was accepted
        self.bits = 0
        self._mask = (1 << size) - 1

    def would_accept(self, pn: int) -> bool:
        if pn > self.largest:
            return True
        offset = self.largest - pn
        return offset < self.size and not (self.bits >> offset) & 1

    def mark(self, pn: int) -> None:
        if pn > self.largest:
            shift = pn - self.largest
            self.bits = ((self.bits << shift) | 1) & self._mask
            self.largest = pn
        else:
            self.bits |= 1 << (self.largest - pn)

    def accept(self, pn: int) -> bool:
        """Check and mark in one step."""
        if not self.would_accept(pn):
            return False
        self.mark(pn)
        return True
