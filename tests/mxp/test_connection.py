"""Client and server connections back to back, with loss, duplication, reordering and attacks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from intentus_trio.mxp.connection import Connection, DatagramTooLarge, State
from intentus_trio.mxp.events import (
    ConnectionClosed,
    DatagramReceived,
    ErrorCode,
    HandshakeCompleted,
    KeyUpdated,
)
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.mxp.packet import CID_LEN, PacketType, is_long_header, parse_long_packet
from intentus_trio.mxp.stats import Drop

from .loopback import CLIENT_ADDR, Impairment, Loopback


def _established(lb: Loopback) -> bool:
    return lb.client.is_established and any(c.is_established for c in lb.server)


def _datagrams(events: Sequence[object]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, DatagramReceived)]


def _closed(events: Sequence[object]) -> list[ConnectionClosed]:
    return [e for e in events if isinstance(e, ConnectionClosed)]


def test_handshake_datagrams_and_close() -> None:
    lb = Loopback()
    assert lb.run(lambda: _established(lb))
    (c_done,) = [e for e in lb.client_events if isinstance(e, HandshakeCompleted)]
    (s_done,) = [e for e in lb.server_events if isinstance(e, HandshakeCompleted)]
    assert c_done.remote_static == lb.server_key.public
    assert s_done.remote_static == lb.client_key.public
    assert len(lb.to_server[0]) >= 1200
    server = lb.server_connection()
    lb.client.send_datagram(b"hello")
    server.send_datagram(b"world")
    lb.run_for(0.2)
    assert _datagrams(lb.server_events) == [b"hello"]
    assert _datagrams(lb.client_events) == [b"world"]
    lb.client.close(lb.now, ErrorCode.APPLICATION_ERROR + 1, "done")
    lb.run_for(2.0)
    (mine,) = _closed(lb.client_events)
    (theirs,) = _closed(lb.server_events)
    assert (mine.error_code, mine.reason, mine.by_peer) == (0x101, "done", False)
    assert (theirs.error_code, theirs.reason, theirs.by_peer) == (0x101, "done", True)
    assert lb.client.is_closed and not list(lb.server)


@pytest.mark.parametrize("seed", range(12))
def test_handshake_completes_under_loss_duplication_and_reordering(seed: int) -> None:
    lb = Loopback(
        seed=seed,
        impairment=Impairment(loss=0.3, duplicate=0.3, jitter=0.08),
        client_config={"handshake_timeout": 60.0},
        server_config={"handshake_timeout": 60.0},
    )
    assert lb.run(lambda: _established(lb), max_time=60.0)
    for i in range(30):
        lb.client.send_datagram(b"%d" % i)
        lb.run_for(0.01)
    lb.run_for(1.0)
    got = _datagrams(lb.server_events)
    assert len(got) == len(set(got))  # duplicates never reach the application
    assert set(got) <= {b"%d" % i for i in range(30)}
    assert len(got) >= 5


def test_key_update_mid_stream_with_reordering_loses_nothing() -> None:
    lb = Loopback(seed=3, impairment=Impairment(jitter=0.05))
    assert lb.run(lambda: _established(lb))
    lb.run_for(0.2)  # let the first packets be acknowledged
    sent = []
    for i in range(200):
        payload = b"dgram-%d" % i
        lb.client.send_datagram(payload)
        sent.append(payload)
        if i == 100:
            assert lb.client.request_key_update()
        lb.flush()
        lb.run_for(0.002)
    lb.run_for(1.0)
    assert sorted(_datagrams(lb.server_events)) == sorted(sent)
    server = lb.server_connection()
    assert lb.client.key_generation == server.key_generation == 1
    assert any(isinstance(e, KeyUpdated) for e in lb.server_events)
    assert lb.server.stats.drops[Drop.AUTH] == 0
    # a second update becomes possible once the first is confirmed, from either side
    assert lb.run(lambda: server.request_key_update(), max_time=lb.now + 2)
    server.send_datagram(b"after")
    lb.run_for(0.5)
    assert lb.client.key_generation == 2
    assert _datagrams(lb.client_events)[-1] == b"after"


def test_anti_amplification_before_address_validation() -> None:
    lb = Loopback(server_config={"handshake_timeout": 30.0, "handshake_max_rto": 0.25})
    lb.filter = lambda data, dest: None if dest == "client" else data  # client hears nothing
    lb.flush()
    lb.client.close(lb.now)  # client stays silent after its first INITIAL
    lb.run_for(30.0)
    received = sum(len(d) for d in lb.to_server)
    sent = sum(len(d) for d in lb.to_client)
    assert received >= 1200
    assert 0 < sent <= 3 * received
    assert lb.server.stats.drops[Drop.AMPLIFICATION_LIMIT] >= 1


def test_retry_always_then_handshake() -> None:
    lb = Loopback(server_options={"require_retry": True})
    assert lb.run(lambda: _established(lb))
    assert lb.server.stats.retries_sent == 1
    kinds = [parse_long_packet(d).packet_type for d in lb.to_client if is_long_header(d)]
    assert kinds[0] is PacketType.RETRY
    server = lb.server_connection()
    assert server.address_validated


def _retry_exchange(lb: Loopback) -> bytes:
    """Run until the client answered the RETRY; return that (held back) INITIAL."""
    held: list[bytes] = []

    def hold(data: bytes, dest: str) -> bytes | None:
        if dest == "server" and is_long_header(data) and parse_long_packet(data).token:
            held.append(data)
            return None
        return data

    lb.filter = hold
    lb.run(lambda: bool(held), max_time=5)
    lb.filter = None
    return held[0]


def test_retry_token_expired() -> None:
    lb = Loopback(server_options={"require_retry": True, "token_lifetime": 2.0})
    initial = _retry_exchange(lb)
    lb.now += 5.0
    lb.deliver(initial, "server")
    assert lb.server.stats.drops[Drop.EXPIRED_TOKEN] == 1
    assert not list(lb.server)


def test_retry_token_wrong_address_or_forged() -> None:
    lb = Loopback(server_options={"require_retry": True})
    initial = _retry_exchange(lb)
    lb.server.receive_datagram(initial, ("10.9.9.9", 1), lb.now)
    assert lb.server.stats.drops[Drop.INVALID_TOKEN] == 1
    packet = parse_long_packet(initial)
    token_at = initial.index(packet.token)
    forged = bytearray(initial)
    forged[token_at + 3] ^= 0x40
    lb.deliver(bytes(forged), "server")
    assert lb.server.stats.drops[Drop.INVALID_TOKEN] == 2
    lb.deliver(initial, "server")
    assert len(list(lb.server)) == 1
    assert lb.run(lambda: _established(lb))


def test_retry_under_load() -> None:
    lb = Loopback(server_options={"retry_when_half_open_above": 0})
    assert lb.run(lambda: _established(lb))
    assert lb.server.stats.retries_sent == 1


def _extra_client(lb: Loopback, key: KeyPair) -> Connection:
    from intentus_trio.mxp.config import Configuration

    return Connection.connect(Configuration(key), lb.server_key.public, ("10.0.0.2", 4433), lb.now)


def test_half_open_cap() -> None:
    keys = [KeyPair.generate() for _ in range(4)]
    lb = Loopback(
        server_options={"max_half_open": 3, "retry_when_half_open_above": None},
        allowed=[k.public for k in keys],
    )
    for i, key in enumerate(keys):
        client = _extra_client(lb, key)
        ((initial, _),) = client.datagrams_to_send(lb.now)
        lb.server.receive_datagram(initial, (f"10.1.0.{i}", 5000), lb.now)
    assert lb.server.half_open_count() == 3
    assert lb.server.stats.drops[Drop.HALF_OPEN_LIMIT] == 1
    # half-open handshakes expire, freeing the slots
    lb.now += 20.0
    lb.server.handle_timer(lb.now)
    assert lb.server.half_open_count() == 0


def test_client_expecting_other_server_key_fails_with_reason() -> None:
    lb = Loopback(expected_server_key=KeyPair.generate().public)
    lb.run_for(15.0)
    assert lb.server.stats.drops[Drop.AUTH] >= 1
    assert not list(lb.server)
    (closed,) = _closed(lb.client_events)
    assert closed.error_code == ErrorCode.HANDSHAKE_TIMEOUT
    assert "static key" in closed.reason


def test_tampered_handshake_response_fails_authentication() -> None:
    lb = Loopback(client_config={"handshake_timeout": 3.0})

    def tamper(data: bytes, dest: str) -> bytes:
        if dest == "client" and is_long_header(data):
            return data[:-1] + bytes([data[-1] ^ 1])
        return data

    lb.filter = tamper
    lb.run_for(5.0)
    (closed,) = _closed(lb.client_events)
    assert closed.error_code == ErrorCode.AUTHENTICATION_FAILED
    assert "expected static key" in closed.reason
    assert not lb.client.is_established


def test_client_key_not_allowed() -> None:
    lb = Loopback(allowed=[KeyPair.generate().public])
    lb.run_for(3.0)
    (server_side,) = _closed(lb.server_events)
    (client_side,) = _closed(lb.client_events)
    assert server_side.error_code == client_side.error_code == ErrorCode.ACCESS_DENIED
    assert client_side.by_peer and "not allowed" in client_side.reason
    assert not any(isinstance(e, HandshakeCompleted) for e in lb.server_events)


def _exchange(lb: Loopback) -> None:
    assert lb.run(lambda: _established(lb))
    server = lb.server_connection()
    for i in range(5):
        lb.client.send_datagram(b"c%d" % i)
        server.send_datagram(b"s%d" % i)
        lb.run_for(0.05)
    lb.run_for(0.5)


def test_replayed_packets_are_dropped() -> None:
    lb = Loopback()
    _exchange(lb)
    before_server, before_client = len(lb.server_events), len(lb.client_events)
    server_drops, client_drops = lb.server.stats.dropped, lb.client.stats.dropped
    for data in list(lb.to_server):
        lb.deliver(data, "server")
    for data in list(lb.to_client):
        lb.deliver(data, "client")
    lb.flush()
    assert len(lb.server_events) == before_server
    assert len(lb.client_events) == before_client
    assert lb.server.stats.dropped - server_drops == len(lb.to_server)
    assert lb.client.stats.dropped - client_drops == len(lb.to_client)
    # replaying the INITIAL after the connection is gone does not create a new one
    first = lb.to_server[0]
    lb.client.close(lb.now)
    lb.run_for(3.0)
    assert not list(lb.server)
    lb.deliver(first, "server")
    assert not list(lb.server)
    assert lb.server.stats.drops[Drop.REPLAYED_INITIAL] == 1


def test_single_bit_flips_are_dropped() -> None:
    lb = Loopback()
    assert lb.run(lambda: _established(lb))
    server = lb.server_connection()
    lb.client.send_datagram(b"payload")
    ((packet, _),) = lb.client.datagrams_to_send(lb.now)
    initial = lb.to_server[0]
    drops = lb.server.stats.dropped
    flips = 0
    for data in (packet, initial):
        for bit in range(len(data) * 8):
            mutated = bytearray(data)
            mutated[bit // 8] ^= 1 << (bit % 8)
            lb.server.receive_datagram(bytes(mutated), CLIENT_ADDR, lb.now)
            flips += 1
    assert lb.server.stats.dropped - drops == flips
    assert _datagrams(lb.server_events) == []
    assert server.state is State.ESTABLISHED
    lb.deliver(packet, "server")
    assert _datagrams(lb.server_events) == [b"payload"]


def test_truncated_packets_are_dropped() -> None:
    lb = Loopback()
    _exchange(lb)
    drops = lb.server.stats.dropped + lb.client.stats.dropped
    count = 0
    for data in lb.to_server[-3:] + lb.to_server[:1]:
        for cut in range(len(data)):
            lb.server.receive_datagram(data[:cut], CLIENT_ADDR, lb.now)
            count += 1
    for data in lb.to_client[:1] + lb.to_client[-3:]:
        for cut in range(len(data)):
            lb.client.receive_datagram(data[:cut], CLIENT_ADDR, lb.now)
            count += 1
    assert lb.server.stats.dropped + lb.client.stats.dropped - drops == count
    assert lb.client.is_established


def test_unknown_connection_ids() -> None:
    lb = Loopback()
    _exchange(lb)
    data = bytearray(lb.to_server[-1])
    data[1 : 1 + CID_LEN] = b"\xee" * CID_LEN
    lb.deliver(bytes(data), "server")
    assert lb.server.stats.drops[Drop.UNKNOWN_CID] == 1
    handshake = next(d for d in lb.to_client if is_long_header(d))
    lb.deliver(handshake, "server")  # a server-to-client packet type sent to the server
    assert lb.server.stats.dropped >= 2


def test_handshake_messages_out_of_order() -> None:
    lb = Loopback()
    lb.flush()
    (initial,) = lb.to_server
    lb._queue.clear()
    lb.deliver(initial, "server")
    server = lb.server_connection()
    server.send_datagram(b"early")  # held until the client confirms
    lb.flush()
    (handshake,) = lb.to_client
    lb._queue.clear()
    # the client's RETRY/HANDSHAKE arriving at the server, and junk before the response
    lb.deliver(handshake, "server")
    lb.deliver(b"\x40" + lb.client.host_cid + bytes(40), "client")
    assert lb.client.stats.drops[Drop.NO_KEYS] == 1
    lb.deliver(handshake, "client")
    assert lb.client.is_established
    lb.deliver(handshake, "client")  # duplicate response after completion
    assert lb.run(lambda: server.is_established)
    lb.run_for(0.2)
    assert _datagrams(lb.client_events) == [b"early"]


def test_idle_timeout_and_keepalive() -> None:
    lb = Loopback(client_config={"idle_timeout": 1.0})
    assert lb.run(lambda: _established(lb))
    lb.run_for(3.0)
    (c,) = _closed(lb.client_events)
    (s,) = _closed(lb.server_events)
    assert c.error_code == s.error_code == ErrorCode.IDLE_TIMEOUT
    alive = Loopback(client_config={"idle_timeout": 1.0, "keepalive_interval": 0.3})
    assert alive.run(lambda: _established(alive))
    alive.run_for(10.0)
    assert alive.client.is_established
    assert alive.server_connection().is_established


def test_datagram_size_limit() -> None:
    lb = Loopback(server_config={"max_datagram_frame_size": 500})
    assert lb.run(lambda: _established(lb))
    assert lb.client.max_datagram_size() == 500
    with pytest.raises(DatagramTooLarge):
        lb.client.send_datagram(bytes(501))
    lb.client.send_datagram(bytes(500))
    big = lb.server_connection().max_datagram_size()
    assert 1100 < big < 1200
    lb.server_connection().send_datagram(bytes(big))
    lb.run_for(0.2)
    assert _datagrams(lb.server_events) == [bytes(500)]
    assert _datagrams(lb.client_events) == [bytes(big)]
    assert all(len(d) <= 1200 for d in lb.to_client)


def test_client_drops_bit_flipped_handshake_and_retry_packets() -> None:
    lb = Loopback(server_options={"require_retry": True})
    held: list[bytes] = []

    def hold(data: bytes, dest: str) -> bytes | None:
        if dest == "client" and is_long_header(data):
            held.append(data)
            return None
        return data

    lb.filter = hold
    lb.run(lambda: bool(held), max_time=1.0)
    (retry,) = held
    for data in (retry,):
        for bit in range(len(data) * 8):
            mutated = bytearray(data)
            mutated[bit // 8] ^= 1 << (bit % 8)
            lb.client.receive_datagram(bytes(mutated), ("10.0.0.2", 4433), lb.now)
    assert lb.client.state is State.CLIENT_INITIAL
    lb.deliver(retry, "client")
    lb.flush()
    held.clear()
    lb.run(lambda: bool(held), max_time=lb.now + 1.0)
    handshake = held[0]
    drops = lb.client.stats.dropped
    for bit in range(len(handshake) * 8):
        mutated = bytearray(handshake)
        mutated[bit // 8] ^= 1 << (bit % 8)
        lb.client.receive_datagram(bytes(mutated), ("10.0.0.2", 4433), lb.now)
    assert lb.client.stats.dropped - drops == len(handshake) * 8
    assert lb.client.state is State.CLIENT_INITIAL
    assert not lb.client_events
    lb.filter = None
    lb.deliver(handshake, "client")
    assert lb.client.is_established
    assert lb.run(lambda: _established(lb))


def test_rewritten_initial_header_does_not_block_the_real_one() -> None:
    lb = Loopback()
    lb.flush()
    (initial,) = lb.to_server
    lb._queue.clear()
    for offset in (5, 13):  # DCID, SCID
        rewritten = bytearray(initial)
        rewritten[offset] ^= 0xFF
        lb.deliver(bytes(rewritten), "server")
    assert lb.server.stats.drops[Drop.AUTH] == 2
    assert not list(lb.server)
    lb.deliver(initial, "server")
    assert lb.run(lambda: _established(lb))
