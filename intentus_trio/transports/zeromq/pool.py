"""A pool of tasks serving the messages of one socket, with no task switch per message.

One member receives at a time; it handles what it received itself. Only when a handler
actually suspends (an agent awaiting I/O) does an idle member take over receiving. Handlers
that finish without suspending (most agents, most of the time) thus run inline, message after
message, while slow ones still run concurrently, up to the pool size. The first suspension is
noticed by driving the handler's coroutine by hand and forwarding its trio traps unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

import trio

from ..zmq_trio import TrioSocket

T = TypeVar("T")

#: Members yield to the scheduler after this many messages handled without suspending.
FAIRNESS_BATCH = 64


@types.coroutine
def run_inline(
    coro: Coroutine[Any, Any, T], on_suspend: Callable[[], None]
) -> Generator[Any, Any, T]:
    """``await coro``, calling ``on_suspend`` the first time it suspends."""
    try:
        trap = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    on_suspend()
    while True:
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as done:
                result = done.value
                return result
        else:
            try:
                trap = coro.send(value)
            except StopIteration as done:
                result = done.value
                return result


class ServingPool:
    """``size`` tasks handling the messages of ``sock`` with ``handle`` (see module doc)."""

    def __init__(
        self,
        sock: TrioSocket,
        handle: Callable[[list[bytes]], Coroutine[Any, Any, None]],
        size: int,
        *,
        idle_hook: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one task")
        self.sock = sock
        self.handle = handle
        self.size = size
        self.idle_hook = idle_hook
        self._receiving = False
        self._idle = trio.lowlevel.ParkingLot()

    async def run(self) -> None:
        """Serve until the socket is closed or its receiving side shut down."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.size):
                nursery.start_soon(self._member)

    def _take_over(self) -> None:
        self._idle.unpark()

    async def _member(self) -> None:
        sock = self.sock
        handled = 0
        try:
            while True:
                if self._receiving:
                    await self._idle.park()
                    continue
                self._receiving = True
                try:
                    if self.idle_hook is None:
                        frames = await sock.receive()
                    else:
                        try:
                            frames = sock.receive_nowait()
                        except trio.WouldBlock:
                            await self.idle_hook()
                            frames = await sock.receive()
                finally:
                    self._receiving = False
                await run_inline(self.handle(frames), self._take_over)
                handled += 1
                if not handled % FAIRNESS_BATCH:
                    await trio.lowlevel.checkpoint()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return
        finally:
            # Whoever stops must not leave the others parked with nobody receiving.
            self._idle.unpark_all()
