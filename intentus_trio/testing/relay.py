"""A UDP impairment relay on the loopback interface, for tests with real sockets.

The kernel here offers no netem, so loss, duplication, reordering, delay and corruption between
real sockets are made in userspace: clients talk to the relay, the relay talks to the target
through one upstream socket per client (so replies find their way back to the right client), and
both directions pass through the same `LinkModel` impairments as the in-memory network.

    async with open_udp_relay(target=server_address, loss=0.05, delay=0.01, seed=3) as relay:
        client.send_nowait(request, relay.address)
        ...
        assert relay.stats.to_target.lost == ...

Only loopback targets are accepted: the relay exists to shape traffic on this machine and must
never become a way to send impaired traffic elsewhere.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import NoReturn

import attrs
import trio

from intentus_trio._groups import unwrap_single
from intentus_trio.mxp.carrier import Address, UdpCarrier, open_udp_carrier
from intentus_trio.testing.netsim import (
    DelayLine,
    ImpairmentStats,
    LinkConditions,
    LinkModel,
)

__all__ = ["RelayStats", "UdpRelay", "open_udp_relay", "serve_udp_relay"]

DEFAULT_SOCKET_BUFFER = 1 << 20


def loopback_address(address: tuple[str, int], *, what: str, allow_port_zero: bool) -> Address:
    """Validate and canonicalise a loopback (host, port); anything else is a ValueError."""
    host, port = address
    literal = "127.0.0.1" if host == "localhost" else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        raise ValueError(
            f"{what} must be a numeric loopback address (127.0.0.0/8 or ::1) so relayed "
            f"traffic stays on this machine; got {host!r}"
        ) from None
    if not ip.is_loopback:
        raise ValueError(
            f"{what} must be a loopback address (127.0.0.0/8 or ::1) so relayed traffic "
            f"stays on this machine; got {host!r}"
        )
    low = 0 if allow_port_zero else 1
    if not isinstance(port, int) or not low <= port <= 65535:
        raise ValueError(f"{what} port out of range: {port!r}")
    return (str(ip), port)


@attrs.define
class RelayStats:
    """What the relay saw and did, per direction and per client."""

    to_target: ImpairmentStats = attrs.Factory(ImpairmentStats)
    to_client: ImpairmentStats = attrs.Factory(ImpairmentStats)
    clients: int = 0
    """Client sessions opened so far."""
    active_clients: int = 0
    clients_rejected: int = 0
    """Datagrams dropped because they came from a new client beyond `max_clients`."""
    stray: int = 0
    """Datagrams that reached an upstream socket from somewhere other than the target."""
    send_failed: int = 0
    """Forwards the OS refused (buffer full) or whose session had already closed."""


@attrs.define(eq=False)
class _Session:
    client: Address
    upstream: UdpCarrier
    to_target_rng: random.Random
    to_client_rng: random.Random
    scope: trio.CancelScope


class UdpRelay:
    """Forward datagrams between loopback clients and one loopback target, impaired both ways.

    Construct it, then `await nursery.start(relay.serve)` (which reports the bound address), or
    use `open_udp_relay`. Randomness is seeded per client session, in order of first contact,
    so a test with a fixed seed sees the same fates whatever ephemeral ports the OS picks.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        conditions: LinkConditions | None = None,
        seed: int = 0,
        max_clients: int = 256,
        idle_timeout: float | None = None,
        socket_buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
    ) -> None:
        self._target = loopback_address(target, what="relay target", allow_port_zero=False)
        self._listen = loopback_address((host, port), what="relay host", allow_port_zero=True)
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError("idle_timeout must be positive or None")
        self.seed = seed
        self.stats = RelayStats()
        self._conditions = conditions if conditions is not None else LinkConditions()
        self._to_target = LinkModel(self._conditions, self.stats.to_target)
        self._to_client = LinkModel(self._conditions, self.stats.to_client)
        self._max_clients = max_clients
        self._idle_timeout = idle_timeout
        self._buffer = socket_buffer_size
        self._sessions: dict[Address, _Session] = {}
        self._delay_line = DelayLine()
        self._progress = trio.lowlevel.ParkingLot()
        self._downstream: UdpCarrier | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def target(self) -> Address:
        return self._target

    @property
    def address(self) -> Address:
        """Where clients send; known once `serve` has started."""
        if self._downstream is None:
            raise RuntimeError("the relay is not serving")
        return self._downstream.local_address

    @property
    def conditions(self) -> LinkConditions:
        return self._conditions

    @conditions.setter
    def conditions(self, conditions: LinkConditions) -> None:
        """Change the impairments (both ways) for datagrams relayed from now on."""
        self._conditions = conditions
        self._to_target.conditions = conditions
        self._to_client.conditions = conditions

    def upstream_address(self, client: Address) -> Address | None:
        """The relay's socket that talks to the target on behalf of `client`, if any."""
        session = self._sessions.get(client)
        return None if session is None else session.upstream.local_address

    async def wait_until(self, predicate: Callable[[RelayStats], bool]) -> None:
        """Return once `predicate(self.stats)` holds; re-checked whenever the relay does work.

        Lets a test wait for "all echoes have passed the relay" instead of sleeping.
        """
        while not predicate(self.stats):
            await self._progress.park()
        await trio.lowlevel.checkpoint()

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        if self._downstream is not None:
            raise RuntimeError("this relay is already serving")
        downstream = await open_udp_carrier(
            self._listen[0],
            self._listen[1],
            receive_buffer_size=self._buffer,
            send_buffer_size=self._buffer,
        )
        self._downstream = downstream
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._delay_line.run)
                task_status.started(downstream.local_address)
                await self._pump_downstream(downstream)
        finally:
            self._nursery = None
            self._downstream = None
            for session in list(self._sessions.values()):
                session.upstream.close()
            self._sessions.clear()
            self._delay_line.clear()
            downstream.close()
            self._progress.unpark_all()

    # -- client -> target -----------------------------------------------------------------------

    async def _pump_downstream(self, downstream: UdpCarrier) -> NoReturn:
        while True:
            await downstream.wait_readable()
            while (item := downstream.receive_nowait()) is not None:
                data, client = item
                session = self._sessions.get(client) or self._open_session(client)
                if session is None:
                    continue
                self._touch(session)
                self._impair(
                    self._to_target,
                    session.to_target_rng,
                    data,
                    partial(self._send_to_target, session),
                )
            self._progress.unpark_all()

    def _open_session(self, client: Address) -> _Session | None:
        if len(self._sessions) >= self._max_clients:
            self.stats.clients_rejected += 1
            return None
        assert self._nursery is not None
        family = socket.AF_INET6 if ":" in self._target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self._buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._buffer)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._buffer)
            sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            upstream = UdpCarrier(sock)
        except BaseException:
            sock.close()
            raise
        index = self.stats.clients
        session = _Session(
            client=client,
            upstream=upstream,
            to_target_rng=random.Random(f"{self.seed}|{index}|to_target"),
            to_client_rng=random.Random(f"{self.seed}|{index}|to_client"),
            scope=trio.CancelScope(),
        )
        self._sessions[client] = session
        self.stats.clients += 1
        self.stats.active_clients += 1
        self._nursery.start_soon(self._pump_upstream, session)
        return session

    def _send_to_target(self, session: _Session, data: bytes) -> None:
        if session.upstream.closed or not session.upstream.send_nowait(data, self._target):
            self.stats.send_failed += 1
            return
        self.stats.to_target.delivered += 1
        self.stats.to_target.delivered_bytes += len(data)

    # -- target -> client -----------------------------------------------------------------------

    async def _pump_upstream(self, session: _Session) -> None:
        upstream = session.upstream
        try:
            with session.scope:
                while True:
                    await upstream.wait_readable()
                    while (item := upstream.receive_nowait()) is not None:
                        data, source = item
                        if source != self._target:
                            self.stats.stray += 1
                            continue
                        self._touch(session)
                        self._impair(
                            self._to_client,
                            session.to_client_rng,
                            data,
                            partial(self._send_to_client, session.client),
                        )
                    self._progress.unpark_all()
        finally:
            upstream.close()
            if self._sessions.get(session.client) is session:
                del self._sessions[session.client]
            self.stats.active_clients -= 1
            self._progress.unpark_all()

    def _send_to_client(self, client: Address, data: bytes) -> None:
        downstream = self._downstream
        if downstream is None or not downstream.send_nowait(data, client):
            self.stats.send_failed += 1
            return
        self.stats.to_client.delivered += 1
        self.stats.to_client.delivered_bytes += len(data)

    # -- shared -----------------------------------------------------------------------------------

    def _touch(self, session: _Session) -> None:
        if self._idle_timeout is not None:
            session.scope.deadline = trio.current_time() + self._idle_timeout

    def _impair(
        self,
        link: LinkModel,
        rng: random.Random,
        data: bytes,
        send: Callable[[bytes], None],
    ) -> None:
        now = trio.current_time()
        for at, payload in link.transmit(data, now, rng).copies:
            if at <= now:
                send(payload)
            else:
                self._delay_line.schedule(at, partial(self._send_later, send, payload))

    def _send_later(self, send: Callable[[bytes], None], payload: bytes) -> None:
        send(payload)
        self._progress.unpark_all()


