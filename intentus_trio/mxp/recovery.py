"""Loss recovery after RFC 9002: RTT estimation, loss detection, probe timeouts, ACK generation.

Frames, not packets, are retransmitted: every sent packet keeps ``deliveries``, pairs of a
:class:`Delivery` owner (a send stream, a flow-control window, the ACK tracker...) and an opaque
token saying which piece of its state the packet carried. When the packet is acknowledged the
owner is told ``on_acked(token)`` and may release the data; when it is declared lost the owner
is told ``on_lost(token)`` and queues the piece again if it still matters. Owners must treat both
calls as idempotent: a PTO probe re-queues data that is still in flight, and a packet declared
lost may be acknowledged later (a spurious loss), in which case ``on_acked`` follows ``on_lost``.

All times are seconds on the driver's clock, passed in as ``now``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from intentus_trio.mxp.congestion import CongestionController
from intentus_trio.mxp.frames import encode_ack
from intentus_trio.mxp.rangeset import RangeSet
from intentus_trio.mxp.varint import varint_size

PACKET_THRESHOLD = 3
TIME_THRESHOLD = 9 / 8
GRANULARITY = 0.001
INITIAL_RTT = 0.333
PERSISTENT_CONGESTION_THRESHOLD = 3
MAX_PACKET_THRESHOLD = 32
MAX_TIME_THRESHOLD = 2.0
MAX_PTO = 60.0
_MAX_RECENTLY_LOST = 1024


class AckError(ValueError):
    """The peer acknowledged a packet number that was never sent (a protocol violation)."""


class Delivery(Protocol):
    """Something whose state rides in packets and must learn each packet's fate."""

    def on_acked(self, token: Any) -> None: ...

    def on_lost(self, token: Any) -> None: ...


@attrs.define(slots=True, eq=False)
class SentPacket:
    pn: int
    time_sent: float
    size: int
    ack_eliciting: bool
    in_flight: bool
    deliveries: list[tuple[Delivery, Any]] = attrs.field(factory=list)


class RttEstimator:
    """min/smoothed/variance RTT as in RFC 9002 §5, with the peer's ack delay subtracted only
    when that does not take the sample below the minimum RTT."""

    __slots__ = ("first_sample_time", "latest_rtt", "min_rtt", "rttvar", "smoothed_rtt")

    def __init__(self, initial_rtt: float = INITIAL_RTT) -> None:
        self.latest_rtt = 0.0
        self.min_rtt = math.inf
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2
        self.first_sample_time: float | None = None

    @property
    def has_sample(self) -> bool:
        return self.first_sample_time is not None

    def update(
        self,
        latest_rtt: float,
        ack_delay: float,
        max_ack_delay: float,
        now: float,
        *,
        handshake_confirmed: bool = True,
    ) -> None:
        latest_rtt = max(latest_rtt, 0.0)
        self.latest_rtt = latest_rtt
        if self.first_sample_time is None:
            self.first_sample_time = now
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        if handshake_confirmed:
            ack_delay = min(ack_delay, max_ack_delay)
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def pto_period(self, max_ack_delay: float) -> float:
        """The probe timeout before backoff."""
        return self.smoothed_rtt + max(4 * self.rttvar, GRANULARITY) + max_ack_delay

    def loss_delay(self, time_threshold: float = TIME_THRESHOLD) -> float:
        return max(time_threshold * max(self.smoothed_rtt, self.latest_rtt), GRANULARITY)


@attrs.define
class RecoveryStats:
    packets_sent: int = 0
    packets_acked: int = 0
    packets_lost: int = 0
    spurious_losses: int = 0
    ptos: int = 0
    persistent_congestion: int = 0


