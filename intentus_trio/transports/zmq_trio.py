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

import itertools
import os
import struct
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, cast

import trio
import zmq
from zmq.backend import Socket as _Base

__all__ = ["DEFAULT_LINGER_MS", "CloseWatch", "Frames", "Link", "TrioSocket", "shared_context"]

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


_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_MONITOR_STOPPED = int(zmq.EVENT_MONITOR_STOPPED)
_monitor_ids = itertools.count(1)


def _event(frames: list[bytes]) -> int:
    """The event number of a monitor message (its first two bytes, in native order).

    pyzmq's ``parse_monitor_message`` would do, but its module imports asyncio, which
    costs a client about 50M instructions at start.
    """
    event: int = struct.unpack_from("=H", frames[0])[0]
    return event


class _Monitor:
    """The receiving end of libzmq's monitor of one socket, and its safe disposal.

    libzmq sends monitor events with a *blocking* send. Once our end is closed, the next
    event (at the latest ``EVENT_MONITOR_STOPPED``, when a closed socket is finally
    destroyed) would block libzmq's I/O or reaper thread for good, and with it every later
    close in the process. So our end is closed only after libzmq has stopped the monitor:
    ``release`` stops it itself while the socket is open; for a socket already closed it
    waits for the stop report, keeping the end among ``_unstopped`` until that has come.
    """

    __slots__ = ("pair", "sock", "stopped")

    def __init__(self, sock: TrioSocket, events: int) -> None:
        _sweep()
        # A name of our own: pyzmq's default is made of the socket's FD number, which libzmq
        # releases before it stops the monitor of a closed socket.
        address = f"inproc://intentus-monitor-{os.getpid()}-{next(_monitor_ids)}"
        self.sock = sock
        self.pair = TrioSocket(
            sock.socket.get_monitor_socket(events | _MONITOR_STOPPED, address), linger_ms=0)
        self.stopped = False

    async def receive(self) -> int:
        """The next event; raises ``trio.ClosedResourceError`` once released."""
        event = _event(await self.pair.receive())
        if event == _MONITOR_STOPPED:
            self.stopped = True
        return event

    def release(self) -> None:
        """Stop receiving events (idempotent); a waiting ``receive`` raises EndOfChannel."""
        if self.pair.closed:
            return
        if not self.stopped and not self.sock.closed:
            # libzmq queues its stop report for our (still open) end and sends no more.
            self.sock.socket.disable_monitor()
            self.stopped = True
        if self.stopped:
            self.pair.close(0)
        else:
            self.pair.shutdown_receive()
            with _unstopped_lock:
                _unstopped.append(self)


#: Monitors released after their socket was closed, until libzmq reports the stop (any
#: thread's trio loop may create and release monitors).
_unstopped: list[_Monitor] = []
_unstopped_lock = threading.Lock()


def _sweep() -> None:
    if not _unstopped:
        return
    with _unstopped_lock:
        for monitor in list(_unstopped):
            with suppress(zmq.Again):
                while not monitor.stopped:
                    frames = monitor.pair.socket.recv_multipart(zmq.NOBLOCK)
                    monitor.stopped = _event(frames) == _MONITOR_STOPPED
            if monitor.stopped:
                _unstopped.remove(monitor)
                monitor.pair.close(0)


class Link:
    """Whether a connecting socket has a live connection, from libzmq's socket monitor.

    ``ZMQ_IMMEDIATE`` answers the same question inside libzmq, but pays for it: when its
    connection drops, libzmq discards the messages the socket received and the application
    has not read yet. A socket without it keeps those messages across the drop, and its
    owner asks ``up`` before queueing anything that only a live peer should take. It also
    keeps the messages it has not written out yet, for the next connection: an owner that
    must not send them there closes the socket without linger when the link is lost.

    Create the link before the socket connects (so it sees the first handshake), run
    ``run`` in a task, and ``close`` it before the socket. The socket should have a single
    peer (one ``connect``): ``up`` follows that peer's last handshake or disconnect, as
    seen by ``run`` (so it may lag libzmq by one wakeup of that task).

    ``on_lost`` is called in ``run`` when a live connection drops, before anyone waiting
    for ``up`` to change is woken; it may close the link (``run`` then returns). libzmq
    reports the drop only after queueing on the socket every message that came over that
    connection, so by then they can all be read.
    """

    __slots__ = ("_closed", "_down", "_monitor", "_on_lost", "_up", "up")

    def __init__(self, sock: TrioSocket, *, on_lost: Callable[[], None] | None = None) -> None:
        self.up = False
        self._closed = False
        self._on_lost = on_lost
        self._monitor = _Monitor(sock, _HANDSHAKE_SUCCEEDED | _DISCONNECTED)
        self._up = trio.Event()
        self._down = trio.Event()
        self._down.set()

    async def run(self) -> None:
        """Follow the monitor until ``close`` (or the socket's end)."""
        while True:
            try:
                event = await self._monitor.receive()
            except (trio.ClosedResourceError, trio.EndOfChannel):
                return
            if event == _HANDSHAKE_SUCCEEDED:
                self._set(True)
            elif event == _DISCONNECTED:
                if self.up and self._on_lost is not None:
                    self.up = False
                    self._on_lost()
                    if self._closed:
                        return
                self._set(False)
            elif event == _MONITOR_STOPPED:
                self._set(False)
                return

    def _set(self, up: bool) -> None:
        self.up = up
        now, then = (self._up, self._down) if up else (self._down, self._up)
        now.set()
        if then.is_set():
            if up:
                self._down = trio.Event()
            else:
                self._up = trio.Event()

    async def wait_up(self) -> None:
        """Return once the socket has a live connection (at once if it has).

        Raises ``trio.ClosedResourceError`` once the link is closed.
        """
        while not self.up:
            if self._closed:
                raise trio.ClosedResourceError("the connection's monitor is closed")
            await self._up.wait()

    async def wait_down(self) -> None:
        """Return once the socket has no live connection (at once if it has none)."""
        while self.up:
            await self._down.wait()

    def close(self) -> None:
        """Stop following (idempotent); ``run`` returns, ``wait_up`` raises. The socket is
        left open."""
        self._closed = True
        self.up = False
        self._up.set()
        self._down.set()
        self._monitor.release()


class CloseWatch:
    """Closes a socket and tells when libzmq has finished with it.

    ``TrioSocket.close`` returns at once; libzmq then writes the socket's queued outgoing
    messages to the network in its I/O thread, for up to ``LINGER``. A process that exits
    meanwhile loses them. libzmq reports the socket's end (``EVENT_MONITOR_STOPPED``) only
    once that is done, so awaiting it makes "sent before closing" mean "handed to the
    network". Create the watch while the socket is open.
    """

    __slots__ = ("_monitor", "_sock")

    def __init__(self, sock: TrioSocket) -> None:
        self._sock = sock
        self._monitor = _Monitor(sock, _MONITOR_STOPPED)

    async def close(self) -> bool:
        """Close the socket and wait until libzmq has finished with it.

        True once it has; False if the watch was discarded first. Bound the wait with a
        deadline: libzmq needs up to the socket's ``LINGER`` after ``close``.
        """
        self._sock.close()
        monitor = self._monitor
        if monitor.pair.closed:
            return False
        try:
            while not monitor.stopped:
                await monitor.receive()
            return True
        except (trio.ClosedResourceError, trio.EndOfChannel):
            return False
        finally:
            monitor.release()

    def discard(self) -> None:
        """Stop watching (idempotent); the socket is left as it is."""
        self._monitor.release()
