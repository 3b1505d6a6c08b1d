"""Flow control: credit, windows with auto-tuning, and a stalled reader that stops the sender."""

from __future__ import annotations

import random

import pytest

from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.flow import (
    FINAL_SIZE_ERROR,
    FLOW_CONTROL_ERROR,
    STREAM_LIMIT_ERROR,
    STREAM_STATE_ERROR,
    FlowControlError,
    ReceiveWindow,
    SendCredit,
)
from intentus_trio.mxp.stream_frames import StreamFrame
from intentus_trio.mxp.streams import StreamLimits, StreamReadable

from .reliability_sim import SimLink, SimPeer, Simulation


def test_close_codes_are_the_connection_codes() -> None:
    assert FLOW_CONTROL_ERROR == ErrorCode.FLOW_CONTROL_ERROR
    assert FINAL_SIZE_ERROR == ErrorCode.FINAL_SIZE_ERROR
    assert STREAM_LIMIT_ERROR == ErrorCode.STREAM_LIMIT_ERROR
    assert STREAM_STATE_ERROR == ErrorCode.STREAM_STATE_ERROR
    assert len({int(c) for c in ErrorCode}) == len(ErrorCode)
    assert all(c < ErrorCode.APPLICATION_ERROR for c in (0x20, 0x21, 0x22, 0x23))


def test_send_credit() -> None:
    credit = SendCredit(100)
    credit.consume(60)
    assert credit.available == 40
    with pytest.raises(ValueError):
        credit.consume(41)
    credit.consume(40)
    credit.note_blocked()
    assert credit.take_blocked() == 100
    credit.note_blocked()  # once per limit
    assert credit.take_blocked() is None
    assert not credit.update(90)  # limits never shrink
    assert credit.update(150) and credit.available == 50
    credit.consume(50)
    credit.note_blocked()
    assert credit.take_blocked() == 150


def test_receive_window_updates_after_half_is_consumed() -> None:
    w = ReceiveWindow(1000)
    assert w.on_received(400) == 400
    assert w.on_received(300) == 0  # old data
    with pytest.raises(FlowControlError):
        w.on_received(1001)
    w.on_consumed(400, now=0.0, rtt=0.1)
    assert not w.update_pending
    w.on_received(1000)
    w.on_consumed(100, now=0.0, rtt=0.1)
    assert w.update_pending
    assert w.take_update(1.0) == 1500
    assert w.limit == 1500 and w.take_update(1.0) is None
    w.on_received(1500)


def test_receive_window_autotunes_when_updates_come_fast() -> None:
    w = ReceiveWindow(1000, max_window=4000)
    now = 0.0
    consumed = 0
    windows = []
    for _ in range(8):
        # the application drains everything the peer is allowed within one RTT
        w.on_received(w.limit)
        w.on_consumed(w.limit - consumed, now=now, rtt=0.1)
        consumed = w.limit
        w.take_update(now)
        windows.append(w.window)
        now += 0.1
    assert windows[0] == 1000 and windows[-1] == 4000
    assert windows == sorted(windows)


def test_receive_window_does_not_grow_for_a_slow_reader() -> None:
    w = ReceiveWindow(1000, max_window=8000)
    now = 0.0
    for _ in range(5):
        w.on_received(w.limit)
        w.on_consumed(w.limit - w.consumed, now=now, rtt=0.1)
        w.take_update(now)
        now += 1.0  # much slower than 2 RTT
    assert w.window == 1000


def test_lost_window_update_is_resent_only_if_still_newest() -> None:
    w = ReceiveWindow(1000)
    w.on_received(1000)
    w.on_consumed(600, 0.0, 0.1)
    first = w.take_update(0.0)
    assert first == 1600
    w.on_lost(first)
    assert w.update_pending
    assert w.take_update(0.1) == 1600  # the same limit, announced again
    w.on_received(1600)
    w.on_consumed(1000, 0.2, 0.1)
    second = w.take_update(0.2)
    assert second is not None and second > first
    w.on_lost(first)  # stale: a newer limit is out there
    assert not w.update_pending
    w.on_acked(second)
    w.stop()
    assert w.take_update(1.0) is None


