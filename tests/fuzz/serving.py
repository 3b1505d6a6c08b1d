"""A server on a trio loop of its own thread, shared by all examples of one fuzz test.

Hypothesis runs each example of an async test in a fresh trio run; starting a real server
for every example would dominate the run time. Here one server per test serves every
example, and an example that crashes it is caught by ``check()``, not by the next
example's connection failing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Served(Generic[T]):
    """What the starter returned (``value``), and whether the server still runs."""

    def __init__(self, value: T, thread: threading.Thread, errors: list[BaseException]) -> None:
        self.value = value
        self._thread = thread
        self._errors = errors

    def check(self) -> None:
        """Fail if the server's loop has ended (a request crashed it)."""
        if self._errors:
            raise AssertionError("the server crashed") from self._errors[0]
        assert self._thread.is_alive(), "the server stopped"


@contextmanager
def serving_in_thread(start: Callable[[trio.Nursery], Awaitable[T]]) -> Iterator[Served[T]]:
    """Run ``await start(nursery)`` in a new thread's trio loop until the block exits."""
    handed: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.CancelScope] | None] = (
        queue.Queue())
    errors: list[BaseException] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            value = await start(nursery)
            handed.put((value, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            errors.append(exc)
        finally:
            handed.put(None)

    thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
    thread.start()
    item = handed.get(timeout=30)
    if item is None:
        thread.join(30)
        raise AssertionError("the server did not start") from (errors[0] if errors else None)
    value, token, scope = item
    try:
        yield Served(value, thread, errors)
    finally:
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(30)
    assert not thread.is_alive(), "the server did not stop"
    if errors:
        raise AssertionError("the server crashed") from errors[0]
