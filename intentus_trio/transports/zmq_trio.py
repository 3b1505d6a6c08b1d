"""pyzmq sockets under trio, without threads.

A ZeroMQ socket exposes one file descriptor that is *edge-triggered*: it becomes readable when
the socket's internal mailbox has news, and any call on the socket (a send, a receive, or
reading ``EVENTS``) may consume that news. So the rules here are:

* every operation is non-blocking (``NOBLOCK``) and atomic: a multipart message is either
  queued whole or not at all (libzmq applies the high-water mark to a message's first frame
  only), so cancelling a waiting task never leaves half a message behind;
* ``EVENTS`` is read before anyone sleeps on the FD, and again after every send and receive,
  and what it shows is handed to whoever waits for it;
* exactly one task sleeps on the FD (trio allows no more). Other tasks park on a ParkingLot;
  whoever leaves the FD wakes one of them to take over, and a task whose own send or receive
  consumed the edge the FD sleeper was waiting for wakes it with ``notify_closing`` (the
  sleeper then sees ``ClosedResourceError`` on a socket that is still open and re-checks).
  A cancel scope would do the same but costs more than the rest of a wakeup together;
* a receiver woken on the FD tries to receive at once instead of reading ``EVENTS`` first:
  the receive processes the socket's pending commands itself, and finds the message the
  wakeup announced, so the common wakeup costs one ``EVENTS`` read less (pyzmq's
  ``getsockopt`` converts the option to an enum, which costs more than the libzmq call).

Send-side backpressure is the high-water mark: a send that meets it waits for ``POLLOUT``.
Closing wakes every waiter with ``trio.ClosedResourceError`` and closes the socket with a
bounded ``LINGER``, so terminating the context never hangs on unsent messages.

The hot path calls pyzmq's Cython socket methods directly with plain int flags: its Python
layer (``send_multipart``, enum conversions) costs more than the libzmq call itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, cast

import trio
import zmq
from zmq.backend import Socket as _Base

__all__ = ["DEFAULT_LINGER_MS", "Frames", "TrioSocket", "shared_context"]

#: How long unsent messages may delay a close, in milliseconds.
DEFAULT_LINGER_MS = 500

POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)

_send = _Base.send
_recv = _Base.recv
#: ``getsockopt`` for int options, without the enum conversion of pyzmq's Python layer.
_get = cast(Callable[[Any, int], int], _Base.get)

Frames = Sequence[bytes]

_CONTEXT: list[zmq.Context[Any]] = []


def shared_context() -> zmq.Context[Any]:
    """The process's ZeroMQ context; its I/O thread serves every socket of this process."""
    if not _CONTEXT or _CONTEXT[0].closed:
        _CONTEXT[:] = [zmq.Context()]
    return _CONTEXT[0]


