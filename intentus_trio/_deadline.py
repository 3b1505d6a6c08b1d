"""Optional deadlines around a coroutine.

A trio cancel scope costs several microseconds to enter and leave on this class of machine,
more than a whole in-process call, so a deadline is only set up when one is asked for.
Calls without a deadline still obey every cancel scope of the caller, which is how trio
code normally bounds work (``with trio.fail_after(...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import trio

T = TypeVar("T")


class Timeout(Exception):
    """The deadline expired before the coroutine finished."""


async def run_with_timeout(coro: Awaitable[T], timeout: float | None) -> T:
    """Await ``coro``; raise ``Timeout`` if it is still running after ``timeout`` seconds."""
    if timeout is None:
        return await coro
    with trio.move_on_after(timeout):
        return await coro
    raise Timeout
