"""The pacer enforces the rate it is given, allows one burst, and banks no more."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.mxp.pacing import Pacer

MDS = 1200


def test_unpaced_until_there_is_a_rate() -> None:
    pacer = Pacer(MDS)
    for _ in range(100):
        assert pacer.next_send_time(0.0) == 0.0
        pacer.on_packet_sent(MDS, 0.0)


def test_burst_then_spacing() -> None:
    pacer = Pacer(MDS, burst=10)
    pacer.update(cwnd=12000, smoothed_rtt=0.1)
    assert pacer.rate == pytest.approx(1.25 * 12000 / 0.1)
    for _ in range(10):
        assert pacer.next_send_time(0.0) == 0.0
        pacer.on_packet_sent(MDS, 0.0)
    wait = pacer.next_send_time(0.0)
    assert wait == pytest.approx(MDS / pacer.rate)
    assert pacer.next_send_time(wait) == wait


def test_idle_banks_at_most_one_burst() -> None:
    pacer = Pacer(MDS, burst=4)
    pacer.update(cwnd=100_000, smoothed_rtt=0.01)
    pacer.on_packet_sent(MDS, 0.0)
    now = 100.0
    sent = 0
    while pacer.next_send_time(now) == now:
        pacer.on_packet_sent(MDS, now)
        sent += 1
    assert sent == 4


def test_small_windows_keep_a_two_packet_bucket() -> None:
    pacer = Pacer(MDS, burst=10)
    pacer.update(cwnd=2400, smoothed_rtt=0.1)
    assert pacer.capacity == 2400


@given(
    st.integers(2400, 2_000_000),
    st.floats(0.001, 0.5),
    st.lists(st.floats(0, 0.01), min_size=50, max_size=300),
)
def test_rate_is_enforced(cwnd: int, srtt: float, gaps: list[float]) -> None:
    """A sender that sends whenever allowed never beats burst + rate * elapsed."""
    pacer = Pacer(MDS)
    pacer.update(cwnd, srtt)
    now = 0.0
    sent = 0
    for gap in gaps:
        now = max(now + gap, pacer.next_send_time(now + gap))
        assert pacer.next_send_time(now) == pytest.approx(now, abs=1e-9)
        pacer.on_packet_sent(MDS, now)
        sent += MDS
        assert sent <= pacer.capacity + pacer.rate * now + MDS
