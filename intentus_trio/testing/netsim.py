"""A deterministic in-memory datagram network with impairments, for trio tests.

Real sockets cannot lose, duplicate, reorder, delay or corrupt datagrams on demand, and their
timing is not reproducible. `MemoryNetwork` can: endpoints bound to (host, port) addresses exchange
datagrams through links whose impairments are drawn from seeded random streams and whose delays
run on trio's clock. Under `trio.testing.MockClock` (pytest-trio's `autojump_clock`) a whole
network of MXP nodes therefore runs fast and reproduces the same delivery trace for the same seed.

Each endpoint is a `MemoryCarrier`, which implements the same `DatagramCarrier` protocol as the
real `UdpCarrier`, so a driver under test cannot tell the difference.

    async with open_memory_network(seed=7, conditions=LinkConditions(loss=0.05)) as net:
        a = net.bind(("10.0.0.1", 4433))
        b = net.bind(("10.0.0.2", 0))          # port 0 picks a free port
        net.set_link("10.0.0.1", "10.0.0.2", LinkConditions(delay=0.02, jitter=0.005))
        with net.partitioned(["10.0.0.1"], ["10.0.0.2"]):
            ...                                   # nothing crosses until the block ends

Randomness is drawn from one stream per (source, destination) address pair, seeded from the
network seed and the two addresses, so the fate of one flow's datagrams does not depend on how
trio happened to interleave the tasks of other flows.
"""

from __future__ import annotations

import enum
import errno
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, NoReturn

import attrs
import trio

from intentus_trio._groups import unwrap_single
from intentus_trio.mxp.carrier import Address, CarrierStats

__all__ = [
    "PERFECT",
    "DelayLine",
    "EventKind",
    "ImpairmentStats",
    "LinkConditions",
    "LinkModel",
    "MemoryCarrier",
    "MemoryNetwork",
    "NetEvent",
    "NetworkStats",
    "Partition",
    "Transmission",
    "open_memory_network",
]

MAX_DATAGRAM_SIZE = 65507
"""The largest UDP payload over IPv4; larger sends are local misuse, as with a real socket."""

DEFAULT_RECEIVE_QUEUE_SIZE = 1024

Member = str | Address
"""A partition member: a host (every port on it) or one exact endpoint address."""


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0 or math.isinf(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


@attrs.frozen
class LinkConditions:
    """How one direction of a link treats datagrams. The default is a perfect link.

    Per datagram, in order: drop if larger than `mtu`; drop with probability `loss`; send a
    second copy with probability `duplicate`; then per copy: flip one random bit with probability
    `corrupt`; wait for the wire if `bandwidth` (bytes/s) is set, dropping the copy when it would
    raise the backlog (bytes not yet fully sent, including itself) above `queue_limit`; travel
    for `delay` ± uniform `jitter` seconds (so jitter alone reorders, as on a real path), plus
    `reorder_delay` with probability `reorder` (held back, so later datagrams overtake it).
    """

    loss: float = attrs.field(default=0.0, validator=_probability)
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    reorder_delay: float = attrs.field(default=0.005, validator=_non_negative)
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.0, validator=_non_negative)
    corrupt: float = attrs.field(default=0.0, validator=_probability)
    mtu: int | None = attrs.field(default=None, validator=_positive_or_none)
    bandwidth: float | None = attrs.field(default=None, validator=_positive_or_none)
    queue_limit: int | None = attrs.field(default=None, validator=_positive_or_none)

    def __attrs_post_init__(self) -> None:
        if self.queue_limit is not None and self.bandwidth is None:
            raise ValueError("queue_limit needs a bandwidth: without one nothing ever queues")


PERFECT = LinkConditions()


