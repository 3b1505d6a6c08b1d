"""UdpCarrier over real loopback sockets."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
import trio

from intentus_trio.mxp.carrier import (
    Address,
    CarrierStats,
    DatagramCarrier,
    UdpCarrier,
    open_udp_carrier,
)

TIMEOUT = 10.0


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _receive(carrier: DatagramCarrier) -> tuple[bytes, Address]:
    while True:
        item = carrier.receive_nowait()
        if item is not None:
            return item
        await carrier.wait_readable()


async def test_open_binds_ephemeral_port_and_satisfies_protocol() -> None:
    with await open_udp_carrier("127.0.0.1", 0) as carrier:
        host, port = carrier.local_address
        assert host == "127.0.0.1"
        assert port > 0
        assert isinstance(carrier, DatagramCarrier)
        assert carrier.stats == CarrierStats()


async def test_round_trip_ipv4() -> None:
    with (
        await open_udp_carrier("127.0.0.1") as a,
        await open_udp_carrier("127.0.0.1") as b,
    ):
        assert a.send_nowait(b"hello", b.local_address)
        with trio.fail_after(TIMEOUT):
            data, sender = await _receive(b)
        assert data == b"hello"
        assert sender == a.local_address
        await b.send(b"world", sender)
        with trio.fail_after(TIMEOUT):
            data, sender = await _receive(a)
        assert (data, sender) == (b"world", b.local_address)
        assert a.stats.sent == 1 and a.stats.sent_bytes == 5
        assert a.stats.received == 1 and a.stats.received_bytes == 5
        assert b.stats.sent == 1 and b.stats.received == 1


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_round_trip_ipv6() -> None:
    with (
        await open_udp_carrier("::1") as a,
        await open_udp_carrier("::1") as b,
    ):
        assert a.local_address[0] == "::1"
        assert a.send_nowait(b"six", b.local_address)
        with trio.fail_after(TIMEOUT):
            data, sender = await _receive(b)
        assert data == b"six"
        assert sender == a.local_address


async def test_receive_nowait_returns_none_when_empty() -> None:
    with await open_udp_carrier("127.0.0.1") as carrier:
        assert carrier.receive_nowait() is None


async def test_drain_after_one_wakeup_yields_all_queued_in_order() -> None:
    with (
        await open_udp_carrier("127.0.0.1") as a,
        await open_udp_carrier("127.0.0.1", receive_buffer_size=1 << 20) as b,
    ):
        count = 200
        for i in range(count):
            assert a.send_nowait(i.to_bytes(4, "big"), b.local_address)
        got: list[int] = []
        with trio.fail_after(TIMEOUT):
            while len(got) < count:
                await b.wait_readable()
                while (item := b.receive_nowait()) is not None:
                    got.append(int.from_bytes(item[0], "big"))
        assert got == list(range(count))
        assert b.stats.received == count


class _FullBufferSocket(socket.socket):
    """A real UDP socket whose next `full` sends fail as if the OS send buffer were full."""

    full = 0

    def sendto(self, data: Any, *args: Any) -> int:
        if self.full > 0:
            self.full -= 1
            raise BlockingIOError(errno.EAGAIN, "send buffer full")
        return super().sendto(data, *args)


def _full_buffer_carrier(full: int) -> UdpCarrier:
    sock = _FullBufferSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.full = full
    return UdpCarrier(sock)


async def test_send_nowait_counts_drop_when_buffer_full() -> None:
    with _full_buffer_carrier(full=2) as a, await open_udp_carrier("127.0.0.1") as b:
        assert a.send_nowait(b"one", b.local_address) is False
        assert a.send_nowait(b"two!", b.local_address) is False
        assert a.send_nowait(b"three", b.local_address) is True
        assert (a.stats.send_dropped, a.stats.send_dropped_bytes) == (2, 7)
        assert (a.stats.sent, a.stats.sent_bytes) == (1, 5)
        assert a.stats.dropped == 2 and a.stats.dropped_bytes == 7
        with trio.fail_after(TIMEOUT):
            assert (await _receive(b))[0] == b"three"


async def test_send_waits_for_writability_instead_of_dropping() -> None:
    with _full_buffer_carrier(full=3) as a, await open_udp_carrier("127.0.0.1") as b:
        with trio.fail_after(TIMEOUT):
            await a.send(b"patient", b.local_address)
            assert (await _receive(b))[0] == b"patient"
        assert a.stats.sent == 1
        assert a.stats.send_dropped == 0


async def test_blast_over_loopback_never_raises() -> None:
    with (
        await open_udp_carrier("127.0.0.1", send_buffer_size=4096) as a,
        await open_udp_carrier("127.0.0.1", receive_buffer_size=4096) as b,
    ):
        results = [a.send_nowait(b"x" * 1400, b.local_address) for _ in range(2000)]
        assert a.stats.sent == results.count(True)
        assert a.stats.send_dropped == results.count(False)
        with trio.fail_after(TIMEOUT):
            await a.send(b"last", b.local_address)


async def test_wait_readable_wakes_when_data_arrives() -> None:
    with (
        await open_udp_carrier("127.0.0.1") as a,
        await open_udp_carrier("127.0.0.1") as b,
    ):
        received: list[bytes] = []

        async def reader() -> None:
            received.append((await _receive(b))[0])

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                a.send_nowait(b"ping", b.local_address)
        assert received == [b"ping"]


async def test_close_wakes_waiter_and_rejects_use() -> None:
    carrier = await open_udp_carrier("127.0.0.1")
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await carrier.wait_readable()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            carrier.close()
    assert len(outcome) == 1
    assert carrier.closed
    carrier.close()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        carrier.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        carrier.send_nowait(b"x", ("127.0.0.1", 9))
    with pytest.raises(trio.ClosedResourceError):
        await carrier.send(b"x", ("127.0.0.1", 9))
    with pytest.raises(trio.ClosedResourceError):
        await carrier.wait_readable()


async def test_send_is_a_checkpoint() -> None:
    with (
        await open_udp_carrier("127.0.0.1") as a,
        await open_udp_carrier("127.0.0.1") as b,
    ):
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send(b"never", b.local_address)
        assert scope.cancelled_caught
        assert a.stats.sent == 0


async def test_oversize_datagram_is_local_misuse() -> None:
    with (
        await open_udp_carrier("127.0.0.1") as a,
        await open_udp_carrier("127.0.0.1") as b,
        pytest.raises(OSError),
    ):
        a.send_nowait(b"z" * 70000, b.local_address)


async def test_rejects_stream_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(ValueError):
        UdpCarrier(sock)
