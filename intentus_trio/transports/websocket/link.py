"""The outbound half of one WebSocket connection, shared by client and server.

A WebSocket frame that is half written cannot be taken back: the peer would read the rest
of the stream as garbage. So a frame whose write has begun is always finished, shielded
from the caller's cancellation but bounded by ``send_timeout``; waiting for one's turn is
cancellable. A peer that does not read for ``send_timeout`` is treated as gone: the link
breaks, ``on_broken`` ends the connection, and every later send fails at once.

Over plain TCP the ``DirectStream`` below the library keeps that promise itself (a write
either completes at once or is finished shielded), and the library's own lock orders the
writers, so a send costs no cancel scope of its own, and usually no yield either
(``DirectWriter``). Over TLS the whole send is shielded: the TLS layer cannot be
interrupted half way through a record either.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from ...protocol.errors import ConnectionFailure
from .stream import DirectStream, DirectWriter


def describe_close(reason: CloseReason | None) -> str:
    if reason is None:
        return "connection closed"
    text = f"closed with code {reason.code} ({reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


class Link:
    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        send_timeout: float,
        close_timeout: float,
        on_broken: Callable[[str], None],
        direct: DirectStream | None = None,
    ) -> None:
        self.ws = ws
        #: The plain TCP stream under ``ws``, whose writes are already atomic; None for TLS.
        self.direct = direct
        self.writer = DirectWriter.of(ws, direct)
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.on_broken = on_broken
        #: Why the link can no longer send, once it cannot.
        self.broken: str | None = None
        self._lock = trio.Lock()
        self.sent = 0

    def _break(self, reason: str) -> ConnectionFailure:
        if self.broken is None:
            self.broken = reason
            self.on_broken(reason)
        return ConnectionFailure(f"WebSocket connection lost: {self.broken}",
                                 details={"reason": self.broken})

    def can_send_now(self) -> bool:
        """True when ``send`` would write at once, without waiting (and so without a
        cancellation point)."""
        writer = self.writer
        return self.broken is None and writer is not None and writer.ready()

    async def send(self, text: str) -> None:
        """Write one message; raises ``ConnectionFailure`` if the connection is unusable."""
        if self.broken is not None:
            raise self._break(self.broken)
        direct = self.direct
        if direct is not None:
            writer = self.writer
            if writer is not None and writer.ready():
                try:
                    await writer.send(text)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise self._break(direct.failure or "connection lost") from None
                self.sent += 1
                return
            try:
                await self.ws.send_message(text)
            except ConnectionClosed as exc:
                raise self._break(direct.failure or describe_close(exc.reason)) from None
            self.sent += 1
            return
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            # One scope: shielded from the caller, bounded by send_timeout.
            with trio.CancelScope(
                shield=True, deadline=trio.current_time() + self.send_timeout
            ) as scope:
                try:
                    await self.ws.send_message(text)
                except ConnectionClosed as exc:
                    raise self._break(describe_close(exc.reason)) from None
            if scope.cancelled_caught:
                raise self._break(f"peer did not read for {self.send_timeout} s")
            self.sent += 1
        finally:
            self._lock.release()

    async def ping(self, timeout: float) -> bool:
        """Send a ping; True if its pong arrived within ``timeout`` seconds."""
        if self.broken is not None:
            return False
        with trio.move_on_after(timeout):
            try:
                await self.ws.ping()
            except ConnectionClosed:
                return False
            return True
        return False

    async def close(
        self, code: int = 1000, reason: str | None = None, *, abort: bool = False
    ) -> None:
        """Close politely, or give up after ``close_timeout`` (the socket is closed anyway).

        Under cancellation the closing handshake cannot complete (the library's reader is
        being cancelled too), and an aborted peer would not answer: then the socket is
        closed at once.
        """
        cancelled = trio.current_effective_deadline() == -math.inf
        timeout = 0.0 if abort or cancelled else self.close_timeout
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self.ws.aclose(code, reason)