class LossRecovery:
    """The sender side: tracks packets in flight, detects loss, arms the probe timeout and
    feeds the congestion controller.

    ``max_ack_delay`` is the peer's (how long it may hold an ACK), which the PTO must allow for.
    """

    def __init__(
        self,
        congestion: CongestionController,
        *,
        max_ack_delay: float = 0.025,
        initial_rtt: float = INITIAL_RTT,
        adaptive_reordering: bool = True,
    ) -> None:
        self.cc = congestion
        self.rtt = RttEstimator(initial_rtt)
        self.max_ack_delay = max_ack_delay
        self.adaptive_reordering = adaptive_reordering
        self.packet_threshold = PACKET_THRESHOLD
        self.time_threshold = TIME_THRESHOLD
        self.stats = RecoveryStats()
        self.largest_acked: int | None = None
        self.largest_sent = -1
        self.pto_count = 0
        self.probes = 0
        self._sent: dict[int, SentPacket] = {}
        self._order: collections.deque[int] = collections.deque()
        self._loss_time: float | None = None
        self._eliciting_in_flight = 0
        self._last_eliciting_sent: float | None = None
        self._last_sent: float | None = None
        # packets declared lost, kept a while so a late ACK can reveal a spurious loss
        self._lost: dict[int, tuple[SentPacket, int | None]] = {}
        self._lost_order: collections.deque[tuple[float, int]] = collections.deque()
        # packets of the latest congestion event still thought lost (all spurious -> undo)
        self._event_lost: set[int] = set()

    # ------------------------------------------------------------------ queries

    @property
    def bytes_in_flight(self) -> int:
        return self.cc.bytes_in_flight

    @property
    def packets_outstanding(self) -> int:
        return len(self._sent)

    def sent_packet(self, pn: int) -> SentPacket | None:
        return self._sent.get(pn)

    def can_send(self) -> bool:
        """Whether congestion control lets an ack-eliciting packet leave now (probes always
        may). A packet may overshoot the window by less than one datagram."""
        return self.probes > 0 or self.cc.bytes_in_flight < self.cc.cwnd

    def pto_deadline(self) -> float | None:
        if not self._eliciting_in_flight or self._last_eliciting_sent is None:
            return None
        period = min(self.rtt.pto_period(self.max_ack_delay) * (1 << self.pto_count), MAX_PTO)
        return self._last_eliciting_sent + period

    def deadline(self) -> float | None:
        """When :meth:`on_timeout` must run: the time-threshold loss timer, else the PTO."""
        if self._loss_time is not None:
            return self._loss_time
        return self.pto_deadline()

    # ------------------------------------------------------------------ events

    def on_packet_sent(self, packet: SentPacket, now: float) -> None:
        if packet.pn <= self.largest_sent:
            raise ValueError("packet numbers must increase")
        self.largest_sent = packet.pn
        self.stats.packets_sent += 1
        if packet.in_flight:
            if (
                self.cc.bytes_in_flight == 0
                and self._last_sent is not None
                and now - self._last_sent > self.rtt.pto_period(self.max_ack_delay)
            ):
                self.cc.on_restart_after_idle(now)
            self.cc.on_packet_sent(packet.size, now)
            self._last_sent = now
        if packet.ack_eliciting:
            self._eliciting_in_flight += 1
            self._last_eliciting_sent = now
            if self.probes:
                self.probes -= 1
        if packet.deliveries or packet.in_flight or packet.ack_eliciting:
            self._sent[packet.pn] = packet
            self._order.append(packet.pn)

    def on_ack_received(
        self, ranges: Sequence[tuple[int, int]], ack_delay: float, now: float
    ) -> int:
        """Process an ACK frame's ranges (highest first, inclusive) and its ack delay in
        seconds; return how many packets it newly acknowledged."""
        if not ranges:
            return 0
        largest = ranges[0][1]
        if largest > self.largest_sent:
            raise AckError(f"ACK for packet {largest}, never sent")
        sent = self._sent
        newly: list[SentPacket] = []
        if sent:
            oldest = self._oldest_pn()
            for lo, hi in ranges:
                if hi < oldest:
                    break
                lo = max(lo, oldest)
                if hi - lo < len(sent):
                    for pn in range(hi, lo - 1, -1):
                        p = sent.pop(pn, None)
                        if p is not None:
                            newly.append(p)
                else:
                    found = [pn for pn in sent if lo <= pn <= hi]
                    newly.extend(sent.pop(pn) for pn in reversed(found))
        if self._lost:
            self._check_spurious(ranges)
        if self.largest_acked is None or largest > self.largest_acked:
            self.largest_acked = largest
        if not newly:
            return 0
        eliciting = 0
        for p in newly:
            if p.ack_eliciting:
                eliciting += 1
        if eliciting and newly[0].pn == largest:
            self.rtt.update(now - newly[0].time_sent, ack_delay, self.max_ack_delay, now)
        self._eliciting_in_flight -= eliciting
        cc = self.cc
        rtt = self.rtt
        for p in newly:
            if p.in_flight:
                cc.on_packet_acked(p.size, p.time_sent, now, rtt)
            for owner, token in p.deliveries:
                owner.on_acked(token)
        self.stats.packets_acked += len(newly)
        self._detect_lost(now)
        self.pto_count = 0
        self.probes = 0
        return len(newly)

    def on_timeout(self, now: float) -> None:
        """Run when :meth:`deadline` passes: either declare time-threshold losses, or fire the
        probe timeout (back off, owe two probe packets, re-queue the oldest data in flight)."""
        if self._loss_time is not None:
            if now >= self._loss_time:
                self._detect_lost(now)
            return
        deadline = self.pto_deadline()
        if deadline is None or now < deadline:
            return
        self.pto_count += 1
        self.stats.ptos += 1
        self.probes = 2
        requeued = 0
        for pn in self._order:
            p = self._sent.get(pn)
            if p is None or not p.ack_eliciting:
                continue
            for owner, token in p.deliveries:
                owner.on_lost(token)
            requeued += 1
            if requeued == 2:
                break

    def discard_all(self) -> None:
        """Forget everything in flight (the connection is closing)."""
        for p in self._sent.values():
            if p.in_flight:
                self.cc.on_packet_discarded(p.size)
        self._sent.clear()
        self._order.clear()
        self._lost.clear()
        self._lost_order.clear()
        self._eliciting_in_flight = 0
        self._loss_time = None

    # ------------------------------------------------------------------ internals

    def _oldest_pn(self) -> int:
        order, sent = self._order, self._sent
        while order[0] not in sent:
            order.popleft()
        return order[0]

    def _detect_lost(self, now: float) -> None:
        largest = self.largest_acked
        self._loss_time = None
        if largest is None:
            return
        loss_delay = self.rtt.loss_delay(self.time_threshold)
        pn_limit = largest - self.packet_threshold
        order, sent = self._order, self._sent
        lost: list[SentPacket] = []
        while order:
            pn = order[0]
            p = sent.get(pn)
            if p is None:
                order.popleft()
                continue
            if pn > largest:
                break
            if pn <= pn_limit or p.time_sent + loss_delay <= now:
                order.popleft()
                del sent[pn]
                lost.append(p)
            else:
                self._loss_time = p.time_sent + loss_delay
                break
        if lost:
            self._on_lost(lost, now)

    def _on_lost(self, lost: list[SentPacket], now: float) -> None:
        lost_bytes = 0
        largest_time = -math.inf
        keep_until = now + 3 * self.rtt.pto_period(self.max_ack_delay)
        reorder_pn = self.largest_acked if self.adaptive_reordering else None
        event: set[int] = set()
        for p in lost:
            if p.in_flight:
                lost_bytes += p.size
                largest_time = max(largest_time, p.time_sent)
                event.add(p.pn)
            if p.ack_eliciting:
                self._eliciting_in_flight -= 1
                self.stats.packets_lost += 1  # ACK-only packets are not worth counting
            self._lost[p.pn] = (p, reorder_pn)
            self._lost_order.append((keep_until, p.pn))
            for owner, token in p.deliveries:
                owner.on_lost(token)
        self._expire_lost(now)
        if lost_bytes:
            persistent = self._persistent_congestion(lost)
            if persistent:
                self.stats.persistent_congestion += 1
            if self.cc.on_packets_lost(lost_bytes, largest_time, now, persistent=persistent):
                self._event_lost = event

    def _persistent_congestion(self, lost: list[SentPacket]) -> bool:
        """Lost ack-eliciting packets spanning more than 3 PTOs with nothing acknowledged in
        between, all sent after the first RTT sample (RFC 9002 §7.6)."""
        first_sample = self.rtt.first_sample_time
        if first_sample is None:
            return False
        duration = self.rtt.pto_period(self.max_ack_delay) * PERSISTENT_CONGESTION_THRESHOLD
        start: SentPacket | None = None
        prev_pn = -2
        for p in lost:
            if start is not None and p.pn != prev_pn + 1 and not self._gap_all_lost(prev_pn, p.pn):
                start = None
            prev_pn = p.pn
            if not p.ack_eliciting or p.time_sent <= first_sample:
                continue
            if start is None:
                start = p
            elif p.time_sent - start.time_sent > duration:
                return True
        return False

    def _gap_all_lost(self, after: int, before: int) -> bool:
        if before - after > 16:
            return False
        return all(pn in self._lost for pn in range(after + 1, before))

    def _check_spurious(self, ranges: Sequence[tuple[int, int]]) -> None:
        lost = self._lost
        hits: list[int] = []
        for lo, hi in ranges:
            if hi - lo < len(lost):
                hits.extend(pn for pn in range(lo, hi + 1) if pn in lost)
            else:
                hits.extend(pn for pn in lost if lo <= pn <= hi)
        for pn in hits:
            p, largest_at_loss = lost.pop(pn)
            self.stats.spurious_losses += 1
            if largest_at_loss is not None:
                distance = largest_at_loss - pn
                if distance >= self.packet_threshold:
                    self.packet_threshold = min(MAX_PACKET_THRESHOLD, distance + 1)
                else:
                    self.time_threshold = min(MAX_TIME_THRESHOLD, self.time_threshold * 1.25)
            for owner, token in p.deliveries:
                owner.on_acked(token)
            if pn in self._event_lost:
                self._event_lost.discard(pn)
                if not self._event_lost:
                    self.cc.on_spurious_congestion_event()

    def _expire_lost(self, now: float) -> None:
        order, lost = self._lost_order, self._lost
        while order and (order[0][0] <= now or len(order) > _MAX_RECENTLY_LOST):
            _, pn = order.popleft()
            lost.pop(pn, None)
            self._event_lost.discard(pn)


