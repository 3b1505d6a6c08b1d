"""Wall-clock sources for EMCL timestamps.

EMCL timestamps are compared across machines, so they are Unix time, not trio's monotonic
clock. Everything that reads the time takes a ``Clock`` so tests can drive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

#: Returns the current Unix time in seconds.
Clock = Callable[[], float]

system_clock: Clock = time.time


def trio_clock(epoch: float) -> Clock:
    """Unix time ``epoch`` at trio time zero, advancing with trio's clock (MockClock in tests)."""
    return lambda: epoch + trio.current_time()
