"""Fuzzing the server-side receive path with random and mutated datagrams."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.connection import State

from ..fuzz.strategies import Mutation, byte_mutations, mutate
from .loopback import CLIENT_ADDR, Loopback


def _session() -> Loopback:
    lb = Loopback(seed=5)
    assert lb.run(lambda: lb.client.is_established and any(c.is_established for c in lb.server))
    for i in range(3):
        lb.client.send_datagram(b"fuzz-%d" % i)
        lb.run_for(0.05)
    return lb


inputs = st.one_of(
    st.binary(max_size=1400),
    st.tuples(st.integers(0, 100), byte_mutations),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(inputs, min_size=1, max_size=10))
def test_server_survives_random_and_mutated_datagrams(
    items: list[bytes | tuple[int, list[Mutation]]],
) -> None:
    lb = _session()
    server_conn = lb.server_connection()
    captured = list(lb.to_server)
    events_before = len(lb.server_events)
    for item in items:
        if isinstance(item, bytes):
            data = item
        else:
            index, ops = item
            data = mutate(captured[index % len(captured)], ops)
        drops = lb.server.stats.dropped
        received = lb.server.stats.datagrams_received
        lb.server.receive_datagram(data, CLIENT_ADDR, lb.now)
        # every input is counted, and every one of them is dropped (replays included)
        assert lb.server.stats.datagrams_received == received + 1
        assert lb.server.stats.dropped == drops + 1
        lb.server.datagrams_to_send(lb.now)
        lb.server.handle_timer(lb.now)
        lb.flush()
    assert server_conn.state is State.ESTABLISHED
    assert len(lb.server_events) == events_before
    assert len(list(lb.server)) == 1
