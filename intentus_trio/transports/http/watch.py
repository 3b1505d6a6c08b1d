"""Cancelling a request's work when its client disconnects, without a task per request.

An ASGI server reports a disconnect only through the request's ``receive()``, and lets the
request's task run on. Noticing it takes a task waiting there, and spawning one for every
call costs more than the rest of a short call's handling on the server. So a call only
registers itself (a heap entry); calls still running ``WATCH_AFTER`` seconds later get a
watcher task from one long-lived service (``DisconnectWatch.run``, which ``HttpServer``
runs). The same heap serves the calls' deadlines (a cancel scope without a deadline of its
own is cheaper to enter and leave), acting on them at most ``WATCH_AFTER`` late. Without
the service (the app mounted in another ASGI server) every call gets its own watcher at
once and its own timed cancel scope.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

from ..deadlines import Deadlines

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Seconds a call runs before a watcher starts waiting for its client's disconnect.
WATCH_AFTER: Final = 0.05


class Attended:
    """One call's record: its scope, and whether its client left (``gone``)."""

    __slots__ = ("deadline", "finished", "gone", "receive", "scope", "watched", "watcher")

    def __init__(self, receive: Receive, deadline: float) -> None:
        self.receive = receive
        self.deadline = deadline
        self.scope = trio.CancelScope()
        self.finished = False
        self.gone = False
        self.watched = False
        self.watcher: trio.CancelScope | None = None

    @property
    def timed_out(self) -> bool:
        """The call's deadline, not its client, cut it short."""
        return self.scope.cancelled_caught and not self.gone


def _finished(call: Attended) -> bool:
    return call.finished


class DisconnectWatch:
    """Runs calls so that a client's disconnect cancels its call (see the module doc)."""

    def __init__(self) -> None:
        self._deadlines: Deadlines[Attended] = Deadlines(self._due, _finished,
                                                         slack=WATCH_AFTER)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve watchers until cancelled (``nursery.start`` returns once it serves)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._deadlines.run(task_status=task_status)
            finally:
                self._nursery = None

    async def attend(
        self, receive: Receive, work: Callable[[], Awaitable[None]], deadline: float = math.inf
    ) -> Attended:
        """Run ``work()`` until it returns, ``deadline`` passes or the client disconnects;
        the record returned says which (``gone``, ``timed_out``)."""
        call = Attended(receive, deadline)
        if self._nursery is None:
            call.scope.deadline = deadline
            with call.scope:
                async with trio.open_nursery() as own:
                    own.start_soon(self._watch, call)
                    await work()
                    own.cancel_scope.cancel()
            return call
        self._deadlines.add(min(trio.current_time() + WATCH_AFTER, deadline), call)
        with call.scope:
            try:
                await work()
            finally:
                call.finished = True
                if call.watcher is not None:
                    call.watcher.cancel()
        return call

    def _due(self, call: Attended) -> None:
        """The call ran ``WATCH_AFTER`` seconds or reached its deadline."""
        if trio.current_time() >= call.deadline:
            call.scope.cancel()
            return
        if not call.watched and self._nursery is not None:
            call.watched = True
            self._nursery.start_soon(self._watch, call)
        if call.deadline != math.inf:
            self._deadlines.add(call.deadline, call)

    @staticmethod
    async def _watch(call: Attended) -> None:
        with trio.CancelScope() as call.watcher:
            if call.finished:
                return
            while (await call.receive())["type"] != "http.disconnect":
                pass
            call.gone = True
            call.scope.cancel()
