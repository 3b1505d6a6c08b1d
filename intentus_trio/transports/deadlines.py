"""Deadlines of many operations served by one task.

A cancel scope per call costs more than the rest of a call's bookkeeping on either side
(entering and leaving one, or even moving its deadline, is a dozen function calls), so a
connection keeps its calls' deadlines in a heap instead and one task acts on the ones that
pass: an entry costs a heap push. Entries of operations that finished in time leave the
heap's top as the next entry is added (calls under one timeout finish roughly in deadline
order), or in a bulk drop otherwise: finished calls are not kept alive in numbers, which
would make the garbage collector run under steady traffic.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Deadlines(Generic[T]):
    """Calls ``expire(item)`` once ``item``'s deadline passes (at most ``slack`` seconds
    later), unless ``done(item)``."""

    #: Finished entries are dropped once the heap holds this many, or twice the entries
    #: left by the last drop: a few list passes per hundred calls, and finished calls are
    #: not kept alive long (they hold their frames).
    MIN_COMPACT = 128

    def __init__(
        self, expire: Callable[[T], None], done: Callable[[T], bool], *, slack: float = 0.0
    ) -> None:
        if slack < 0:
            raise ValueError("slack must not be negative")
        self._expire = expire
        self._done = done
        self._slack = slack
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        #: Heap size at which finished entries are dropped next.
        self._compact_at = self.MIN_COMPACT
        #: The timer's wait, while it waits (its deadline is the earliest entry's), and that
        #: deadline as a plain float (a cancel scope's ``deadline`` is a Python property).
        self._wait: trio.CancelScope | None = None
        self._wake_at = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, item: T) -> None:
        heap = self._heap
        done = self._done
        # Calls mostly finish in the order their deadlines fall (one timeout for all): the
        # earliest entry is then a finished one, and dropping it here keeps the heap short.
        while heap and done(heap[0][2]):
            heapq.heappop(heap)
        if len(heap) >= self._compact_at:
            heap[:] = [entry for entry in heap if not done(entry[2])]
            heapq.heapify(heap)
            self._compact_at = max(self.MIN_COMPACT, 2 * len(heap))
        heapq.heappush(heap, (deadline, next(self._seq), item))
        wake_at = deadline + self._slack
        if wake_at < self._wake_at and self._wait is not None:
            self._wait.deadline = self._wake_at = wake_at

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the deadlines until cancelled (``nursery.start`` returns once it serves)."""
        heap, slack = self._heap, self._slack
        task_status.started()
        while True:
            self._wake_at = heap[0][0] + slack if heap else math.inf
            with trio.CancelScope(deadline=self._wake_at) as wait:
                self._wait = wait
                await trio.sleep_forever()
            self._wait = None
            self._wake_at = math.inf
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)[2]
                if not self._done(item):
                    self._expire(item)