@attrs.define
class ImpairmentStats:
    """What links did to the datagrams offered to them."""

    offered: int = 0
    offered_bytes: int = 0
    lost: int = 0
    duplicated: int = 0
    """Datagrams that got an extra copy."""
    corrupted: int = 0
    """Copies with a flipped bit."""
    reordered: int = 0
    """Copies held back by `reorder_delay`."""
    oversize: int = 0
    """Datagrams dropped for exceeding the MTU."""
    queue_overflow: int = 0
    """Copies dropped because the bandwidth-limited queue was full."""
    delivered: int = 0
    delivered_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.define
class NetworkStats(ImpairmentStats):
    """Link impairments plus what the network itself dropped."""

    partitioned: int = 0
    unroutable: int = 0
    """Copies that arrived where no endpoint was bound."""
    receive_overflow: int = 0
    """Copies dropped because the destination endpoint's receive queue was full."""


class EventKind(enum.StrEnum):
    """The fate of a datagram (or of one copy of it) in a trace."""

    DELIVERED = "delivered"
    LOST = "lost"
    OVERSIZE = "oversize"
    QUEUE_OVERFLOW = "queue_overflow"
    PARTITIONED = "partitioned"
    UNROUTABLE = "unroutable"
    RECEIVE_OVERFLOW = "receive_overflow"


@attrs.frozen
class NetEvent:
    """One entry of a network trace; `time` counts from the start of `MemoryNetwork.run`."""

    time: float
    kind: EventKind
    source: Address
    destination: Address
    data: bytes


@attrs.frozen
class Transmission:
    """A link's verdict: the copies that will arrive (time, bytes) or why none will."""

    copies: tuple[tuple[float, bytes], ...]
    dropped: EventKind | None = None


def _flip_bit(data: bytes, bit: int) -> bytes:
    buf = bytearray(data)
    buf[bit >> 3] ^= 1 << (bit & 7)
    return bytes(buf)


class LinkModel:
    """One direction of a link, sans-IO: datagram + now + random stream -> arrival times.

    It keeps only the wire's busy-until time (for bandwidth); randomness comes from the caller
    so several flows can share a link yet keep independent, reproducible streams.
    """

    def __init__(
        self, conditions: LinkConditions = PERFECT, stats: ImpairmentStats | None = None
    ) -> None:
        self.conditions = conditions
        self.stats = stats if stats is not None else ImpairmentStats()
        self._busy_until = -math.inf

    def transmit(self, data: bytes, now: float, rng: random.Random) -> Transmission:
        c = self.conditions
        stats = self.stats
        size = len(data)
        stats.offered += 1
        stats.offered_bytes += size
        if c.mtu is not None and size > c.mtu:
            stats.oversize += 1
            return Transmission((), EventKind.OVERSIZE)
        if c.loss and rng.random() < c.loss:
            stats.lost += 1
            return Transmission((), EventKind.LOST)
        count = 1
        if c.duplicate and rng.random() < c.duplicate:
            stats.duplicated += 1
            count = 2
        copies: list[tuple[float, bytes]] = []
        for _ in range(count):
            payload = data
            if c.corrupt and size and rng.random() < c.corrupt:
                payload = _flip_bit(data, rng.randrange(size * 8))
                stats.corrupted += 1
            departure = now
            if c.bandwidth is not None:
                start = max(now, self._busy_until)
                backlog = (start - now) * c.bandwidth
                if c.queue_limit is not None and backlog > 0 and backlog + size > c.queue_limit:
                    stats.queue_overflow += 1
                    continue
                departure = self._busy_until = start + size / c.bandwidth
            latency = c.delay
            if c.jitter:
                latency = max(0.0, latency + rng.uniform(-c.jitter, c.jitter))
            if c.reorder and rng.random() < c.reorder:
                latency += c.reorder_delay
                stats.reordered += 1
            copies.append((departure + latency, payload))
        if not copies:
            return Transmission((), EventKind.QUEUE_OVERFLOW)
        return Transmission(tuple(copies))


