"""Who sends next: stream priorities, and the assembler that fills one datagram.

:class:`Scheduler` serves urgency levels strictly in order (0 is the most urgent) and, within
a level, streams in deficit round-robin: each gets ``quantum`` bytes before it goes to the back
of its queue, so a small call waits behind at most one quantum of each bulk stream of its level.

:class:`PacketAssembler` builds one packet payload: the ACK first (it is small and unblocks the
peer's sender), then control frames (flow-control updates, resets...), then stream data picked
by the scheduler (retransmissions before new data), respecting the congestion window and the
pacer. Whatever the packet carries is recorded as deliveries for :mod:`recovery`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from intentus_trio.mxp.packet import SHORT_PN_OFFSET
from intentus_trio.mxp.protection import TAG_LEN
from intentus_trio.mxp.recovery import AckTracker, Delivery, LossRecovery, SentPacket

if TYPE_CHECKING:
    from intentus_trio.mxp.pacing import Pacer
    from intentus_trio.mxp.streams import StreamManager

DEFAULT_MAX_DATAGRAM = 1200


def payload_limit(max_datagram_size: int = DEFAULT_MAX_DATAGRAM, pn_len: int = 4) -> int:
    """Frame bytes that fit a 1-RTT packet of ``max_datagram_size`` bytes on the wire (short
    header, packet number, AEAD tag)."""
    return max_datagram_size - SHORT_PN_OFFSET - pn_len - TAG_LEN


URGENCY_LEVELS = 8
DEFAULT_URGENCY = 3
DEFAULT_QUANTUM = 8 * 1024


class Scheduler:
    """Strict priority across urgency levels, deficit round-robin within a level."""

    __slots__ = ("_deficit", "_queues", "_ready", "_urgency", "quantum")

    def __init__(self, quantum: int = DEFAULT_QUANTUM) -> None:
        self.quantum = quantum
        self._queues: list[collections.deque[int]] = [
            collections.deque() for _ in range(URGENCY_LEVELS)
        ]
        self._ready: dict[int, int] = {}
        self._deficit: dict[int, int] = {}
        self._urgency: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def __contains__(self, key: int) -> bool:
        return key in self._ready

    def urgency(self, key: int) -> int:
        return self._urgency.get(key, DEFAULT_URGENCY)

    def set_urgency(self, key: int, urgency: int) -> None:
        if not 0 <= urgency < URGENCY_LEVELS:
            raise ValueError(f"urgency must be 0..{URGENCY_LEVELS - 1}")
        if urgency == DEFAULT_URGENCY:
            self._urgency.pop(key, None)
        else:
            self._urgency[key] = urgency
        if key in self._ready and self._ready[key] != urgency:
            self.discard(key)
            self.push(key)

    def forget(self, key: int) -> None:
        """Drop everything known about ``key`` (the stream is gone)."""
        self.discard(key)
        self._urgency.pop(key, None)

    def push(self, key: int) -> None:
        """``key`` has something to send (idempotent)."""
        if key in self._ready:
            return
        level = self._urgency.get(key, DEFAULT_URGENCY)
        self._ready[key] = level
        self._queues[level].append(key)

    def discard(self, key: int) -> None:
        level = self._ready.pop(key, None)
        if level is None:
            return
        self._deficit.pop(key, None)
        queue = self._queues[level]
        if queue[0] == key:
            queue.popleft()
        else:
            queue.remove(key)

    def peek(self) -> int | None:
        """The key to serve now, or None."""
        if not self._ready:
            return None
        for queue in self._queues:
            if queue:
                return queue[0]
        return None  # pragma: no cover - _ready and the queues agree

    def charge(self, key: int, size: int, still_ready: bool) -> None:
        """``key`` just sent ``size`` bytes: rotate it once its quantum is used up."""
        if not still_ready:
            self.discard(key)
            return
        deficit = self._deficit.get(key, 0) + size
        if deficit < self.quantum:
            self._deficit[key] = deficit
            return
        self._deficit.pop(key, None)
        queue = self._queues[self._ready[key]]
        if queue[0] == key:
            queue.rotate(-1)


class ControlSource(Protocol):
    """Anything with frames to add after the ACK: writes what fits into ``out`` (up to ``limit``
    bytes in total) and records deliveries for the frames that must be retransmitted."""

    def has_control(self) -> bool:
        """Whether :meth:`write_control` has anything to write."""
        ...

    def write_control(
        self,
        out: bytearray,
        limit: int,
        now: float,
        deliveries: list[tuple[Delivery, Any]],
    ) -> bool:
        """Return True if anything ack-eliciting was written."""
        ...


@attrs.define(slots=True, eq=False)
class OutgoingPacket:
    """A packet payload ready for protection, and what recovery must know once it is sent."""

    payload: bytearray
    deliveries: list[tuple[Delivery, Any]]
    ack_eliciting: bool
    in_flight: bool


PING = b"\x01"
_MIN_STREAM_ROOM = 24


class PacketAssembler:
    """Builds payloads from the ACK tracker, control sources and streams, gated by the
    congestion window (``recovery.can_send``) and the pacer. ACK-only packets are neither
    congestion controlled nor paced, and are not in flight."""

    def __init__(
        self,
        streams: StreamManager,
        acks: AckTracker,
        recovery: LossRecovery,
        pacer: Pacer | None = None,
        *,
        control_sources: Sequence[ControlSource] = (),
    ) -> None:
        self.streams = streams
        self.acks = acks
        self.recovery = recovery
        self.pacer = pacer
        self.control_sources = list(control_sources)
        self.ping_pending = False
        self._paced: tuple[int, float] | None = None

    def _pace(self, now: float) -> float:
        """The pacer's next send time, after following any change of window or RTT (the pacer
        stays unpaced until the first RTT sample)."""
        pacer = self.pacer
        assert pacer is not None
        rtt = self.recovery.rtt
        if rtt.has_sample:
            current = (self.recovery.cc.cwnd, rtt.smoothed_rtt)
            if current != self._paced:
                self._paced = current
                pacer.update(*current)
        return pacer.next_send_time(now)

    def _has_eliciting_work(self) -> bool:
        if self.ping_pending or self.recovery.probes > 0 or self.streams.has_work():
            return True
        # a loop, not any(): no generator object per call (several calls per round trip)
        for source in self.control_sources:  # noqa: SIM110
            if source.has_control():
                return True
        return False

    def next_send_time(self, now: float) -> float | None:
        """When :meth:`build` would return something: ``now``, a later pacing time, or None
        (nothing to send, or only blocked by the congestion window until an ACK arrives)."""
        if self.acks.ack_due(now):
            return now
        if not self._has_eliciting_work():
            return None
        if not self.recovery.can_send():
            return None
        if self.pacer is None or self.recovery.probes > 0:
            return now
        return self._pace(now)

    def build(self, now: float, limit: int | None = None) -> OutgoingPacket | None:
        """One payload of at most ``limit`` bytes (default: what fits a 1,200-byte datagram),
        or None if nothing may or needs to go."""
        if limit is None:
            limit = payload_limit()
        acks = self.acks
        recovery = self.recovery
        cc = recovery.cc
        probes = recovery.probes
        ack_due = acks.deadline is not None and now >= acks.deadline
        # the cheap question first: most calls find nothing to send
        has_work = self._has_eliciting_work() and (
            probes > 0
            or (cc.bytes_in_flight < cc.cwnd and (self.pacer is None or self._pace(now) <= now))
        )
        if not (has_work or ack_due):
            return None
        out = bytearray()
        deliveries: list[tuple[Delivery, Any]] = []
        if ack_due or acks.has_news:
            built = acks.build(now, limit)
            if built is not None:
                frame, largest = built
                out += frame
                deliveries.append((acks, largest))
        eliciting = False
        if has_work:
            for source in self.control_sources:
                eliciting |= source.write_control(out, limit, now, deliveries)
            eliciting |= self.streams.write_control(out, limit, now, deliveries)
            if limit - len(out) >= _MIN_STREAM_ROOM:
                eliciting |= self.streams.write_stream_frames(out, limit, deliveries)
            if (self.ping_pending or (recovery.probes > 0 and not eliciting)) and len(out) < limit:
                out += PING
                eliciting = True
                self.ping_pending = False
        if not out:
            return None
        return OutgoingPacket(out, deliveries, eliciting, eliciting)

    def on_packet_sent(self, packet: OutgoingPacket, pn: int, size: int, now: float) -> None:
        """Record a built packet once the connection has numbered, protected and sent it
        (``size`` is the datagram's length on the wire)."""
        self.recovery.on_packet_sent(
            SentPacket(pn, now, size, packet.ack_eliciting, packet.in_flight, packet.deliveries),
            now,
        )
        if packet.in_flight and self.pacer is not None:
            self.pacer.on_packet_sent(size, now)
