"""A bounded set of integers kept as disjoint ranges; feeds ACK frames."""

from __future__ import annotations

import bisect


class RangeSet:
    """Sorted disjoint inclusive ranges. Beyond ``max_ranges`` the lowest ranges are forgotten,
    which only means very old packets are no longer re-acknowledged."""

    def __init__(self, max_ranges: int = 32) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        self.max_ranges = max_ranges

    def __len__(self) -> int:
        return len(self._los)

    def __bool__(self) -> bool:
        return bool(self._los)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._los, value) - 1
        return i >= 0 and value <= self._his[i]

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
        if len(los) > self.max_ranges:
            del los[0], his[0]

    def descending(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(reversed(self._los), reversed(self._his), strict=True))

    def max(self) -> int | None:
        return self._his[-1] if self._his else None
