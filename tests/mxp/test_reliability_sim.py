"""The reliability layers together: two simulated peers over a lossy, reordering, duplicating
link in virtual time (see reliability_sim.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.streams import StreamLimits, StreamReadable

from .reliability_sim import SimLink, SimPeer, Simulation


def build(
    seed: int,
    *,
    congestion: str = "newreno",
    loss: float = 0.0,
    reorder: float = 0.0,
    duplicate: float = 0.0,
    rate: float | None = 10e6,
) -> tuple[SimPeer, SimPeer, SimLink, SimLink, Simulation]:
    limits = StreamLimits()
    a = SimPeer("a", is_client=True, local=limits, peer=limits, congestion=congestion)
    b = SimPeer("b", is_client=False, local=limits, peer=limits, congestion=congestion)
    links = [
        SimLink(
            random.Random(seed * 2 + i), loss=loss, reorder=reorder, duplicate=duplicate, rate=rate
        )
        for i in (1, 2)
    ]
    return a, b, links[0], links[1], Simulation(a, b, links[0], links[1])


class Collector:
    """Reads every readable stream of a peer as the application would."""

    def __init__(self, peer: SimPeer) -> None:
        self.peer = peer
        self.data: dict[int, bytearray] = {}
        self.finished: dict[int, float] = {}

    def poll(self, now: float) -> None:
        streams = self.peer.streams
        while (ev := streams.next_event()) is not None:
            if isinstance(ev, StreamReadable):
                sid = ev.stream_id
                self.data.setdefault(sid, bytearray()).extend(streams.read(sid, now=now))
                if streams.at_eof(sid) and sid not in self.finished:
                    self.finished[sid] = now


@pytest.mark.parametrize(
    ("seed", "congestion"), [(1, "newreno"), (2, "newreno"), (3, "cubic"), (4, "cubic")]
)
def test_many_streams_exactly_once_in_order_under_impairments(seed: int, congestion: str) -> None:
    a, b, ab, ba, sim = build(seed, congestion=congestion, loss=0.05, reorder=0.05, duplicate=0.01)
    rnd = random.Random(seed)
    expected: dict[SimPeer, dict[int, bytes]] = {a: {}, b: {}}
    for sender in (a, b):
        for i in range(30):
            sid = sender.streams.open_stream(bidi=i % 3 != 0)
            payload = rnd.randbytes(rnd.choice([0, 10, 300, 5000, 40_000]))
            expected[sender][sid] = payload
            # written in pieces, the FIN sometimes alone
            cut = rnd.randint(0, len(payload))
            sender.streams.write(sid, payload[:cut])
            sender.streams.write(sid, payload[cut:], fin=rnd.random() < 0.5)
            if sender.streams.get(sid).send.fin_offset is None:  # type: ignore[union-attr]
                sender.streams.finish(sid)
    readers = {a: Collector(b), b: Collector(a)}

    def tick(s: Simulation) -> None:
        for r in readers.values():
            r.poll(s.now)

    def done() -> bool:
        return all(len(readers[p].finished) == len(expected[p]) for p in (a, b))

    sim.on_tick = tick
    sim.run(done, max_time=120)
    for sender, reader in readers.items():
        for sid, payload in expected[sender].items():
            assert bytes(reader.data.get(sid, b"")) == payload, sid
    # the impairments really happened and recovery really worked
    assert ab.lost > 0 and ba.lost > 0
    assert a.recovery.stats.packets_lost > 0
    # everything acknowledged: nothing left buffered, and finished streams were forgotten
    sim.run_until_idle(max_time=300)
    assert a.recovery.bytes_in_flight == 0 and b.recovery.bytes_in_flight == 0
    for peer in (a, b):
        for sid in expected[peer]:
            stream = peer.streams.get(sid)
            assert stream is None or stream.send is None or stream.send.buffered == 0


def test_urgent_and_small_streams_overtake_bulk() -> None:
    a, b, _, _, sim = build(11, rate=2e6)
    reader = Collector(b)
    bulk = []
    for _ in range(3):
        sid = a.streams.open_stream()
        a.streams.write(sid, bytes(400_000), fin=True)
        bulk.append(sid)
    late: dict[str, int] = {}

    def tick(s: Simulation) -> None:
        if s.now >= 0.5 and not late:
            late["urgent"] = a.streams.open_stream(urgency=0)
            a.streams.write(late["urgent"], bytes(60_000), fin=True)
            late["small"] = a.streams.open_stream()
            a.streams.write(late["small"], bytes(1500), fin=True)
        s.app_timer = 0.5 if s.now < 0.5 else None
        reader.poll(s.now)

    sim.on_tick = tick
    sim.run(lambda: len(reader.finished) == 5, max_time=60)
    urgent_done = reader.finished[late["urgent"]] - 0.5
    small_done = reader.finished[late["small"]] - 0.5
    first_bulk = min(reader.finished[sid] for sid in bulk)
    # 60 kB at 2 MB/s is 30 ms of link time: the urgent stream is not queued behind 1.2 MB
    assert urgent_done < 0.2
    # the small call shares fairly with three bulk streams: a few quanta, not 1.2 MB
    assert small_done < 0.2
    assert reader.finished[late["urgent"]] < first_bulk
    assert reader.finished[late["small"]] < first_bulk


def test_blackout_recovers_via_probe_timeouts() -> None:
    a, b, ab, ba, sim = build(21)
    ab.blackout = (0.2, 2.5)
    ba.blackout = (0.2, 2.5)
    reader = Collector(b)
    sid = a.streams.open_stream()
    payload = random.Random(3).randbytes(3_000_000)
    a.streams.write(sid, payload, fin=True)

    def tick(s: Simulation) -> None:
        reader.poll(s.now)

    sim.on_tick = tick
    sim.run(lambda: sid in reader.finished, max_time=120)
    assert bytes(reader.data[sid]) == payload
    stats = a.recovery.stats
    assert stats.ptos >= 2  # backed off through the blackout
    assert stats.persistent_congestion >= 1


def test_restart_after_idle_caps_the_window() -> None:
    a, b, _, _, sim = build(31)
    reader = Collector(b)
    sid = a.streams.open_stream()
    a.streams.write(sid, bytes(2_000_000))

    def tick(s: Simulation) -> None:
        reader.poll(s.now)

    sim.on_tick = tick
    sim.run(lambda: len(reader.data.get(sid, b"")) == 2_000_000, max_time=60)
    sim.run_until_idle(max_time=120)
    assert a.cc.cwnd > a.cc.initial_window
    sim.now += 5.0  # the application pauses
    a.streams.write(sid, bytes(10), fin=True)
    sim.run(lambda: sid in reader.finished, max_time=300)
    assert a.cc.cwnd <= a.cc.initial_window + 2 * a.cc.max_datagram_size


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.25),
    reorder=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.1),
    congestion=st.sampled_from(["newreno", "cubic"]),
    sizes=st.lists(st.integers(0, 30_000), min_size=1, max_size=12),
    mtu=st.integers(1200, 1500),
)
def test_random_impairments_deliver_everything(
    seed: int,
    loss: float,
    reorder: float,
    duplicate: float,
    congestion: str,
    sizes: list[int],
    mtu: int,
) -> None:
    limits = StreamLimits(max_data=64 << 10, max_stream_data=16 << 10, max_streams_uni=4)
    a = SimPeer("a", is_client=True, local=limits, peer=limits, congestion=congestion, mtu=mtu)
    b = SimPeer("b", is_client=False, local=limits, peer=limits, congestion=congestion, mtu=mtu)
    links = [
        SimLink(random.Random(seed + i), loss=loss, reorder=reorder, duplicate=duplicate, rate=4e6)
        for i in (1, 2)
    ]
    sim = Simulation(a, b, links[0], links[1])
    rnd = random.Random(seed)
    payloads = [rnd.randbytes(n) for n in sizes]
    expected: dict[int, bytes] = {}
    pending = list(payloads)
    reader = Collector(b)

    def tick(s: Simulation) -> None:
        # more streams than the peer allows at once: open them as MAX_STREAMS arrives
        while pending and a.streams.can_open(bidi=False):
            sid = a.streams.open_stream(bidi=False)
            expected[sid] = pending.pop(0)
            a.streams.write(sid, expected[sid], fin=True)
        reader.poll(s.now)

    sim.on_tick = tick
    sim.run(lambda: not pending and len(reader.finished) == len(payloads), max_time=600)
    for sid, payload in expected.items():
        assert bytes(reader.data.get(sid, b"")) == payload
