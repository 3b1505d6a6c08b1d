"""Scheduler order (urgency, fair share) and the packet assembler."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.mxp.congestion import NewReno
from intentus_trio.mxp.frames import Ack, Ping
from intentus_trio.mxp.pacing import Pacer
from intentus_trio.mxp.packet import SHORT_PN_OFFSET
from intentus_trio.mxp.protection import TAG_LEN
from intentus_trio.mxp.recovery import AckTracker, Delivery, LossRecovery
from intentus_trio.mxp.scheduler import PacketAssembler, Scheduler, payload_limit
from intentus_trio.mxp.stream_frames import (
    MaxData,
    StreamFrame,
    decode_payload,
    encode_stream_frame,
)
from intentus_trio.mxp.streams import StreamLimits, StreamManager


def serve(sched: Scheduler, sizes: dict[int, int], frame: int = 1000) -> list[int]:
    """Drain ``sizes`` (bytes left per key) in scheduler order, one frame at a time."""
    order = []
    while (key := sched.peek()) is not None:
        n = min(frame, sizes[key])
        sizes[key] -= n
        order.append(key)
        sched.charge(key, n, sizes[key] > 0)
    return order


def test_urgent_first() -> None:
    sched = Scheduler(quantum=2000)
    for key in (1, 2, 3):
        sched.push(key)
    sched.set_urgency(3, 0)
    sched.set_urgency(2, 7)
    order = serve(sched, {1: 3000, 2: 3000, 3: 3000})
    assert order == [3, 3, 3, 1, 1, 1, 2, 2, 2]


def test_round_robin_by_quantum_among_equals() -> None:
    sched = Scheduler(quantum=2000)
    for key in (1, 2, 3):
        sched.push(key)
    order = serve(sched, {1: 4000, 2: 4000, 3: 1000})
    assert order == [1, 1, 2, 2, 3, 1, 1, 2, 2]


def test_small_call_is_not_starved_by_bulk() -> None:
    sched = Scheduler(quantum=8192)
    sizes = dict.fromkeys(range(5), 10**7)
    for k in sizes:
        sched.push(k)
    served = 0
    for _ in range(50):
        key = sched.peek()
        assert key is not None
        sizes[key] -= 1200
        served += 1200
        sched.charge(key, 1200, True)
    sched.push(99)
    sizes[99] = 500
    waited = 0
    while (key := sched.peek()) != 99:
        assert key is not None
        sched.charge(key, 1200, True)
        waited += 1200
    # at most one quantum of each bulk stream goes first
    assert waited <= 5 * (8192 + 1200)


def test_push_is_idempotent_and_discard_works() -> None:
    sched = Scheduler()
    sched.push(1)
    sched.push(1)
    sched.push(2)
    assert len(sched) == 2 and 1 in sched
    sched.discard(2)
    sched.discard(2)
    sched.forget(1)
    assert sched.peek() is None and len(sched) == 0
    sched.set_urgency(5, 3)  # the default: nothing stored
    assert sched.urgency(5) == 3


@given(
    st.dictionaries(
        st.integers(0, 20),
        st.tuples(st.integers(0, 7), st.integers(1, 20_000)),
        min_size=1,
        max_size=12,
    ),
    st.integers(500, 10_000),
)
def test_priority_order_property(streams: dict[int, tuple[int, int]], quantum: int) -> None:
    """Every byte is served; no stream is served while a more urgent one is ready."""
    sched = Scheduler(quantum=quantum)
    sizes = {}
    for sid, (urgency, size) in streams.items():
        sched.set_urgency(sid, urgency)
        sched.push(sid)
        sizes[sid] = size
    while (key := sched.peek()) is not None:
        urgency = streams[key][0]
        assert all(streams[k][0] >= urgency for k, left in sizes.items() if left > 0)
        n = min(1200, sizes[key])
        sizes[key] -= n
        sched.charge(key, n, sizes[key] > 0)
    assert not any(sizes.values())


# ---------------------------------------------------------------------- assembler


class Extra:
    """A connection-level control source (stands in for DATAGRAM/PING queues)."""

    def __init__(self) -> None:
        self.pending = [encode_stream_frame(MaxData(7))]

    def has_control(self) -> bool:
        return bool(self.pending)

    def write_control(
        self, out: bytearray, limit: int, now: float, deliveries: list[tuple[Delivery, Any]]
    ) -> bool:
        wrote = False
        while self.pending and len(out) + len(self.pending[0]) <= limit:
            out += self.pending.pop(0)
            wrote = True
        return wrote


def make(pacer: Pacer | None = None) -> tuple[PacketAssembler, StreamManager, LossRecovery]:
    streams = StreamManager(is_client=True, local=StreamLimits(), peer=StreamLimits())
    recovery = LossRecovery(NewReno())
    acks = AckTracker()
    return PacketAssembler(streams, acks, recovery, pacer), streams, recovery


def test_ack_first_then_control_then_stream_data_up_to_the_limit() -> None:
    asm, streams, _ = make()
    asm.control_sources.append(Extra())
    asm.acks.on_packet_received(0, True, 0.0)
    asm.acks.on_packet_received(1, True, 0.0)
    sid = streams.open_stream()
    streams.write(sid, bytes(5000))
    packet = asm.build(0.0, 1150)
    assert packet is not None
    assert len(packet.payload) <= 1150 and len(packet.payload) >= 1150 - 24
    frames = decode_payload(bytes(packet.payload))
    assert isinstance(frames[0], Ack)
    assert frames[1] == MaxData(7)
    assert isinstance(frames[2], StreamFrame) and frames[2].offset == 0
    assert packet.ack_eliciting and packet.in_flight
    kinds = [type(owner).__name__ for owner, _ in packet.deliveries]
    assert kinds == ["AckTracker", "SendStream"]


def test_default_limit_fills_a_1200_byte_datagram() -> None:
    asm, streams, _ = make()
    sid = streams.open_stream()
    streams.write(sid, bytes(10_000))
    packet = asm.build(0.0)
    assert packet is not None
    wire = SHORT_PN_OFFSET + 4 + len(packet.payload) + TAG_LEN
    assert 1200 - 8 <= wire <= 1200
    assert payload_limit(1500, pn_len=2) == 1500 - SHORT_PN_OFFSET - 2 - TAG_LEN


def test_several_streams_share_one_datagram() -> None:
    asm, streams, _ = make()
    sids = [streams.open_stream() for _ in range(5)]
    for sid in sids:
        streams.write(sid, b"call", fin=True)
    packet = asm.build(0.0, 1200)
    assert packet is not None
    frames = decode_payload(bytes(packet.payload))
    assert [f.stream_id for f in frames if isinstance(f, StreamFrame)] == sids
    assert asm.build(0.0, 1200) is None


def test_congestion_window_allows_only_acks() -> None:
    asm, streams, recovery = make()
    sid = streams.open_stream()
    streams.write(sid, bytes(100_000))
    now = 0.0
    sent = 0
    while (packet := asm.build(now, 1176)) is not None:
        asm.on_packet_sent(packet, sent, len(packet.payload) + 24, now)
        sent += 1
    assert recovery.bytes_in_flight >= recovery.cc.cwnd
    assert asm.next_send_time(now) is None
    asm.acks.on_packet_received(0, True, now)
    asm.acks.on_packet_received(1, True, now)
    assert asm.next_send_time(now) == now
    packet = asm.build(now, 1176)
    assert packet is not None and not packet.ack_eliciting and not packet.in_flight
    assert [type(f) for f in decode_payload(bytes(packet.payload))] == [Ack]


def test_probe_sends_a_ping_when_nothing_else_is_pending() -> None:
    asm, _, recovery = make()
    recovery.probes = 1
    packet = asm.build(0.0, 1176)
    assert packet is not None and decode_payload(bytes(packet.payload)) == [Ping()]
    asm.on_packet_sent(packet, 0, 40, 0.0)
    assert recovery.probes == 0
    asm.ping_pending = True
    packet = asm.build(0.0, 1176)
    assert packet is not None and decode_payload(bytes(packet.payload)) == [Ping()]


def test_pacer_gates_data_but_not_acks() -> None:
    pacer = Pacer(1200, burst=2)
    asm, streams, recovery = make(pacer)
    recovery.rtt.update(0.1, 0.0, 0.025, 0.0)  # the assembler paces once an RTT is known
    sid = streams.open_stream()
    streams.write(sid, bytes(50_000))
    for pn in range(2):
        packet = asm.build(0.0, 1176)
        assert packet is not None
        asm.on_packet_sent(packet, pn, 1200, 0.0)
    later = asm.next_send_time(0.0)
    assert later is not None and later > 0.0
    assert asm.build(0.0, 1176) is None
    asm.acks.on_packet_received(0, True, 0.0)
    asm.acks.on_packet_received(1, True, 0.0)
    packet = asm.build(0.0, 1176)
    assert packet is not None and not packet.ack_eliciting
    packet = asm.build(later, 1176)
    assert packet is not None and packet.ack_eliciting
    assert pacer.rate == pytest.approx(1.25 * recovery.cc.cwnd / 0.1)
