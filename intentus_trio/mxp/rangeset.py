"""A set of integers kept as sorted, disjoint, inclusive ranges.

One structure serves packet numbers (the receive-side ACK set) and byte offsets (acknowledged
and lost stream data): every operation is a couple of bisections plus a slice assignment, so
its cost depends on the number of ranges, not on how many integers they cover.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    """Sorted disjoint inclusive ranges.

    With ``max_ranges`` set, the lowest ranges are forgotten beyond that count, which for packet
    numbers only means very old packets are no longer re-acknowledged. ``None`` keeps them all.
    """

    __slots__ = ("_his", "_los", "max_ranges")

    def __init__(self, max_ranges: int | None = 32) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        self.max_ranges = max_ranges

    def __len__(self) -> int:
        """The number of ranges (not of integers)."""
        return len(self._los)

    def __bool__(self) -> bool:
        return bool(self._los)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._los, value) - 1
        return i >= 0 and value <= self._his[i]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Ranges in ascending order."""
        return zip(self._los, self._his, strict=True)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def add(self, value: int) -> None:
        los, his = self._los, self._his
        i = bisect.bisect_right(los, value) - 1
        if i >= 0 and value <= his[i]:
            return
        joins_left = i >= 0 and his[i] == value - 1
        joins_right = i + 1 < len(los) and los[i + 1] == value + 1
        if joins_left and joins_right:
            his[i] = his[i + 1]
            del los[i + 1], his[i + 1]
        elif joins_left:
            his[i] = value
        elif joins_right:
            los[i + 1] = value
        else:
            los.insert(i + 1, value)
            his.insert(i + 1, value)
            if self.max_ranges is not None and len(los) > self.max_ranges:
                self._trim()

    def add_range(self, lo: int, hi: int) -> None:
        """Add every integer of ``lo..hi`` (inclusive); an empty range (hi < lo) is ignored."""
        if hi < lo:
            return
        los, his = self._los, self._his
        # ranges i..j-1 overlap or touch [lo, hi]
        i = bisect.bisect_left(his, lo - 1)
        j = bisect.bisect_right(los, hi + 1)
        if i < j:
            lo = min(lo, los[i])
            hi = max(hi, his[j - 1])
        los[i:j] = (lo,)
        his[i:j] = (hi,)
        if i == j and self.max_ranges is not None and len(los) > self.max_ranges:
            self._trim()

    def remove_range(self, lo: int, hi: int) -> None:
        """Remove every integer of ``lo..hi`` (inclusive)."""
        if hi < lo:
            return
        los, his = self._los, self._his
        i = bisect.bisect_left(his, lo)
        j = bisect.bisect_right(los, hi)
        if i >= j:
            return
        new_los: list[int] = []
        new_his: list[int] = []
        if los[i] < lo:
            new_los.append(los[i])
            new_his.append(lo - 1)
        if his[j - 1] > hi:
            new_los.append(hi + 1)
            new_his.append(his[j - 1])
        los[i:j] = new_los
        his[i:j] = new_his

    def discard_below(self, value: int) -> None:
        """Forget every integer smaller than ``value``."""
        los, his = self._los, self._his
        i = bisect.bisect_left(his, value)
        if i:
            del los[:i], his[:i]
        if los and los[0] < value:
            los[0] = value

    def covers(self, lo: int, hi: int) -> bool:
        """True if all of ``lo..hi`` is in the set."""
        i = bisect.bisect_right(self._los, lo) - 1
        return i >= 0 and hi <= self._his[i]

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``lo..hi`` not in the set, ascending."""
        if hi < lo:
            return []
        los, his = self._los, self._his
        i = bisect.bisect_left(his, lo)
        j = bisect.bisect_right(los, hi)
        out: list[tuple[int, int]] = []
        cursor = lo
        for k in range(i, j):
            if los[k] > cursor:
                out.append((cursor, los[k] - 1))
            cursor = max(cursor, his[k] + 1)
        if cursor <= hi:
            out.append((cursor, hi))
        return out

    def first(self) -> tuple[int, int] | None:
        """The lowest range."""
        return (self._los[0], self._his[0]) if self._los else None

    def shift_first(self, count: int) -> tuple[int, int] | None:
        """Remove and return up to ``count`` integers from the start of the lowest range."""
        los, his = self._los, self._his
        if not los or count <= 0:
            return None
        lo = los[0]
        hi = min(his[0], lo + count - 1)
        if hi == his[0]:
            del los[0], his[0]
        else:
            los[0] = hi + 1
        return lo, hi

    def descending(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(reversed(self._los), reversed(self._his), strict=True))

    def min(self) -> int | None:
        return self._los[0] if self._los else None

    def max(self) -> int | None:
        return self._his[-1] if self._his else None

    def clear(self) -> None:
        self._los.clear()
        self._his.clear()

    def _trim(self) -> None:
        limit = self.max_ranges
        if limit is not None and len(self._los) > limit:
            extra = len(self._los) - limit
            del self._los[:extra], self._his[:extra]
