"""A pool of tasks serving the messages of one socket, with no task switch per message.

One member receives at a time; it handles what it received itself. Only when a handler
actually suspends (an agent awaiting I/O) does an idle member take over receiving. Handlers
that finish without suspending (most agents, most of the time) thus run inline, message after
message, while slow ones still run concurrently, up to the pool size. The first suspension is
noticed by driving the handler's coroutine by hand and forwarding its trio traps unchanged.

Deadlines: a cancel scope per message would cost more than the rest of the pool's work, so
each member runs inside one long-lived scope instead. A handler that wants a deadline awaits
its work through ``current_member().guarded(deadline, work, on_expiry)``; when the deadline
passes while the work is still running, the pool's timer cancels the member's scope (the
handler and its agent get ``Cancelled``); the member then awaits ``on_expiry`` and starts
again in a fresh scope. Work that finishes without suspending cannot be interrupted anyway,
so its deadline enters the timer's heap only at the work's first suspension.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any, TypeVar

import trio

from ..deadlines import Deadlines
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


class Member:
    """One pool task, as its handlers see it (``current_member()``)."""

    __slots__ = ("_call", "_calls", "_deadline", "_deadlines", "_expired", "scope")

    def __init__(self, deadlines: Deadlines[tuple[Member, int]]) -> None:
        self._deadlines = deadlines
        self._calls = itertools.count(1)
        #: The work running under a deadline (0: none), and that deadline.
        self._call = 0
        self._deadline = 0.0
        self.scope: trio.CancelScope | None = None
        #: What the member awaits after a deadline stopped the handler.
        self._expired: Callable[[], Awaitable[None]] | None = None

    async def guarded(
        self,
        deadline: float,
        work: Coroutine[Any, Any, T],
        on_expiry: Callable[[], Awaitable[None]],
    ) -> T:
        """``await work``, stopped at ``deadline`` (then the member awaits ``on_expiry``)."""
        call = self._call = next(self._calls)
        self._expired = on_expiry
        self._deadline = deadline
        try:
            result = await run_inline(work, self._arm)
        finally:
            in_time = self._call == call
            if in_time:
                self._call = 0
                self._expired = None
        if not in_time:  # finished, but after its deadline (the work shielded itself)
            await trio.lowlevel.checkpoint()  # raises Cancelled: on_expiry answers instead
        return result

    def _arm(self) -> None:
        self._deadlines.add(self._deadline, (self, self._call))

    def _expire(self, call: int) -> None:
        if self._call == call and self.scope is not None:
            self._call = 0
            self.scope.cancel()


def _expire(entry: tuple[Member, int]) -> None:
    entry[0]._expire(entry[1])


def _finished(entry: tuple[Member, int]) -> bool:
    return entry[0]._call != entry[1]


_MEMBER: ContextVar[Member] = ContextVar("intentus_trio_zmq_pool_member")


def current_member() -> Member:
    """The pool member running the calling handler (LookupError outside a pool)."""
    return _MEMBER.get()


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
        self._deadlines = Deadlines[tuple[Member, int]](_expire, _finished)

    async def run(self) -> None:
        """Serve until the socket is closed or its receiving side shut down."""
        async with trio.open_nursery() as nursery:
            timer = trio.CancelScope()

            async def run_timer() -> None:
                with timer:
                    await self._deadlines.run()

            nursery.start_soon(run_timer)
            async with trio.open_nursery() as members:
                for _ in range(self.size):
                    members.start_soon(self._member)
            timer.cancel()

    def _take_over(self) -> None:
        self._idle.unpark()

    async def _member(self) -> None:
        member = Member(self._deadlines)
        _MEMBER.set(member)
        try:
            while True:
                with trio.CancelScope() as scope:
                    member.scope = scope
                    await self._serve()
                    return
                # A handler's deadline cancelled the scope: answer for it, then go on.
                expired, member._expired = member._expired, None
                if expired is not None:
                    await expired()
        finally:
            # Whoever stops must not leave the others parked with nobody receiving.
            self._idle.unpark_all()

    async def _serve(self) -> None:
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