def _stall_setup(
    receiver_limits: StreamLimits, total: int, seed: int = 7
) -> tuple[SimPeer, SimPeer, Simulation, bytes, int]:
    sender_limits = StreamLimits(send_buffer=256 << 10)
    a = SimPeer("a", is_client=True, local=sender_limits, peer=receiver_limits)
    b = SimPeer("b", is_client=False, local=receiver_limits, peer=sender_limits)
    ab = SimLink(random.Random(seed), delay=0.01, rate=20e6)
    ba = SimLink(random.Random(seed + 1), delay=0.01, rate=20e6)
    sim = Simulation(a, b, ab, ba)
    data = random.Random(seed).randbytes(total)
    sid = a.streams.open_stream()
    return a, b, sim, data, sid


def test_stalled_reader_stops_the_sender_without_loss_and_resumes() -> None:
    """The reader stops consuming: windows close, the sender stops with nothing in flight and
    nothing lost; the reader resumes: every byte arrives exactly once, in order."""
    limits = StreamLimits(
        max_data=96 << 10,
        max_data_window=96 << 10,
        max_stream_data=64 << 10,
        max_stream_window=64 << 10,
    )
    total = 600 << 10
    a, b, sim, data, sid = _stall_setup(limits, total)
    wire_bytes = 0

    def count(frame: StreamFrame) -> None:
        nonlocal wire_bytes
        wire_bytes += len(frame.data)

    b.on_frame = count
    written = 0
    got = bytearray()
    stall = (0.0, 3.0)
    snapshots: list[tuple[float, int, int, int]] = []

    def tick(s: Simulation) -> None:
        nonlocal written
        space = a.streams.send_buffer_space(sid)
        if written < total and space > 0:
            chunk = data[written : written + space]
            written += len(chunk)
            a.streams.write(sid, chunk, fin=written == total)
        while b.streams.next_event() is not None:
            pass
        if stall[0] <= s.now < stall[1]:
            s.app_timer = min(stall[1], s.now + 0.25)  # look in on the quiet sender
            snapshots.append(
                (s.now, wire_bytes, a.recovery.bytes_in_flight, a.streams.send_credit.used)
            )
            return
        s.app_timer = stall[0] if s.now < stall[0] else None
        if b.streams.get(sid) is not None:
            got.extend(b.streams.read(sid, now=s.now))

    sim.on_tick = tick
    sim.run(lambda: b.streams.at_eof(sid) and len(got) == total, max_time=60)
    assert bytes(got) == data
    # during the stall: the sender went quiet with nothing in flight and nothing lost
    late = [snap for snap in snapshots if snap[0] > stall[0] + 0.5]
    assert late, "the simulation skipped the stall"
    assert all(snap[1] == late[0][1] for snap in late)
    assert all(snap[2] == 0 for snap in late)
    stalled_at = late[0][1]
    assert stalled_at == 64 << 10  # exactly the stream window
    # the sender was blocked, not failing: it buffered what the application wrote
    assert a.recovery.stats.packets_lost == 0 and a.recovery.stats.ptos == 0
    assert wire_bytes == total  # nothing was sent twice
    assert b.streams.recv_window.limit >= total


def test_windows_autotune_on_a_fast_path() -> None:
    limits = StreamLimits(
        max_data=32 << 10,
        max_data_window=4 << 20,
        max_stream_data=16 << 10,
        max_stream_window=2 << 20,
    )
    total = 2 << 20
    a, b, sim, data, sid = _stall_setup(limits, total)
    got = bytearray()
    written = 0

    def tick(s: Simulation) -> None:
        nonlocal written
        space = a.streams.send_buffer_space(sid)
        if written < total and space > 0:
            chunk = data[written : written + space]
            written += len(chunk)
            a.streams.write(sid, chunk, fin=written == total)
        while (ev := b.streams.next_event()) is not None:
            if isinstance(ev, StreamReadable):
                got.extend(b.streams.read(ev.stream_id, now=s.now))

    sim.on_tick = tick
    sim.run(lambda: len(got) == total, max_time=60)
    assert bytes(got) == data
    assert b.streams.recv_window.window > 32 << 10
    # a fixed 16 KiB stream window over a 20 ms RTT would cap the rate near 0.8 MB/s
    assert total / sim.now > 2e6
