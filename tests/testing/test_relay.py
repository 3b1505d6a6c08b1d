"""The UDP impairment relay, with real sockets on 127.0.0.1 and a plain trio echo server."""

from __future__ import annotations

import socket

import pytest
import trio

from intentus_trio.mxp.carrier import Address, UdpCarrier, open_udp_carrier
from intentus_trio.testing.netsim import LinkConditions
from intentus_trio.testing.relay import (
    RelayStats,
    UdpRelay,
    open_udp_relay,
    serve_udp_relay,
)

TIMEOUT = 10.0
BUFFER = 1 << 20


async def udp_echo(*, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
    """The simplest possible peer: a trio socket that sends every datagram back."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname())
        while True:
            data, address = await sock.recvfrom(65535)
            await sock.sendto(data, address)


async def client() -> UdpCarrier:
    return await open_udp_carrier("127.0.0.1", receive_buffer_size=BUFFER)


def tagged(i: int) -> bytes:
    """An index plus a hash of it: one flipped bit can never turn it into another valid tag."""
    return i.to_bytes(4, "big") + ((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "big")


def drain(carrier: UdpCarrier) -> list[bytes]:
    out: list[bytes] = []
    while (item := carrier.receive_nowait()) is not None:
        out.append(item[0])
    return out


async def receive(carrier: UdpCarrier) -> tuple[bytes, Address]:
    while (item := carrier.receive_nowait()) is None:
        await carrier.wait_readable()
    return item


async def test_relays_both_ways_without_impairments() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo) as relay:
                assert relay.address[0] == "127.0.0.1"
                assert relay.target == echo
                with await client() as c:
                    c.send_nowait(b"hello", relay.address)
                    assert await receive(c) == (b"hello", relay.address)
                assert relay.stats.to_target.delivered == 1
                assert relay.stats.to_client.delivered == 1
                assert relay.stats.clients == 1
            nursery.cancel_scope.cancel()


async def test_startable_with_nursery_start_reporting_its_address() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            address = await nursery.start(serve_udp_relay, echo)
            assert address[0] == "127.0.0.1" and address[1] > 0
            with await client() as c:
                c.send_nowait(b"via start", address)
                assert (await receive(c))[0] == b"via start"
            nursery.cancel_scope.cancel()


async def test_each_client_gets_its_own_replies() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo) as relay:
                with await client() as c1, await client() as c2:
                    for i in range(20):
                        c1.send_nowait(b"one %d" % i, relay.address)
                        c2.send_nowait(b"two %d" % i, relay.address)
                    await relay.wait_until(lambda s: s.to_client.delivered == 40)
                    assert drain(c1) == [b"one %d" % i for i in range(20)]
                    assert drain(c2) == [b"two %d" % i for i in range(20)]
                    assert relay.stats.clients == 2
                    assert relay.upstream_address(c1.local_address) is not None
                    assert relay.upstream_address(c1.local_address) != relay.upstream_address(
                        c2.local_address
                    )
            nursery.cancel_scope.cancel()


async def run_echo_through(
    count: int, relay_done: str, *, loss: float = 0.0, duplicate: float = 0.0, corrupt: float = 0.0
) -> tuple[RelayStats, list[bytes]]:
    """Send `count` tagged datagrams through an impaired relay, return its stats and the echoes.

    `relay_done` names the to_target counter that, added to `count`, tells how many echoes the
    relay must see before it is finished ("lost" subtracts, "duplicated" adds).
    """
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(
                target=echo, seed=11, loss=loss, duplicate=duplicate, corrupt=corrupt
            ) as relay:
                with await client() as c:
                    for i in range(count):
                        c.send_nowait(tagged(i), relay.address)

                    def finished(s: RelayStats) -> bool:
                        if relay_done == "lost":
                            expected = count - s.to_target.lost
                        else:
                            expected = count + s.to_target.duplicated
                        settled = s.to_target.offered == count
                        return settled and s.to_client.offered == expected

                    await relay.wait_until(finished)
                    got = drain(c)
                    assert len(got) == relay.stats.to_client.delivered
            nursery.cancel_scope.cancel()
    return relay.stats, got


async def test_loss_both_ways() -> None:
    stats, got = await run_echo_through(400, "lost", loss=0.2)
    assert (stats.to_target.lost, stats.to_client.lost) == (82, 64)
    assert 50 <= stats.to_target.lost <= 110
    assert 40 <= stats.to_client.lost <= 100
    assert stats.to_client.offered == 400 - stats.to_target.lost
    assert len(got) == 400 - stats.to_target.lost - stats.to_client.lost
    assert set(got) <= {tagged(i) for i in range(400)}


async def test_duplication_both_ways() -> None:
    stats, got = await run_echo_through(400, "duplicated", duplicate=0.1)
    assert (stats.to_target.duplicated, stats.to_client.duplicated) == (42, 51)
    assert 20 <= stats.to_target.duplicated <= 60
    assert len(got) == 400 + stats.to_target.duplicated + stats.to_client.duplicated
    assert set(got) == {tagged(i) for i in range(400)}


async def test_corruption_both_ways() -> None:
    stats, got = await run_echo_through(400, "lost", corrupt=0.05)
    assert (stats.to_target.corrupted, stats.to_client.corrupted) == (16, 16)
    assert 8 <= stats.to_target.corrupted <= 40
    valid = {tagged(i) for i in range(400)}
    damaged = [d for d in got if d not in valid]
    assert len(got) == 400
    assert len(damaged) == stats.to_target.corrupted + stats.to_client.corrupted


async def test_delay_applies_each_way() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo, delay=0.05) as relay:
                with await client() as c:
                    start = trio.current_time()
                    c.send_nowait(b"slow", relay.address)
                    assert (await receive(c))[0] == b"slow"
                    elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert 0.1 <= elapsed < 5.0


async def test_reordering() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(
                target=echo, reorder=0.2, reorder_delay=0.02, seed=5
            ) as relay:
                with await client() as c:
                    for i in range(200):
                        c.send_nowait(tagged(i), relay.address)
                    await relay.wait_until(lambda s: s.to_client.delivered == 200)
                    got = drain(c)
            nursery.cancel_scope.cancel()
    order = [int.from_bytes(d[:4], "big") for d in got]
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    assert relay.stats.to_target.reordered + relay.stats.to_client.reordered == 72
    assert 40 <= relay.stats.to_target.reordered + relay.stats.to_client.reordered <= 120


async def test_mtu_drops_oversize() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo, mtu=100) as relay:
                with await client() as c:
                    c.send_nowait(b"x" * 101, relay.address)
                    c.send_nowait(b"y" * 100, relay.address)
                    assert (await receive(c))[0] == b"y" * 100
                assert relay.stats.to_target.oversize == 1
            nursery.cancel_scope.cancel()


async def test_conditions_can_change_while_running() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo, loss=1.0) as relay:
                with await client() as c:
                    c.send_nowait(b"black hole", relay.address)
                    await relay.wait_until(lambda s: s.to_target.lost == 1)
                    relay.conditions = LinkConditions()
                    c.send_nowait(b"through", relay.address)
                    assert (await receive(c))[0] == b"through"
            nursery.cancel_scope.cancel()


async def test_stray_datagrams_at_upstream_are_ignored() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            async with open_udp_relay(target=echo) as relay:
                with await client() as c, await client() as intruder:
                    c.send_nowait(b"hi", relay.address)
                    await receive(c)
                    upstream = relay.upstream_address(c.local_address)
                    assert upstream is not None
                    intruder.send_nowait(b"spoof", upstream)
                    await relay.wait_until(lambda s: s.stray == 1)
                    assert c.receive_nowait() is None
            nursery.cancel_scope.cancel()


async def test_max_clients_and_idle_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            echo = await nursery.start(udp_echo)
            relay = UdpRelay(echo, max_clients=1, idle_timeout=0.05)
            address = await nursery.start(relay.serve)
            with await client() as c1, await client() as c2:
                c1.send_nowait(b"first", address)
                await receive(c1)
                c2.send_nowait(b"rejected", address)
                await relay.wait_until(lambda s: s.clients_rejected == 1)
                await relay.wait_until(lambda s: s.active_clients == 0)  # idle session expired
                assert relay.upstream_address(c1.local_address) is None
                c2.send_nowait(b"now there is room", address)
                assert (await receive(c2))[0] == b"now there is room"
                assert relay.stats.clients == 2
            nursery.cancel_scope.cancel()


async def test_exceptions_in_block_are_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with open_udp_relay(target=("127.0.0.1", 9)):
            raise KeyError("plain")


@pytest.mark.parametrize(
    "host",
    ["8.8.8.8", "10.0.0.1", "192.168.1.1", "example.com", "0.0.0.0", "::", "2001:db8::1"],
)
async def test_refuses_non_loopback_targets(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        UdpRelay((host, 53))
    with pytest.raises(ValueError, match="loopback"):
        async with open_udp_relay(target=(host, 53)):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="loopback"):
        await serve_udp_relay((host, 53))


async def test_refuses_non_loopback_listen_host_and_bad_ports() -> None:
    with pytest.raises(ValueError, match="loopback"):
        UdpRelay(("127.0.0.1", 9), host="0.0.0.0")
    with pytest.raises(ValueError):
        UdpRelay(("127.0.0.1", 0))
    assert UdpRelay(("localhost", 9)).target == ("127.0.0.1", 9)
    assert UdpRelay(("127.0.0.2", 9)).target == ("127.0.0.2", 9)
