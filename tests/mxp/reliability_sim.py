"""A pure-Python two-peer harness for the reliability layers, with virtual time.

Each :class:`SimPeer` wires streams, ACK tracking, loss recovery, congestion control, pacing,
flow control and the packet assembler the way a connection does, but a "packet" is just an
8-byte packet number, the payload and 16 filler bytes standing in for the AEAD tag. The
:class:`SimLink` loses, reorders and duplicates datagrams from a seeded random stream and can
model a bottleneck (rate plus a bounded queue), so every run is reproducible.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import attrs

from intentus_trio.mxp.congestion import make_controller
from intentus_trio.mxp.frames import Ack
from intentus_trio.mxp.pacing import Pacer
from intentus_trio.mxp.recovery import AckTracker, LossRecovery
from intentus_trio.mxp.scheduler import PacketAssembler, Scheduler
from intentus_trio.mxp.stream_frames import (
    STREAM_FRAME_CLASSES,
    StreamFrame,
    decode_payload,
    is_ack_eliciting,
)
from intentus_trio.mxp.streams import StreamLimits, StreamManager

HEADER = 8
TAG = 16


class SimPeer:
    def __init__(
        self,
        name: str,
        *,
        is_client: bool,
        local: StreamLimits,
        peer: StreamLimits,
        mtu: int = 1200,
        congestion: str = "newreno",
        max_ack_delay: float = 0.025,
        pacing: bool = True,
        quantum: int = 8192,
    ) -> None:
        self.name = name
        self.mtu = mtu
        self.cc = make_controller(congestion, mtu)
        self.recovery = LossRecovery(self.cc, max_ack_delay=max_ack_delay)
        self.acks = AckTracker(max_ack_delay=max_ack_delay)
        self.pacer = Pacer(mtu) if pacing else None
        self.streams = StreamManager(
            is_client=is_client,
            local=local,
            peer=peer,
            scheduler=Scheduler(quantum),
            rtt=self.recovery.rtt,
        )
        self.assembler = PacketAssembler(self.streams, self.acks, self.recovery, self.pacer)
        self.next_pn = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.stream_bytes_sent = 0
        self.on_frame: Callable[[StreamFrame], None] | None = None

    def receive(self, datagram: bytes, now: float) -> None:
        self.datagrams_received += 1
        pn = int.from_bytes(datagram[:HEADER], "big")
        frames = decode_payload(memoryview(datagram)[HEADER:-TAG])
        eliciting = any(is_ack_eliciting(f) for f in frames)
        self.acks.on_packet_received(pn, eliciting, now)
        for frame in frames:
            if isinstance(frame, Ack):
                self.recovery.on_ack_received(frame.ranges, frame.delay / 1e6, now)
            elif isinstance(frame, STREAM_FRAME_CLASSES):
                if self.on_frame is not None and isinstance(frame, StreamFrame):
                    self.on_frame(frame)
                self.streams.handle_frame(frame, now)

    def send(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        limit = self.mtu - HEADER - TAG
        while True:
            packet = self.assembler.build(now, limit)
            if packet is None:
                return out
            pn = self.next_pn
            self.next_pn += 1
            datagram = pn.to_bytes(HEADER, "big") + bytes(packet.payload) + bytes(TAG)
            self.assembler.on_packet_sent(packet, pn, len(datagram), now)
            self.datagrams_sent += 1
            out.append(datagram)

    def on_timer(self, now: float) -> None:
        deadline = self.recovery.deadline()
        if deadline is not None and now >= deadline:
            self.recovery.on_timeout(now)

    def next_deadline(self, now: float) -> float | None:
        candidates = [
            t
            for t in (
                self.acks.deadline,
                self.recovery.deadline(),
                self.assembler.next_send_time(now),
            )
            if t is not None
        ]
        return min(candidates) if candidates else None


@attrs.define
class SimLink:
    """One direction of a path: base delay, seeded impairments, optional bottleneck."""

    rng: random.Random
    delay: float = 0.010
    loss: float = 0.0
    reorder: float = 0.0
    reorder_extra: float = 0.015
    duplicate: float = 0.0
    rate: float | None = None  # bytes per second at the bottleneck
    queue_delay: float = 0.05  # drop-tail once the queue holds this much time
    blackout: tuple[float, float] | None = None  # everything sent in [start, end) is lost
    lost: int = 0
    _free_at: float = 0.0

    def transit(self, now: float, size: int) -> list[float]:
        """Arrival times for one datagram (none if lost, two if duplicated)."""
        if self.blackout is not None and self.blackout[0] <= now < self.blackout[1]:
            self.lost += 1
            return []
        if self.rate is not None:
            start = max(now, self._free_at)
            if start - now > self.queue_delay:
                self.lost += 1
                return []
            self._free_at = start + size / self.rate
            now = self._free_at
        if self.rng.random() < self.loss:
            self.lost += 1
            return []
        out = [now + self.delay + self._extra()]
        if self.rng.random() < self.duplicate:
            out.append(now + self.delay + self._extra() + 0.001)
        return out

    def _extra(self) -> float:
        return self.rng.uniform(0, self.reorder_extra) if self.rng.random() < self.reorder else 0.0


class _Idle(AssertionError):
    pass


class Simulation:
    def __init__(self, a: SimPeer, b: SimPeer, ab: SimLink, ba: SimLink) -> None:
        self.a, self.b = a, b
        self.links = {a.name: (ab, b), b.name: (ba, a)}
        self.now = 0.0
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._seq = 0
        self.on_tick: Callable[[Simulation], None] | None = None
        self.app_timer: float | None = None  # when on_tick wants to run again

    def _pump(self, peer: SimPeer) -> None:
        link, dest = self.links[peer.name]
        for datagram in peer.send(self.now):
            for arrival in link.transit(self.now, len(datagram)):
                self._seq += 1
                heapq.heappush(self._queue, (arrival, self._seq, dest.name, datagram))

    def run_until_idle(self, max_time: float = 120.0) -> None:
        """Run until neither peer has anything to send or wait for."""
        try:
            self.run(lambda: False, max_time)
        except _Idle:
            return

    def run(self, done: Callable[[], bool], max_time: float = 120.0) -> None:
        peers = {self.a.name: self.a, self.b.name: self.b}
        spins = 0
        while not done():
            if self.on_tick is not None:
                self.on_tick(self)
            self._pump(self.a)
            self._pump(self.b)
            candidates = [t for t in (p.next_deadline(self.now) for p in peers.values()) if t]
            if self._queue:
                candidates.append(self._queue[0][0])
            if self.app_timer is not None and self.app_timer > self.now:
                candidates.append(self.app_timer)
            if not candidates:
                raise _Idle(f"deadlock at t={self.now:.3f}: nothing to wait for")
            nxt = min(candidates)
            if nxt <= self.now:
                spins += 1
                if spins > 1000:
                    raise AssertionError(f"busy loop at t={self.now:.3f}")
            else:
                spins = 0
                self.now = nxt
            if self.now > max_time:
                raise AssertionError(f"not done after {max_time} s of virtual time")
            while self._queue and self._queue[0][0] <= self.now:
                _, _, name, datagram = heapq.heappop(self._queue)
                peers[name].receive(datagram, self.now)
            for p in peers.values():
                p.on_timer(self.now)
