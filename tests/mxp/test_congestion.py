"""NewReno and CUBIC: slow start, avoidance, recovery periods, persistent congestion, floors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.congestion import (
    CongestionController,
    Cubic,
    NewReno,
    initial_window,
    make_controller,
)
from intentus_trio.mxp.recovery import RttEstimator

MDS = 1200


def rtt(value: float = 0.05) -> RttEstimator:
    r = RttEstimator()
    r.update(value, 0.0, 0.025, 0.0)
    return r


def fill(cc: CongestionController, now: float) -> int:
    """Send full packets until the window is full; return how many."""
    n = 0
    while cc.bytes_in_flight < cc.cwnd:
        cc.on_packet_sent(MDS, now)
        n += 1
    return n


def test_initial_and_minimum_window() -> None:
    assert initial_window(1200) == 12000
    assert initial_window(1500) == 14720
    assert initial_window(9000) == 18000
    cc = NewReno(MDS)
    assert cc.cwnd == 12000 and cc.minimum_window == 2400 and cc.in_slow_start


def test_slow_start_doubles_per_round_trip() -> None:
    cc = NewReno(MDS)
    r = rtt()
    now = 0.0
    for _ in range(3):
        start = cc.cwnd
        n = fill(cc, now)
        now += 0.05
        for _ in range(n):
            cc.on_packet_acked(MDS, now - 0.05, now, r)
        assert cc.cwnd == start + n * MDS
    assert cc.cwnd == 12000 * 8


def test_no_growth_when_application_limited() -> None:
    cc = NewReno(MDS)
    cc.on_packet_sent(MDS, 0.0)
    cc.on_packet_acked(MDS, 0.0, 0.05, rtt())
    assert cc.cwnd == 12000


def test_loss_halves_once_per_recovery_period() -> None:
    cc = NewReno(MDS)
    r = rtt()
    fill(cc, 0.0)
    assert cc.on_packets_lost(MDS, 0.0, 0.1)
    assert cc.cwnd == 6000 and cc.ssthresh == 6000
    assert cc.recovery_start_time == 0.1
    # more losses and acks of packets sent before recovery began change nothing
    assert not cc.on_packets_lost(MDS, 0.05, 0.11)
    cc.on_packet_acked(MDS, 0.0, 0.12, r)
    assert cc.cwnd == 6000
    # a loss of a packet sent after recovery began starts a new period
    cc.on_packet_sent(MDS, 0.2)
    assert cc.on_packets_lost(MDS, 0.2, 0.3)
    assert cc.cwnd == 3000 and cc.congestion_events == 2


def test_congestion_avoidance_adds_one_datagram_per_window() -> None:
    cc = NewReno(MDS)
    r = rtt()
    fill(cc, 0.0)
    cc.on_packets_lost(MDS, 0.0, 0.1)
    cc.bytes_in_flight = 0
    assert not cc.in_slow_start
    now = 1.0
    for _ in range(4):
        start = cc.cwnd
        n = fill(cc, now)
        now += 0.05
        for _ in range(n):
            cc.on_packet_acked(MDS, now - 0.05, now, r)
        assert cc.cwnd == start + MDS


def test_persistent_congestion_to_minimum() -> None:
    cc = NewReno(MDS)
    fill(cc, 0.0)
    cc.on_packets_lost(3 * MDS, 0.0, 1.0, persistent=True)
    assert cc.cwnd == cc.minimum_window
    assert cc.recovery_start_time is None  # next loss starts a fresh event


def test_undo_restores_the_window() -> None:
    cc = NewReno(MDS)
    fill(cc, 0.0)
    cc.on_packets_lost(MDS, 0.0, 0.1)
    cc.on_spurious_congestion_event()
    assert cc.cwnd == 12000 and cc.ssthresh == float("inf")
    cc.on_spurious_congestion_event()  # a second undo does nothing
    assert cc.cwnd == 12000


def test_restart_after_idle() -> None:
    cc = NewReno(MDS)
    cc.cwnd = 100_000
    cc.on_restart_after_idle(10.0)
    assert cc.cwnd == cc.initial_window
    cc.cwnd = 3000
    cc.on_restart_after_idle(11.0)
    assert cc.cwnd == 3000


def test_discarded_packets_leave_flight_without_a_loss() -> None:
    cc = NewReno(MDS)
    cc.on_packet_sent(MDS, 0.0)
    cc.on_packet_discarded(MDS)
    cc.on_packet_discarded(MDS)
    assert cc.bytes_in_flight == 0 and cc.cwnd == 12000 and cc.available == 12000


def test_make_controller() -> None:
    assert isinstance(make_controller("newreno"), NewReno)
    assert isinstance(make_controller("cubic", 1400), Cubic)
    with pytest.raises(ValueError):
        make_controller("bbr")


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["newreno", "cubic"]),
    st.lists(
        st.tuples(
            st.sampled_from(["send", "ack", "lost", "persistent", "undo", "idle"]),
            st.floats(0, 0.5),
        ),
        max_size=120,
    ),
)
def test_window_never_below_minimum(name: str, events: list[tuple[str, float]]) -> None:
    cc = make_controller(name, MDS)
    r = rtt()
    now = 0.0
    sent: list[float] = []
    for kind, dt in events:
        now += dt
        if kind == "send":
            cc.on_packet_sent(MDS, now)
            sent.append(now)
        elif kind == "ack" and sent:
            cc.on_packet_acked(MDS, sent.pop(0), now, r)
        elif kind in ("lost", "persistent") and sent:
            cc.on_packets_lost(MDS, sent.pop(0), now, persistent=kind == "persistent")
        elif kind == "undo":
            cc.on_spurious_congestion_event()
        elif kind == "idle":
            cc.on_restart_after_idle(now)
        assert cc.cwnd >= cc.minimum_window
        assert cc.bytes_in_flight == MDS * len(sent)


def test_cubic_reduces_by_beta_and_regrows_to_the_loss_point() -> None:
    cc = Cubic(MDS)
    r = rtt(0.2)  # long enough that the cubic curve, not the Reno estimate, leads
    cc.ssthresh = 0  # straight into congestion avoidance
    cc.cwnd = 100 * MDS
    fill(cc, 0.0)
    cc.on_packets_lost(MDS, 0.0, 0.0)
    assert cc.cwnd == 70 * MDS
    cc.bytes_in_flight = 0
    w_max = 100
    k = ((w_max - 70) / 0.4) ** (1 / 3)
    now = 0.0
    samples: list[tuple[float, float]] = []
    while now < 2 * k:
        n = fill(cc, now)
        now += 0.2
        for _ in range(n):
            cc.on_packet_acked(MDS, now - 0.2, now, r)
        samples.append((now, cc.cwnd / MDS))
    # concave approach to W_max around t = K, then convex probing beyond it
    at_k = min(samples, key=lambda s: abs(s[0] - k))[1]
    assert 90 <= at_k <= 106
    assert samples[-1][1] > w_max
    # growth slows down near the plateau compared to the start of the epoch
    first = samples[2][1] - samples[1][1]
    mid = next(b[1] - a[1] for a, b in itertools.pairwise(samples) if b[0] >= k)
    assert mid < first


def test_cubic_fast_convergence() -> None:
    cc = Cubic(MDS)
    cc.ssthresh = 0
    cc.cwnd = 100 * MDS
    cc.on_packets_lost(0, 0.0, 0.0)
    cc.cwnd = 80 * MDS
    cc.on_packets_lost(0, 1.0, 1.0)
    # the second loss point is below the first: W_max is pulled lower still
    assert cc._w_max == pytest.approx(80 * (1 + 0.7) / 2)


def test_cubic_grows_at_least_as_its_reno_friendly_estimate() -> None:
    """Far from the previous loss point (small W_max, long RTT) the cubic curve is slow; the
    Reno-friendly estimate (alpha = 3(1-beta)/(1+beta) datagrams per round trip) takes over."""
    r = rtt(0.5)
    cc = Cubic(MDS)
    cc.ssthresh = 0
    cc.cwnd = 20 * MDS
    cc.on_packets_lost(0, 0.0, 0.0)
    assert cc.cwnd == 14 * MDS
    now = 0.0
    rounds = 10
    for _ in range(rounds):
        n = fill(cc, now)
        now += 0.5
        for _ in range(n):
            cc.on_packet_acked(MDS, now - 0.5, now, r)
    alpha = 3 * (1 - 0.7) / (1 + 0.7)
    assert cc.cwnd / MDS >= 14 + 0.9 * alpha * rounds


def test_cubic_undo_and_idle_restart() -> None:
    cc = Cubic(MDS)
    cc.ssthresh = 0
    cc.cwnd = 50 * MDS
    fill(cc, 0.0)
    cc.on_packets_lost(MDS, 0.0, 0.1)
    assert cc.cwnd == 35 * MDS
    cc.on_spurious_congestion_event()
    assert cc.cwnd == 50 * MDS
    cc.on_packets_lost(MDS, 0.2, 0.3, persistent=True)
    assert cc.cwnd == cc.minimum_window
    cc.on_restart_after_idle(5.0)
    assert cc.cwnd == cc.minimum_window


def test_an_unknown_congestion_controller_is_refused_with_the_configuration() -> None:
    from intentus_trio.mxp.config import Configuration
    from intentus_trio.mxp.noise import KeyPair

    with pytest.raises(ValueError, match="congestion_control must be one of"):
        Configuration(KeyPair.generate(), congestion_control="zzz")
    assert Configuration(KeyPair.generate(), congestion_control="cubic").congestion_control == (
        "cubic")
