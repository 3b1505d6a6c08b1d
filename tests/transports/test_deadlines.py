"""The shared deadline heap: expiry order, finished entries skipped, slack batching."""

from __future__ import annotations

import weakref

import pytest
import trio
import trio.testing

from intentus_trio.transports.deadlines import Deadlines


class Op:
    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False


async def test_expires_in_order_and_skips_finished(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    deadlines: Deadlines[Op] = Deadlines(
        lambda op: fired.append((op.name, trio.current_time())), lambda op: op.done)
    async with trio.open_nursery() as nursery:
        await nursery.start(deadlines.run)
        start = trio.current_time()
        late, early, finished = Op("late"), Op("early"), Op("finished")
        deadlines.add(start + 3, late)
        deadlines.add(start + 1, early)  # moves the timer's wait forward
        deadlines.add(start + 2, finished)
        finished.done = True
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [(name, at - start) for name, at in fired] == [("early", 1.0), ("late", 3.0)]


async def test_slack_serves_steady_traffic_in_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One operation due every 10 ms: with 100 ms of slack the timer acts ~10 times a
    second, each entry at most 100 ms late, never early."""
    lateness: list[float] = []
    wakes: set[float] = set()

    def expire(op: Op) -> None:
        now = trio.current_time()
        wakes.add(now)
        lateness.append(now - float(op.name))

    deadlines: Deadlines[Op] = Deadlines(expire, lambda op: op.done, slack=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(deadlines.run)
        for _ in range(300):
            deadlines.add(trio.current_time() + 1.0, Op(repr(trio.current_time() + 1.0)))
            await trio.sleep(0.01)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert len(lateness) == 300
    assert all(0 <= late <= 0.1 + 1e-9 for late in lateness)
    assert len(wakes) <= 35


def test_negative_slack_is_refused() -> None:
    with pytest.raises(ValueError):
        Deadlines(lambda op: None, lambda op: False, slack=-1)


def test_finished_calls_are_released_when_the_next_one_is_added() -> None:
    """Sequential calls under one timeout: each finished call leaves the heap as the next
    is added, so finished calls (and the frames they hold) are not kept alive in bulk."""
    deadlines: Deadlines[Op] = Deadlines(lambda op: None, lambda op: op.done)
    released: list[str] = []
    for i in range(500):
        op = Op(str(i))
        weakref.finalize(op, released.append, op.name)
        deadlines.add(float(i), op)
        op.done = True
        del op
        assert len(deadlines) == 1
    assert len(released) == 499
    # An unfinished entry at the top keeps its place, and finished ones behind it wait for
    # the periodic drop.
    deadlines.add(1000.0, Op("stuck"))  # drops "499"
    late = Op("late")
    deadlines.add(2000.0, late)
    late.done = True
    deadlines.add(3000.0, Op("next"))
    assert len(deadlines) == 3