class DelayLine:
    """Callbacks due at trio times, run by one task.

    The task sleeps in a cancel scope whose deadline is the earliest due time; scheduling an
    earlier callback just moves that deadline. With MockClock's autojump the clock leaps straight
    to the next due time, so simulated seconds cost nothing.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._timer: trio.CancelScope | None = None
        self._running = False

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def running(self) -> bool:
        return self._running

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (at, next(self._order), action))
        timer = self._timer
        if timer is not None and at < timer.deadline:
            timer.deadline = at

    def clear(self) -> None:
        self._heap.clear()

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            heapq.heappop(heap)[2]()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        if self._running:
            raise RuntimeError("this DelayLine is already running")
        self._running = True
        try:
            task_status.started()
            while True:
                deadline = self._heap[0][0] if self._heap else math.inf
                with trio.CancelScope(deadline=deadline) as self._timer:
                    await trio.sleep_forever()
                self._timer = None
                self.run_due(trio.current_time())
        finally:
            self._timer = None
            self._running = False


class MemoryCarrier:
    """An endpoint of a `MemoryNetwork`; a `DatagramCarrier` with a bounded receive queue."""

    def __init__(self, network: MemoryNetwork, address: Address, queue_size: int) -> None:
        self._network = network
        self._address = address
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queue_size = queue_size
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._stats = CarrierStats()

    @property
    def local_address(self) -> Address:
        return self._address

    @property
    def stats(self) -> CarrierStats:
        return self._stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def network(self) -> MemoryNetwork:
        return self._network

    @property
    def queued(self) -> int:
        """Datagrams waiting in the receive queue."""
        return len(self._queue)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("carrier is closed")

    async def wait_readable(self) -> None:
        self._check_open()
        if self._queue:
            await trio.lowlevel.checkpoint()
            self._check_open()
            return
        if self._lot.statistics().tasks_waiting:
            raise trio.BusyResourceError("another task is already waiting on this carrier")
        await self._lot.park()
        self._check_open()

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        self._check_open()
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._stats.received += 1
        self._stats.received_bytes += len(item[0])
        return item

    def send_nowait(self, data: bytes, address: Address) -> bool:
        self._check_open()
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) > MAX_DATAGRAM_SIZE:
            raise OSError(errno.EMSGSIZE, "datagram larger than the UDP maximum")
        self._stats.sent += 1
        self._stats.sent_bytes += len(data)
        self._network._transmit(self._address, (address[0], address[1]), data)
        return True

    async def send(self, data: bytes, address: Address) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.send_nowait(data, address)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._network._unbind(self)
        self._lot.unpark_all()

    def _arrive(self, data: bytes, source: Address) -> bool:
        if len(self._queue) >= self._queue_size:
            self._stats.receive_dropped += 1
            self._stats.receive_dropped_bytes += len(data)
            return False
        self._queue.append((data, source))
        self._lot.unpark_all()
        return True

    def __enter__(self) -> MemoryCarrier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryCarrier {self._address[0]}:{self._address[1]} {state}>"


@attrs.frozen(eq=False)
class Partition:
    """A cut between two sets of hosts/endpoints; see `MemoryNetwork.partition`."""

    side_a: frozenset[Member]
    side_b: frozenset[Member]

    def separates(self, source: Address, destination: Address) -> bool:
        a, b = self.side_a, self.side_b
        return (_member_of(source, a) and _member_of(destination, b)) or (
            _member_of(source, b) and _member_of(destination, a)
        )


def _member_of(address: Address, side: frozenset[Member]) -> bool:
    return address in side or address[0] in side


def _side(members: Collection[Member]) -> frozenset[Member]:
    if isinstance(members, str):
        raise TypeError("a partition side is a collection of hosts or addresses, not one string")
    side: set[Member] = set()
    for member in members:
        side.add(member if isinstance(member, str) else (member[0], member[1]))
    return frozenset(side)


class MemoryNetwork:
    """Endpoints, links and partitions, advanced by trio's clock.

    Datagrams whose total latency is zero are delivered inside `send_nowait`; later arrivals wait
    in a `DelayLine` driven by `run()`, which `open_memory_network` starts in a nursery the
    network owns. Without a running network, delayed datagrams never arrive.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        conditions: LinkConditions = PERFECT,
        receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
        trace: bool = False,
    ) -> None:
        if receive_queue_size < 1:
            raise ValueError("receive_queue_size must be at least 1")
        self.seed = seed
        self.stats = NetworkStats()
        self.trace: list[NetEvent] | None = [] if trace else None
        self._conditions = conditions
        self._receive_queue_size = receive_queue_size
        self._link_conditions: dict[tuple[str, str], LinkConditions] = {}
        self._links: dict[tuple[str, str], LinkModel] = {}
        self._streams: dict[tuple[Address, Address], random.Random] = {}
        self._endpoints: dict[Address, MemoryCarrier] = {}
        self._next_port: dict[str, int] = {}
        self._partitions: list[Partition] = []
        self._delay_line = DelayLine()
        self._epoch = 0.0
        self._closed = False

    # -- configuration ---------------------------------------------------------------------

    @property
    def conditions(self) -> LinkConditions:
        """The conditions of every link without its own (`set_link`)."""
        return self._conditions

    @conditions.setter
    def conditions(self, conditions: LinkConditions) -> None:
        self._conditions = conditions
        self._refresh_links()

    def set_link(
        self,
        host_a: str,
        host_b: str,
        conditions: LinkConditions | None,
        *,
        both_ways: bool = True,
    ) -> None:
        """Give the link host_a -> host_b (and back, by default) its own conditions.

        None returns the link to the network-wide conditions. Changes apply to datagrams sent
        from now on; datagrams already in flight keep their arrival times.
        """
        pairs = [(host_a, host_b)]
        if both_ways and host_a != host_b:
            pairs.append((host_b, host_a))
        for pair in pairs:
            if conditions is None:
                self._link_conditions.pop(pair, None)
            else:
                self._link_conditions[pair] = conditions
        self._refresh_links()

    def link_conditions(self, source_host: str, destination_host: str) -> LinkConditions:
        return self._link_conditions.get((source_host, destination_host), self._conditions)

    def _refresh_links(self) -> None:
        for (src, dst), link in self._links.items():
            link.conditions = self.link_conditions(src, dst)

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[Address, MemoryCarrier]:
        """The bound endpoints (a copy)."""
        return dict(self._endpoints)

    def bind(self, address: Address, *, queue_size: int | None = None) -> MemoryCarrier:
        """Bind an endpoint; port 0 picks the next free port on that host (from 49152)."""
        if self._closed:
            raise trio.ClosedResourceError("network is closed")
        host, port = address
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port!r}")
        if port == 0:
            port = self._free_port(host)
        elif (host, port) in self._endpoints:
            raise OSError(errno.EADDRINUSE, f"address in use: {host}:{port}")
        size = self._receive_queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError("queue_size must be at least 1")
        carrier = MemoryCarrier(self, (host, port), size)
        self._endpoints[(host, port)] = carrier
        return carrier

    def _free_port(self, host: str) -> int:
        start = self._next_port.get(host, 49152)
        for offset in range(65536 - 49152):
            port = 49152 + (start - 49152 + offset) % (65536 - 49152)
            if (host, port) not in self._endpoints:
                self._next_port[host] = port + 1 if port < 65535 else 49152
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"no free port on {host}")

    def _unbind(self, carrier: MemoryCarrier) -> None:
        if self._endpoints.get(carrier.local_address) is carrier:
            del self._endpoints[carrier.local_address]

    # -- partitions --------------------------------------------------------------------------

    def partition(self, side_a: Collection[Member], side_b: Collection[Member]) -> Partition:
        """Drop everything between the two sides, both ways, until healed.

        Members are hosts (all their ports) or exact addresses. Datagrams already in flight
        across the cut are dropped on arrival, as if the cable were pulled.
        """
        cut = Partition(_side(side_a), _side(side_b))
        self._partitions.append(cut)
        return cut

    def heal(self, partition: Partition | None = None) -> None:
        """Remove one partition, or all of them."""
        if partition is None:
            self._partitions.clear()
        elif partition in self._partitions:
            self._partitions.remove(partition)

    @contextmanager
    def partitioned(
        self, side_a: Collection[Member], side_b: Collection[Member]
    ) -> Iterator[Partition]:
        cut = self.partition(side_a, side_b)
        try:
            yield cut
        finally:
            self.heal(cut)

    def _is_cut(self, source: Address, destination: Address) -> bool:
        return any(cut.separates(source, destination) for cut in self._partitions)

    # -- running -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Copies scheduled to arrive later."""
        return len(self._delay_line)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Deliver delayed datagrams until cancelled."""
        if self._closed:
            raise trio.ClosedResourceError("network is closed")
        self._epoch = trio.current_time()
        await self._delay_line.run(task_status=task_status)

    def close(self) -> None:
        """Close every endpoint and forget datagrams in flight."""
        if self._closed:
            return
        self._closed = True
        for carrier in list(self._endpoints.values()):
            carrier.close()
        self._delay_line.clear()

    # -- the datapath ------------------------------------------------------------------------

    def _record(self, kind: EventKind, src: Address, dst: Address, data: bytes) -> None:
        if self.trace is not None:
            now = trio.current_time() - self._epoch
            self.trace.append(NetEvent(now, kind, src, dst, data))

    def _link(self, src_host: str, dst_host: str) -> LinkModel:
        link = self._links.get((src_host, dst_host))
        if link is None:
            link = LinkModel(self.link_conditions(src_host, dst_host), self.stats)
            self._links[(src_host, dst_host)] = link
        return link

    def _stream(self, src: Address, dst: Address) -> random.Random:
        rng = self._streams.get((src, dst))
        if rng is None:
            rng = random.Random(f"{self.seed}|{src[0]}|{src[1]}|{dst[0]}|{dst[1]}")
            self._streams[(src, dst)] = rng
        return rng

    def _transmit(self, src: Address, dst: Address, data: bytes) -> None:
        if self._partitions and self._is_cut(src, dst):
            self.stats.offered += 1
            self.stats.offered_bytes += len(data)
            self.stats.partitioned += 1
            self._record(EventKind.PARTITIONED, src, dst, data)
            return
        now = trio.current_time()
        verdict = self._link(src[0], dst[0]).transmit(data, now, self._stream(src, dst))
        if verdict.dropped is not None:
            self._record(verdict.dropped, src, dst, data)
        for at, payload in verdict.copies:
            if at <= now:
                self._arrive(src, dst, payload)
            else:
                self._delay_line.schedule(at, partial(self._arrive, src, dst, payload))

    def _arrive(self, src: Address, dst: Address, data: bytes) -> None:
        stats = self.stats
        if self._partitions and self._is_cut(src, dst):
            stats.partitioned += 1
            self._record(EventKind.PARTITIONED, src, dst, data)
            return
        endpoint = self._endpoints.get(dst)
        if endpoint is None:
            stats.unroutable += 1
            self._record(EventKind.UNROUTABLE, src, dst, data)
            return
        if not endpoint._arrive(data, src):
            stats.receive_overflow += 1
            self._record(EventKind.RECEIVE_OVERFLOW, src, dst, data)
            return
        stats.delivered += 1
        stats.delivered_bytes += len(data)
        self._record(EventKind.DELIVERED, src, dst, data)


@asynccontextmanager
async def open_memory_network(
    *,
    seed: int = 0,
    conditions: LinkConditions = PERFECT,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    trace: bool = False,
) -> AsyncIterator[MemoryNetwork]:
    """Run a `MemoryNetwork` for the duration of the block; leaving it closes every endpoint.

    An exception from the block propagates as itself, not wrapped in an ExceptionGroup.
    """
    network = MemoryNetwork(
        seed=seed, conditions=conditions, receive_queue_size=receive_queue_size, trace=trace
    )
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            try:
                yield network
            finally:
                network.close()
                nursery.cancel_scope.cancel()