def _relay(
    target: tuple[str, int], host: str, port: int, loss: float, duplicate: float,
    reorder: float, reorder_delay: float, delay: float, jitter: float, corrupt: float,
    mtu: int | None, seed: int, max_clients: int, idle_timeout: float | None,
) -> UdpRelay:
    """The relay both entry points run: one set of impairments, applied both ways."""
    conditions = LinkConditions(loss=loss, duplicate=duplicate, reorder=reorder,
                                reorder_delay=reorder_delay, delay=delay, jitter=jitter,
                                corrupt=corrupt, mtu=mtu)
    return UdpRelay(target, host=host, port=port, conditions=conditions, seed=seed,
                    max_clients=max_clients, idle_timeout=idle_timeout)


async def serve_udp_relay(
    target: tuple[str, int],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    reorder_delay: float = 0.005,
    delay: float = 0.0,
    jitter: float = 0.0,
    corrupt: float = 0.0,
    mtu: int | None = None,
    seed: int = 0,
    max_clients: int = 256,
    idle_timeout: float | None = None,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run an impairment relay until cancelled; `nursery.start` returns its bound address.

    The impairments mean what they mean in `LinkConditions` and apply in both directions.
    """
    relay = _relay(target, host, port, loss, duplicate, reorder, reorder_delay, delay, jitter,
                   corrupt, mtu, seed, max_clients, idle_timeout)
    await relay.serve(task_status=task_status)


@asynccontextmanager
async def open_udp_relay(
    target: tuple[str, int],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    reorder_delay: float = 0.005,
    delay: float = 0.0,
    jitter: float = 0.0,
    corrupt: float = 0.0,
    mtu: int | None = None,
    seed: int = 0,
    max_clients: int = 256,
    idle_timeout: float | None = None,
) -> AsyncIterator[UdpRelay]:
    """Run an impairment relay for the duration of the block; its sockets close on exit."""
    relay = _relay(target, host, port, loss, duplicate, reorder, reorder_delay, delay, jitter,
                   corrupt, mtu, seed, max_clients, idle_timeout)
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            try:
                yield relay
            finally:
                nursery.cancel_scope.cancel()