class TrioSocket:
    """A pyzmq socket driven by trio: awaitable ``send``/``receive`` and non-blocking forms.

    Any number of tasks may send and receive; each message goes whole to exactly one of them.
    Configure the wrapped ``socket`` (bind, connect, options) directly; do not call its send
    or receive methods.
    """

    __slots__ = (
        "_closed",
        "_fd",
        "_fd_mask",
        "_fd_sleeper",
        "_interrupt",
        "_parked",
        "_readers",
        "_recv_shut",
        "_writers",
        "socket",
    )

    def __init__(self, socket: zmq.Socket[Any], *, linger_ms: int = DEFAULT_LINGER_MS) -> None:
        self.socket = socket
        socket.setsockopt(zmq.LINGER, linger_ms)
        self._fd = _get(socket, int(zmq.FD))
        self._closed = False
        self._recv_shut = False
        self._interrupt = False
        self._fd_sleeper: object | None = None
        self._fd_mask = 0
        #: Tasks parked in ``_readers`` or ``_writers`` (a ParkingLot's truth test is a
        #: Python call, and the hot path asks after every send and receive).
        self._parked = 0
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    @classmethod
    def open(
        cls,
        socket_type: int,
        *,
        context: zmq.Context[Any] | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
        options: dict[int, int | bytes] | None = None,
    ) -> TrioSocket:
        sock = (context or shared_context()).socket(socket_type)
        try:
            for option, value in (options or {}).items():
                sock.setsockopt(option, value)
            return cls(sock, linger_ms=linger_ms)
        except BaseException:
            sock.close(0)
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def events(self) -> int:
        """``EVENTS`` now (``POLLIN``/``POLLOUT`` bits); passes readiness on to waiters."""
        events: int = _get(self.socket, _EVENTS)
        if events and (self._fd_sleeper is not None or self._parked):
            self._handoff(events)
        return events

    # ------------------------------------------------------------------ readiness

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the ZeroMQ socket is closed")

    def _handoff(self, events: int) -> None:
        if events & POLLIN and self._readers:
            self._readers.unpark()
        if events & POLLOUT and self._writers:
            self._writers.unpark_all()
        if self._fd_sleeper is not None and events & self._fd_mask:
            self._kick()

    def _kick(self) -> None:
        """Wake the FD sleeper so it re-checks EVENTS."""
        self._fd_sleeper = None
        trio.lowlevel.notify_closing(self._fd)

    def _after_io(self) -> None:
        # The operation may have consumed the FD's edge: re-read EVENTS and pass it on.
        if self._fd_sleeper is not None or self._parked:
            self._handoff(_get(self.socket, _EVENTS))

    async def wait(self, mask: int) -> None:
        """Return once ``EVENTS`` has a bit of ``mask`` (``POLLIN`` and/or ``POLLOUT``)."""
        self._check_open()
        events = _get(self.socket, _EVENTS)
        while not events & mask:
            await self._turn(mask, events)
            events = _get(self.socket, _EVENTS)

    async def _turn(self, mask: int, events: int) -> bool:
        """Wait once: on the FD, or parked while another task sleeps on it.

        ``events`` is a fresh reading of ``EVENTS`` without a bit of ``mask``. Returns True
        if this task slept on the FD (the caller may then try its operation at once), False
        if it was parked and woken (the caller re-reads ``EVENTS``).
        """
        if mask & POLLIN:
            if self._recv_shut:
                raise trio.EndOfChannel
            if self._interrupt:
                self._interrupt = False
                raise trio.WouldBlock
        if events and self._parked:
            self._handoff(events)
        if self._fd_sleeper is None:
            token = self._fd_sleeper = object()
            self._fd_mask = mask
            try:
                await trio.lowlevel.wait_readable(self._fd)
            except trio.ClosedResourceError:
                if self._closed:
                    raise
                # Kicked: the caller re-checks.
            finally:
                if self._fd_sleeper is token:
                    self._fd_sleeper = None
                # Someone must sleep on the FD next (after re-checking EVENTS): hand the
                # role on.
                if self._parked:
                    if self._readers:
                        self._readers.unpark()
                    elif self._writers:
                        self._writers.unpark()
            slept = True
        else:
            self._parked += 1
            try:
                await (self._readers if mask & POLLIN else self._writers).park()
            finally:
                self._parked -= 1
            slept = False
        if self._closed:
            raise trio.ClosedResourceError("the ZeroMQ socket is closed")
        if mask & POLLIN and self._recv_shut:
            raise trio.EndOfChannel
        return slept

    # ------------------------------------------------------------------ I/O

    def _send_frames(self, frames: Frames) -> bool:
        sock = self.socket
        last = len(frames) - 1
        try:
            _send(sock, frames[0], _MORE if last else _NOBLOCK, True)
        except zmq.Again:
            return False
        for i in range(1, last + 1):
            # Past the first frame, libzmq accepts the rest of the message.
            _send(sock, frames[i], _MORE if i < last else _NOBLOCK, True)
        self._after_io()
        return True

    def _recv_frames(self) -> list[bytes]:
        sock = self.socket
        frames = []
        while True:
            frame = _recv(sock, _NOBLOCK, False)
            frames.append(frame.bytes)
            if not frame.more:
                break
        self._after_io()
        return frames

    def _try_recv(self) -> list[bytes] | None:
        """One whole message, or None if none is queued (``zmq.Again``, which costs more
        than an ``EVENTS`` read, so only where a message is all but certain)."""
        sock = self.socket
        try:
            frame = _recv(sock, _NOBLOCK, False)
        except zmq.Again:
            return None
        frames = [frame.bytes]
        while frame.more:
            frame = _recv(sock, _NOBLOCK, False)
            frames.append(frame.bytes)
        self._after_io()
        return frames

    def send_nowait(self, frames: Frames) -> None:
        """Queue one message or raise ``trio.WouldBlock`` (high-water mark reached)."""
        if self._closed:
            raise trio.ClosedResourceError("the ZeroMQ socket is closed")
        if not self._send_frames(frames):
            raise trio.WouldBlock

    async def send(self, frames: Frames) -> None:
        """Queue one message, waiting while the high-water mark is reached.

        Returns without yielding when the message is queued at once (a send never blocks
        on the network, only on the queue), so a sender that never fills the queue must
        checkpoint elsewhere.
        """
        self._check_open()
        while not self._send_frames(frames):
            await self.wait(POLLOUT)

    def receive_nowait(self) -> list[bytes]:
        """One whole message, or raise ``trio.WouldBlock``."""
        self._check_open()
        if self._recv_shut:
            raise trio.EndOfChannel
        if not _get(self.socket, _EVENTS) & POLLIN:
            raise trio.WouldBlock
        return self._recv_frames()

    async def receive(self) -> list[bytes]:
        """The next whole message (without yielding if one is already queued).

        Raises ``trio.EndOfChannel`` after ``shutdown_receive``.
        """
        if self._closed:
            raise trio.ClosedResourceError("the ZeroMQ socket is closed")
        if self._recv_shut:
            raise trio.EndOfChannel
        events = _get(self.socket, _EVENTS)
        while not events & POLLIN:
            if await self._turn(POLLIN, events):
                frames = self._try_recv()
                if frames is not None:
                    return frames
            events = _get(self.socket, _EVENTS)
        return self._recv_frames()

    # ------------------------------------------------------------------ lifecycle

    def interrupt_receive(self) -> None:
        """Make one waiting (or the next) ``receive`` raise ``trio.WouldBlock``.

        For an owner that keeps a single receiving task and must wake it for its own
        reasons (a deadline) without the cost of a cancel scope around every receive.
        """
        self._interrupt = True
        self._readers.unpark()
        if self._fd_sleeper is not None and self._fd_mask & POLLIN:
            self._kick()

    def shutdown_receive(self) -> None:
        """Make current and later receives raise ``trio.EndOfChannel``; sending still works.

        Messages already queued stay unread, which is how a server stops taking requests
        while it answers the ones it has.
        """
        self._recv_shut = True
        self._readers.unpark_all()
        if self._fd_sleeper is not None and self._fd_mask & POLLIN:
            self._kick()

    def close(self, linger_ms: int | None = None) -> None:
        """Close now; waiting tasks get ``trio.ClosedResourceError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with suppress(RuntimeError):  # outside trio nobody can be waiting
            trio.lowlevel.notify_closing(self._fd)
        self._readers.unpark_all()
        self._writers.unpark_all()
        self.socket.close(linger=linger_ms)

    def __enter__(self) -> TrioSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
