"""RTT estimation, loss detection, probe timeouts and ACK generation (RFC 9002 as the model)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.congestion import NewReno
from intentus_trio.mxp.frames import Ack, decode_frames
from intentus_trio.mxp.recovery import (
    GRANULARITY,
    INITIAL_RTT,
    AckError,
    AckTracker,
    LossRecovery,
    RttEstimator,
    SentPacket,
)

MAD = 0.025


class Recorder:
    """A Delivery owner that logs what happened to each token."""

    def __init__(self) -> None:
        self.acked: list[Any] = []
        self.lost: list[Any] = []

    def on_acked(self, token: Any) -> None:
        self.acked.append(token)

    def on_lost(self, token: Any) -> None:
        self.lost.append(token)


def make() -> tuple[LossRecovery, Recorder]:
    return LossRecovery(NewReno(), max_ack_delay=MAD), Recorder()


def send(rec: LossRecovery, owner: Recorder, pn: int, now: float, *, size: int = 1200) -> None:
    rec.on_packet_sent(SentPacket(pn, now, size, True, True, [(owner, pn)]), now)


# ---------------------------------------------------------------------- RTT


def test_rtt_initial_values_and_pto() -> None:
    rtt = RttEstimator()
    assert not rtt.has_sample
    assert rtt.smoothed_rtt == INITIAL_RTT and rtt.rttvar == INITIAL_RTT / 2
    # RFC 9002 §6.2.2: PTO = smoothed + max(4 * rttvar, granularity) + max_ack_delay
    assert rtt.pto_period(MAD) == pytest.approx(0.333 + 4 * 0.1665 + 0.025)


def test_rtt_samples_follow_rfc9002_section_5() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, ack_delay=0.050, max_ack_delay=MAD, now=1.0)
    # first sample: ack delay ignored, rttvar = sample / 2
    assert (rtt.min_rtt, rtt.smoothed_rtt, rtt.rttvar) == (0.100, 0.100, 0.050)
    assert rtt.first_sample_time == 1.0
    rtt.update(0.150, ack_delay=0.020, max_ack_delay=MAD, now=2.0)
    # adjusted = 150 - 20 = 130 (130 >= min_rtt)
    assert rtt.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * 0.030)
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.130)
    srtt, var = rtt.smoothed_rtt, rtt.rttvar
    rtt.update(0.090, ack_delay=0.020, max_ack_delay=MAD, now=3.0)
    # new min 90; 90 < 90 + 20 so the ack delay is NOT subtracted
    assert rtt.min_rtt == 0.090
    assert rtt.smoothed_rtt == pytest.approx(0.875 * srtt + 0.125 * 0.090)
    assert rtt.rttvar == pytest.approx(0.75 * var + 0.25 * abs(srtt - 0.090))
    assert rtt.latest_rtt == 0.090


def test_rtt_ack_delay_capped_by_max_ack_delay_once_confirmed() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, 0.0, MAD, 0.0)
    rtt.update(0.300, ack_delay=0.200, max_ack_delay=MAD, now=1.0)
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * (0.300 - MAD))
    rtt2 = RttEstimator()
    rtt2.update(0.100, 0.0, MAD, 0.0)
    rtt2.update(0.300, ack_delay=0.150, max_ack_delay=MAD, now=1.0, handshake_confirmed=False)
    assert rtt2.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.150)


def test_loss_delay_has_a_floor() -> None:
    rtt = RttEstimator()
    rtt.update(0.0001, 0.0, MAD, 0.0)
    assert rtt.loss_delay() == GRANULARITY
    rtt.update(0.080, 0.0, MAD, 1.0)
    assert rtt.loss_delay() == pytest.approx(9 / 8 * max(rtt.smoothed_rtt, 0.080))


# ---------------------------------------------------------------------- acks and loss


def test_ack_releases_deliveries_once_and_samples_rtt() -> None:
    rec, owner = make()
    for pn in range(3):
        send(rec, owner, pn, 0.0)
    assert rec.bytes_in_flight == 3600
    assert rec.on_ack_received(((0, 2),), 0.0, 0.05) == 3
    assert sorted(owner.acked) == [0, 1, 2]
    assert rec.rtt.smoothed_rtt == pytest.approx(0.05)
    assert rec.bytes_in_flight == 0
    assert rec.on_ack_received(((0, 2),), 0.0, 0.06) == 0
    assert sorted(owner.acked) == [0, 1, 2]
    assert rec.deadline() is None


def test_rtt_sample_only_when_largest_is_newly_acked() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    send(rec, owner, 1, 0.0)
    rec.on_ack_received(((1, 1),), 0.0, 0.1)
    assert rec.rtt.smoothed_rtt == pytest.approx(0.1)
    rec.on_ack_received(((0, 1),), 0.0, 5.0)  # largest (1) not new: no sample
    assert rec.rtt.smoothed_rtt == pytest.approx(0.1)


def test_ack_of_unsent_packet_is_an_error() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    with pytest.raises(AckError):
        rec.on_ack_received(((0, 1),), 0.0, 0.1)
    with pytest.raises(ValueError):
        send(rec, owner, 0, 0.1)


def test_packet_threshold_loss() -> None:
    rec, owner = make()
    for pn in range(6):
        send(rec, owner, pn, pn * 0.001)
    rec.on_ack_received(((5, 5),), 0.0, 0.030)
    # pn <= 5 - 3 are lost at once; 3 and 4 wait for the time threshold
    assert owner.lost == [0, 1, 2]
    assert rec.stats.packets_lost == 3
    deadline = rec.deadline()
    assert deadline is not None
    assert deadline == pytest.approx(0.003 + rec.rtt.loss_delay())
    rec.on_timeout(deadline - 1e-6)
    assert owner.lost == [0, 1, 2]
    rec.on_timeout(deadline)
    assert owner.lost == [0, 1, 2, 3]
    rec.on_timeout(rec.deadline())  # type: ignore[arg-type]
    assert owner.lost == [0, 1, 2, 3, 4]
    assert rec.bytes_in_flight == 0
    assert rec.cc.congestion_events == 1


def test_time_threshold_loss() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    send(rec, owner, 1, 0.010)
    rec.on_ack_received(((1, 1),), 0.0, 0.110)  # rtt 100 ms
    assert owner.lost == []
    loss_time = rec.deadline()
    assert loss_time == pytest.approx(9 / 8 * 0.1)
    assert rec.pto_deadline() is not None and loss_time < rec.pto_deadline()  # type: ignore[operator]
    rec.on_timeout(loss_time)  # type: ignore[arg-type]
    assert owner.lost == [0]
    assert rec.deadline() is None


def test_pto_backoff_and_probes() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    send(rec, owner, 1, 0.0)
    send(rec, owner, 2, 1.0)
    period = rec.rtt.pto_period(MAD)
    assert rec.deadline() == pytest.approx(1.0 + period)
    rec.on_timeout(1.0 + period)
    assert rec.pto_count == 1 and rec.probes == 2
    # the oldest two ack-eliciting packets' frames are queued again, the packets stay in flight
    assert owner.lost == [0, 1]
    assert rec.packets_outstanding == 3
    assert rec.deadline() == pytest.approx(1.0 + 2 * period)
    assert rec.can_send()
    rec.on_timeout(1.0 + 2 * period)
    assert rec.pto_count == 2
    assert rec.deadline() == pytest.approx(1.0 + 4 * period)
    # probes may exceed the congestion window
    rec.cc.bytes_in_flight = rec.cc.cwnd
    assert rec.can_send()
    send(rec, owner, 3, 5.0)
    send(rec, owner, 4, 5.0)
    assert rec.probes == 0 and not rec.can_send()
    assert rec.deadline() == pytest.approx(5.0 + 4 * period)
    rec.on_ack_received(((4, 4),), 0.0, 5.1)
    assert rec.pto_count == 0


def test_pto_not_armed_without_ack_eliciting_packets() -> None:
    rec, owner = make()
    rec.on_packet_sent(SentPacket(0, 0.0, 50, False, False, [(owner, "ack")]), 0.0)
    assert rec.deadline() is None
    assert rec.bytes_in_flight == 0


def test_spurious_loss_is_undone() -> None:
    rec, owner = make()
    cwnd = rec.cc.cwnd
    for pn in range(5):
        send(rec, owner, pn, 0.0)
    rec.on_ack_received(((4, 4),), 0.0, 0.02)
    assert owner.lost == [0, 1]
    assert rec.cc.cwnd < cwnd
    rec.on_ack_received(((4, 4), (0, 1)), 0.0, 0.03)
    # the frames learn they were delivered after all; the window comes back
    assert sorted(owner.acked) == [0, 1, 4]
    assert rec.stats.spurious_losses == 2
    assert rec.cc.cwnd >= cwnd
    # reordering of 4 packets was seen: the threshold adapts
    assert rec.packet_threshold == 5


def test_spurious_time_loss_raises_time_threshold() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    send(rec, owner, 1, 0.010)
    rec.on_ack_received(((1, 1),), 0.0, 0.110)
    rec.on_timeout(rec.deadline())  # type: ignore[arg-type]
    assert owner.lost == [0]
    rec.on_ack_received(((0, 1),), 0.0, 0.2)
    assert rec.time_threshold > 9 / 8
    assert owner.acked == [1, 0]


def test_persistent_congestion_collapses_the_window() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    rec.on_ack_received(((0, 0),), 0.0, 0.1)  # first RTT sample at t=0.1
    period = rec.rtt.pto_period(MAD)
    t = 0.2
    for pn in range(1, 9):
        send(rec, owner, pn, t)
        t += period  # the lost packets span about 7 PTOs
    send(rec, owner, 9, t)
    send(rec, owner, 10, t)
    send(rec, owner, 11, t)
    send(rec, owner, 12, t)
    rec.on_ack_received(((12, 12),), 0.0, t + 0.1)
    assert rec.stats.persistent_congestion == 1
    assert rec.cc.cwnd == rec.cc.minimum_window


def test_no_persistent_congestion_when_acked_packets_interleave() -> None:
    rec, owner = make()
    send(rec, owner, 0, 0.0)
    rec.on_ack_received(((0, 0),), 0.0, 0.1)
    period = rec.rtt.pto_period(MAD)
    t = 0.2
    for pn in range(1, 9):
        send(rec, owner, pn, t)
        t += period
    for pn in range(9, 13):
        send(rec, owner, pn, t)
    # every other old packet was acked: no long run of consecutive losses
    rec.on_ack_received(((12, 12), (8, 8), (6, 6), (4, 4), (2, 2)), 0.0, t + 0.1)
    assert rec.stats.persistent_congestion == 0
    assert rec.cc.cwnd >= rec.cc.minimum_window


def test_huge_ack_ranges_cost_only_outstanding_packets() -> None:
    rec, owner = make()
    base = 10**12
    rec.largest_sent = base - 1
    for pn in range(base, base + 4):
        send(rec, owner, pn, 0.0)
    assert rec.on_ack_received(((0, base + 3),), 0.0, 0.05) == 4


def test_discard_all_clears_flight() -> None:
    rec, owner = make()
    for pn in range(4):
        send(rec, owner, pn, 0.0)
    rec.discard_all()
    assert rec.bytes_in_flight == 0 and rec.deadline() is None and rec.packets_outstanding == 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_delivery_is_resolved(data: st.DataObject) -> None:
    """Random sends, ACKs (any subset, any order) and timeouts: every token ends up acked, or
    lost, and in-flight accounting stays consistent."""
    rec, owner = make()
    now = 0.0
    pn = 0
    acked_pns: set[int] = set()
    for _ in range(data.draw(st.integers(1, 40))):
        action = data.draw(st.sampled_from(["send", "send", "ack", "timeout"]))
        now += data.draw(st.floats(0.0, 0.2))
        if action == "send" or pn == 0:
            send(rec, owner, pn, now)
            pn += 1
        elif action == "ack":
            chosen = sorted(
                set(data.draw(st.lists(st.integers(0, pn - 1), min_size=1, max_size=8))),
                reverse=True,
            )
            ranges: list[tuple[int, int]] = []
            for p in chosen:
                if ranges and ranges[-1][0] == p + 1:
                    ranges[-1] = (p, ranges[-1][1])
                else:
                    ranges.append((p, p))
            rec.on_ack_received(tuple(ranges), 0.0, now)
            acked_pns.update(chosen)
        else:
            deadline = rec.deadline()
            if deadline is not None:
                now = max(now, deadline)
                rec.on_timeout(now)
        assert rec.bytes_in_flight >= 0
        assert rec.cc.cwnd >= rec.cc.minimum_window
    assert set(owner.acked) <= acked_pns
    assert len(owner.acked) == len(set(owner.acked))
    outstanding = {p for p in range(pn) if rec.sent_packet(p) is not None}
    resolved = set(owner.acked) | set(owner.lost)
    assert outstanding | resolved == set(range(pn))
    assert rec.bytes_in_flight == 1200 * len(outstanding)


# ---------------------------------------------------------------------- ACK generation


def test_ack_after_two_ack_eliciting_packets() -> None:
    tracker = AckTracker(max_ack_delay=MAD)
    tracker.on_packet_received(0, True, 1.0)
    assert tracker.deadline == pytest.approx(1.0 + MAD)
    assert not tracker.ack_due(1.01)
    tracker.on_packet_received(1, True, 1.01)
    assert tracker.ack_due(1.01)
    built = tracker.build(1.02, 100)
    assert built is not None
    frame, largest = built
    (ack,) = decode_frames(frame)
    assert isinstance(ack, Ack)
    assert ack.ranges == ((0, 1),) and largest == 1
    assert ack.delay == 10_000  # µs since the largest arrived
    assert tracker.deadline is None and not tracker.has_news


def test_delayed_ack_for_a_single_packet() -> None:
    tracker = AckTracker(max_ack_delay=MAD)
    tracker.on_packet_received(0, True, 0.0)
    assert not tracker.ack_due(0.0249)
    assert tracker.ack_due(0.025)


def test_reordering_triggers_an_immediate_ack() -> None:
    tracker = AckTracker()
    tracker.on_packet_received(0, True, 0.0)
    tracker.build(0.0, 100)
    tracker.on_packet_received(2, True, 0.1)  # gap: 1 missing
    assert tracker.ack_due(0.1)
    tracker.build(0.1, 100)
    tracker.on_packet_received(1, True, 0.2)  # fills the gap
    assert tracker.ack_due(0.2)
    built = tracker.build(0.2, 100)
    assert built is not None
    (ack,) = decode_frames(built[0])
    assert isinstance(ack, Ack) and ack.ranges == ((0, 2),)


def test_non_eliciting_packets_never_make_an_ack_due() -> None:
    tracker = AckTracker()
    for pn in (0, 1, 5):
        tracker.on_packet_received(pn, False, 0.0)
    assert tracker.deadline is None and tracker.has_news
    assert tracker.on_packet_received(5, False, 0.0) is False


def test_ack_of_ack_trims_ranges() -> None:
    tracker = AckTracker()
    for pn in (0, 1, 2, 5, 6, 9):
        tracker.on_packet_received(pn, True, 0.0)
    built = tracker.build(0.0, 100)
    assert built is not None and built[1] == 9
    tracker.on_packet_received(10, True, 0.1)
    tracker.on_lost(9)  # a lost ACK changes nothing
    tracker.on_acked(6)  # the packet carrying an ACK up to 6 was acknowledged
    built = tracker.build(0.2, 100)
    assert built is not None
    (ack,) = decode_frames(built[0])
    assert isinstance(ack, Ack) and ack.ranges == ((9, 10),)


def test_ack_fits_the_room() -> None:
    tracker = AckTracker(max_ranges=16)
    for pn in range(0, 200, 2):
        tracker.on_packet_received(pn, True, 0.0)
    full = tracker.build(0.0, 1000)
    assert full is not None
    (ack,) = decode_frames(full[0])
    assert isinstance(ack, Ack) and len(ack.ranges) == 16 and ack.largest == 198
    tracker.on_packet_received(200, True, 0.0)
    small = tracker.build(0.0, 20)
    assert small is not None and len(small[0]) <= 20
    (ack,) = decode_frames(small[0])
    assert isinstance(ack, Ack) and ack.largest == 200
    assert tracker.build(0.0, 3) is None
    assert AckTracker().build(0.0, 100) is None
    assert AckTracker.min_size(200) <= 7