class AckTracker:
    """The receiver side: which packet numbers arrived, and when an ACK must go out.

    An ACK is due at once after ``ack_eliciting_threshold`` ack-eliciting packets or on any
    reordering (a gap opened or filled), otherwise ``max_ack_delay`` after the first unacked
    ack-eliciting packet. An ACK that is itself acknowledged lets us stop repeating the ranges
    it covered. ACK-only packets never make an ACK due, which avoids ACKs of ACKs forever.
    """

    def __init__(
        self,
        *,
        max_ack_delay: float = 0.025,
        ack_eliciting_threshold: int = 2,
        max_ranges: int = 16,
    ) -> None:
        self.max_ack_delay = max_ack_delay
        self.ack_eliciting_threshold = ack_eliciting_threshold
        self.max_ranges = max_ranges
        self.received = RangeSet(max_ranges=4 * max_ranges)
        self.largest: int | None = None
        self.deadline: float | None = None
        self.acks_sent = 0
        self._largest_time = 0.0
        self._eliciting_since_ack = 0
        self._new_since_ack = False

    def on_packet_received(self, pn: int, ack_eliciting: bool, now: float) -> bool:
        """Record a packet; False if it was already recorded (a duplicate)."""
        received = self.received
        if pn in received:
            return False
        largest = self.largest
        reordered = largest is not None and pn != largest + 1
        received.add(pn)
        if largest is None or pn > largest:
            self.largest = pn
            self._largest_time = now
        self._new_since_ack = True
        if not ack_eliciting:
            return True
        self._eliciting_since_ack += 1
        if reordered or self._eliciting_since_ack >= self.ack_eliciting_threshold:
            self.deadline = now
        elif self.deadline is None:
            self.deadline = now + self.max_ack_delay
        return True

    def ack_due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    @property
    def has_news(self) -> bool:
        """Something arrived since the last ACK (worth piggybacking on an outgoing packet)."""
        return self._new_since_ack

    def build(self, now: float, room: int) -> tuple[bytes, int] | None:
        """The encoded ACK frame (newest ranges that fit ``room``) and its largest acked, and
        mark the ACK as sent; None if nothing to acknowledge or it cannot fit."""
        if not self.received:
            return None
        ranges = self.received.descending()[: self.max_ranges]
        delay_us = max(0, round((now - self._largest_time) * 1e6))
        frame = encode_ack(ranges, delay_us)
        while len(frame) > room and len(ranges) > 1:
            ranges = ranges[: max(1, len(ranges) // 2)]
            frame = encode_ack(ranges, delay_us)
        if len(frame) > room:
            return None
        self.deadline = None
        self._eliciting_since_ack = 0
        self._new_since_ack = False
        self.acks_sent += 1
        return frame, ranges[0][1]

    @staticmethod
    def min_size(largest: int) -> int:
        """A lower bound on one ACK frame's size, to decide whether to try."""
        return 4 + varint_size(largest)

    # Delivery: the token is the largest packet number the ACK frame covered.
    def on_acked(self, token: Any) -> None:
        self.received.discard_below(int(token) + 1)

    def on_lost(self, token: Any) -> None:
        """Nothing to do: the ranges stay until an ACK carrying them is acknowledged."""
