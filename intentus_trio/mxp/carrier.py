"""Datagram carriers: the one socket-like object an MXP trio driver owns.

The MXP protocol core is sans-IO; its driver only needs to wait for datagrams, drain them, and
send. `DatagramCarrier` is that narrow surface, so the same driver runs over a real UDP socket
(`UdpCarrier`) or over the deterministic in-memory network in `intentus_trio.testing.netsim`.

Receiving is split into `wait_readable()` + `receive_nowait()` on purpose: a driver wakes once and
then drains every queued datagram without another trip through the trio scheduler, which is
several times faster than one awaited receive per datagram.
"""

from __future__ import annotations

import errno
import socket
from typing import Protocol, runtime_checkable

import attrs
import trio

__all__ = [
    "Address",
    "CarrierStats",
    "DatagramCarrier",
    "UdpCarrier",
    "open_udp_carrier",
]

Address = tuple[str, int]
"""A numeric host and a port. IPv6 link-local scopes ride in the host string (``fe80::1%2``)."""

DEFAULT_MAX_DATAGRAM_SIZE = 65535

# Send failures that mean "this datagram is lost", not "the caller did something wrong": UDP is
# lossy, so the carrier counts them as drops instead of raising into the driver.
_TRANSIENT_SEND_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.ENOBUFS,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
    }
)


@attrs.define
class CarrierStats:
    """Counters of one carrier; plain ints so a driver can export them as metrics."""

    sent: int = 0
    sent_bytes: int = 0
    received: int = 0
    received_bytes: int = 0
    send_dropped: int = 0
    """Datagrams not sent because the OS send buffer was full (or the send failed transiently)."""
    send_dropped_bytes: int = 0
    receive_dropped: int = 0
    """Datagrams discarded on arrival because the carrier's receive queue was full."""
    receive_dropped_bytes: int = 0

    @property
    def dropped(self) -> int:
        """All datagrams this carrier lost, in either direction."""
        return self.send_dropped + self.receive_dropped

    @property
    def dropped_bytes(self) -> int:
        return self.send_dropped_bytes + self.receive_dropped_bytes


@runtime_checkable
class DatagramCarrier(Protocol):
    """What an MXP driver needs from a datagram socket.

    Only one task may wait on a carrier at a time (as with a trio socket); sending is allowed
    from any task. After `close()`, every method but `close()` raises `trio.ClosedResourceError`
    and a task blocked in `wait_readable()` is woken with that error.
    """

    @property
    def local_address(self) -> Address: ...

    @property
    def stats(self) -> CarrierStats: ...

    async def wait_readable(self) -> None:
        """Return once `receive_nowait()` is likely to yield a datagram."""
        ...

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        """Return the next queued datagram and its sender, or None when nothing is queued."""
        ...

    def send_nowait(self, data: bytes, address: Address) -> bool:
        """Send at once; return False (and count a drop) if the datagram could not be queued."""
        ...

    async def send(self, data: bytes, address: Address) -> None:
        """Send, waiting for buffer space instead of dropping."""
        ...

    def close(self) -> None: ...


def _normalize_address(raw: tuple[str, int] | tuple[str, int, int, int]) -> Address:
    """Reduce an IPv6 4-tuple to (host, port), keeping a non-zero scope in the host string."""
    if len(raw) == 4 and raw[3]:
        return (f"{raw[0]}%{raw[3]}", raw[1])
    return (raw[0], raw[1])


class UdpCarrier:
    """A `DatagramCarrier` over a non-blocking UDP socket.

    The socket is a stdlib socket in non-blocking mode, driven with `trio.lowlevel.wait_readable`
    / `wait_writable`: trio's own socket wrapper only offers awaited I/O, and draining needs a
    synchronous `recvfrom` that reports "empty" with `BlockingIOError`.

    Addresses passed to `send*` must be numeric (resolving a name here would block the run loop).
    """

    def __init__(
        self, sock: socket.socket, *, max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE
    ) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UdpCarrier needs a SOCK_DGRAM socket")
        sock.setblocking(False)
        self._sock = sock
        self._max_datagram_size = max_datagram_size
        self._local_address = _normalize_address(sock.getsockname())
        self._closed = False
        self._stats = CarrierStats()

    @property
    def local_address(self) -> Address:
        return self._local_address

    @property
    def stats(self) -> CarrierStats:
        return self._stats

    @property
    def family(self) -> socket.AddressFamily:
        return self._sock.family

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._sock.fileno()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("carrier is closed")

    async def wait_readable(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_readable(self._sock)

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        self._check_open()
        while True:
            try:
                data, raw = self._sock.recvfrom(self._max_datagram_size)
            except BlockingIOError:
                return None
            except (ConnectionRefusedError, ConnectionResetError):
                # An ICMP error from an earlier send surfacing here; not a datagram.
                continue
            self._stats.received += 1
            self._stats.received_bytes += len(data)
            return data, _normalize_address(raw)

    def send_nowait(self, data: bytes, address: Address) -> bool:
        self._check_open()
        try:
            self._sock.sendto(data, address)
        except OSError as exc:
            if exc.errno not in _TRANSIENT_SEND_ERRNOS:
                raise
            self._stats.send_dropped += 1
            self._stats.send_dropped_bytes += len(data)
            return False
        self._stats.sent += 1
        self._stats.sent_bytes += len(data)
        return True

    async def send(self, data: bytes, address: Address) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        while True:
            try:
                self._sock.sendto(data, address)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
                self._check_open()
                continue
            self._stats.sent += 1
            self._stats.sent_bytes += len(data)
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()

    def __enter__(self) -> UdpCarrier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<UdpCarrier {self._local_address[0]}:{self._local_address[1]} {state}>"


async def open_udp_carrier(
    host: str,
    port: int = 0,
    *,
    receive_buffer_size: int | None = None,
    send_buffer_size: int | None = None,
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE,
) -> UdpCarrier:
    """Bind a UDP socket on (host, port) — IPv4 or IPv6 by the host's family — as a carrier.

    Port 0 picks a free port (see `UdpCarrier.local_address`). The buffer sizes set SO_RCVBUF /
    SO_SNDBUF; a larger receive buffer absorbs bursts while the driver is busy.
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        if receive_buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_size)
        if send_buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_size)
        sock.setblocking(False)
        sock.bind(sockaddr)
        return UdpCarrier(sock, max_datagram_size=max_datagram_size)
    except BaseException:
        sock.close()
        raise
