"""The MXP trio driver over the deterministic in-memory network (MockClock, seeded impairments)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from intentus_trio import keys
from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.config import Configuration, ServerConfiguration, allow_any
from intentus_trio.mxp.connection import Connection
from intentus_trio.mxp.driver import (
    ConnectionClosedError,
    DatagramTooLarge,
    HandshakeError,
    MxpConnection,
    public_key_bytes,
    static_keypair,
)
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.listener import MxpListener, mxp_listen, serve_mxp
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.mxp.packet import LONG_HEADER_LEN, MAGIC, VERSION
from intentus_trio.mxp.stats import Drop
from intentus_trio.testing.netsim import (
    EventKind,
    LinkConditions,
    MemoryNetwork,
    open_memory_network,
)

from .driver_helpers import (
    CLIENT_KEY,
    SERVER_KEY,
    all_tasks,
    client_config,
    echo,
    echo_with_retry,
    server_config,
)

SERVER = ("10.0.0.2", 4433)
CLIENT = ("10.0.0.1", 0)

IMPAIRED = LinkConditions(
    loss=0.1, duplicate=0.1, reorder=0.2, reorder_delay=0.01, delay=0.01, jitter=0.004
)


def dial(
    net: MemoryNetwork, addr: tuple[str, int] = SERVER
) -> AbstractAsyncContextManager[MxpConnection]:
    """A client with CLIENT_KEY on a fresh port of 10.0.0.1."""
    return mxp_connect(addr, SERVER_KEY.public, client_config(), carrier=net.bind(CLIENT))


@asynccontextmanager
async def echo_server(
    net: MemoryNetwork, **options: Any
) -> AsyncIterator[tuple[trio.Nursery, tuple[str, int]]]:
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(serve_mxp, echo, net.bind(SERVER), server_config(**options))
        yield nursery, addr
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("seed", range(4))
async def test_handshake_and_echo_under_loss_duplication_reordering(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    async with (
        open_memory_network(seed=seed, conditions=IMPAIRED) as net,
        echo_server(net) as (
            _,
            addr,
        ),
        dial(net, addr) as conn,
    ):
        assert conn.remote_static_key == SERVER_KEY.public
        for i in range(30):
            payload = f"ping {i}".encode()
            assert await echo_with_retry(conn, payload) == payload
    assert net.stats.lost and net.stats.duplicated and net.stats.reordered


async def test_server_sees_client_identity_and_datagram_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config(max_datagram_frame_size=500)) as listener,
        dial(net) as c,
    ):
        server_side = await listener.accept()
        assert server_side.remote_static_key == CLIENT_KEY.public
        assert c.max_datagram_size == 500
        with pytest.raises(DatagramTooLarge):
            await c.send_datagram(bytes(501))
        await c.send_datagram(bytes(500))  # still usable
        assert await server_side.receive_datagram(timeout=1) == bytes(500)
        await server_side.send_datagram(b"back")
        assert await c.receive_datagram(timeout=1) == b"back"


async def test_key_update_mid_traffic(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_network(seed=3, conditions=IMPAIRED) as net,
        echo_server(net) as (
            _,
            addr,
        ),
        dial(net, addr) as conn,
    ):
        for i in range(40):
            if i in (10, 25):
                # the previous update must be confirmed first: retry until it is
                while not conn.request_key_update():
                    await echo_with_retry(conn, b"confirm")
            payload = f"dgram {i}".encode()
            assert await echo_with_retry(conn, payload) == payload
        assert conn.key_generation == 2
        assert conn.stats.drops[Drop.AUTH] == 0


async def test_peer_started_key_update_is_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config()) as listener,
        dial(net) as c,
    ):
        server_side = await listener.accept()
        await echo_with_retry_pair(server_side, c, b"before")
        assert not server_side.request_key_update()  # generation 0 not acknowledged yet
        await trio.sleep(0.1)  # the client's delayed ACK confirms it
        assert server_side.request_key_update()
        await echo_with_retry_pair(server_side, c, b"after")
        assert c.key_generation == server_side.key_generation == 1
        assert c.driver_stats.key_updates == 1


async def echo_with_retry_pair(a: MxpConnection, b: MxpConnection, payload: bytes) -> None:
    await a.send_datagram(payload)
    assert await b.receive_datagram(timeout=1) == payload


async def test_idle_timeout_closes_both_sides(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config(idle_timeout=5.0)) as listener,
        mxp_connect(
            SERVER, SERVER_KEY.public, client_config(idle_timeout=20.0), carrier=net.bind(CLIENT)
        ) as conn,
    ):
        server_side = await listener.accept()
        start = trio.current_time()
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive_datagram()
        assert info.value.error_code == ErrorCode.IDLE_TIMEOUT
        assert not info.value.by_peer
        assert 5.0 <= trio.current_time() - start < 6.0  # the smaller timeout of the two
        reason = await server_side.wait_closed()
        assert reason.error_code == ErrorCode.IDLE_TIMEOUT
        with pytest.raises(ConnectionClosedError, match="IDLE_TIMEOUT"):
            await conn.send_datagram(b"late")
        assert listener.connections == []


async def test_keepalive_keeps_an_idle_connection_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=5, conditions=LinkConditions(loss=0.1, delay=0.01)) as net,
        echo_server(net, idle_timeout=5.0) as (_, addr),
        mxp_connect(
            addr,
            SERVER_KEY.public,
            client_config(idle_timeout=5.0, keepalive_interval=1.0),
            carrier=net.bind(CLIENT),
        ) as conn,
    ):
        await trio.sleep(60)
        assert not conn.is_closed
        assert await echo_with_retry(conn, b"still here") == b"still here"


async def test_close_with_reason_reaches_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config()) as listener,
    ):
        async with dial(net) as conn:
            server_side = await listener.accept()
            await conn.send_datagram(b"last words")
            conn.close(ErrorCode.APPLICATION_ERROR + 7, "bye")
            with pytest.raises(trio.ClosedResourceError):
                await conn.send_datagram(b"after close")
        # datagrams that arrived before the close are still delivered, then the reason
        assert await server_side.receive_datagram() == b"last words"
        with pytest.raises(ConnectionClosedError) as info:
            await server_side.receive_datagram()
        err = info.value
        assert (err.error_code, err.reason, err.by_peer) == (0x107, "bye", True)
        assert "APPLICATION_ERROR+7" in str(err) and "bye" in str(err)

        # and the other way round: the server closes, the client learns why
        async with dial(net) as conn:
            server_side = await listener.accept()
            await server_side.aclose(ErrorCode.APPLICATION_ERROR + 1, "maintenance")
            reason = await conn.wait_closed()
            assert (reason.error_code, reason.reason, reason.by_peer) == (
                0x101,
                "maintenance",
                True,
            )
            with pytest.raises(ConnectionClosedError, match="maintenance"):
                await conn.send_datagram(b"x")


async def test_leaving_the_block_closes_the_peer_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config()) as listener,
    ):
        async with dial(net):
            server_side = await listener.accept()
        received = [d async for d in server_side]  # a clean close ends iteration
        assert received == []
        assert (await server_side.wait_closed()).error_code == ErrorCode.NO_ERROR


async def test_user_errors_propagate_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network() as net, echo_server(net) as (_, addr):
        with pytest.raises(KeyError):
            async with dial(net, addr):
                raise KeyError("mine")
        with pytest.raises(KeyError):
            async with mxp_listen(net.bind(("10.0.0.3", 1)), server_config()):
                raise KeyError("mine")


async def test_retry_tokens_required_by_config(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_network(seed=1, conditions=IMPAIRED) as net,
        mxp_listen(net.bind(SERVER), server_config(require_retry=True)) as listener,
        dial(net) as c,
    ):
        server_side = await listener.accept()
        assert listener.stats.retries_sent >= 1
        # a valid token validated the address before any 1-RTT packet
        assert server_side.connection.address_validated
        await c.send_datagram(b"hello")
        with trio.move_on_after(1):
            assert await server_side.receive_datagram() == b"hello"


def _initial(key: KeyPair, server: tuple[str, int]) -> bytes:
    """A genuine INITIAL from a client that will never answer."""
    conn = Connection.connect(Configuration(key), SERVER_KEY.public, server, 0.0)
    ((data, _),) = conn.datagrams_to_send(0.0)
    return data


async def test_half_open_cap(autojump_clock: trio.testing.MockClock) -> None:
    config = server_config(
        policy=allow_any, max_half_open=3, retry_when_half_open_above=None, handshake_timeout=2.0
    )
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), config) as listener,
    ):
        for i in range(8):
            net.bind((f"10.9.0.{i}", 5000)).send_nowait(
                _initial(KeyPair.generate(), SERVER), SERVER
            )
        await trio.sleep(0.1)
        assert listener.half_open_count() == 3
        assert listener.stats.drops[Drop.HALF_OPEN_LIMIT] == 5
        # a genuine client gets in once the half-open handshakes expire
        start = trio.current_time()
        async with dial(net):
            assert trio.current_time() - start >= 1.9
            await listener.accept()
            assert listener.half_open_count() == 0
        assert listener.stats.drops[Drop.HALF_OPEN_LIMIT] > 5


async def test_anti_amplification_measured_on_the_wire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A spoofed INITIAL names a victim that never answers: the server may send the victim at
    most 3x what it received from that address, whatever the client repeats."""
    victim = ("10.7.7.7", 9999)
    config = server_config(policy=allow_any, retry_when_half_open_above=None)
    async with (
        open_memory_network(trace=True) as net,
        mxp_listen(net.bind(SERVER), config) as listener,
    ):
        spoofer = net.bind(victim)  # stands in for packets forged with the victim's address
        initial = _initial(KeyPair.generate(), SERVER)
        spoofer.send_nowait(initial, SERVER)
        await trio.sleep(0.6)
        spoofer.send_nowait(initial, SERVER)  # a repeat prompts a resend of message 2
        spoofer.send_nowait(b"\x80" + MAGIC + bytes([VERSION]) + bytes(200), SERVER)
        await trio.sleep(15)  # past the handshake timeout
        assert listener.connections == []
        assert net.trace is not None
        to_server = sum(
            len(e.data) for e in net.trace if e.source == victim and e.destination == SERVER
        )
        to_victim = [e for e in net.trace if e.source == SERVER and e.destination == victim]
        sent = sum(len(e.data) for e in to_victim)
        assert all(e.kind is EventKind.DELIVERED for e in to_victim)
        assert 0 < sent <= 3 * to_server
        assert len(to_victim) >= 3  # message 2 was retransmitted, within the budget

    # with retry required, an unvalidated address only ever gets one small RETRY per INITIAL
    async with (
        open_memory_network(trace=True) as net,
        mxp_listen(net.bind(SERVER), server_config(require_retry=True)),
    ):
        spoofer = net.bind(victim)
        spoofer.send_nowait(_initial(KeyPair.generate(), SERVER), SERVER)
        await trio.sleep(15)
        assert net.trace is not None
        to_victim = [e for e in net.trace if e.source == SERVER and e.destination == victim]
        assert len(to_victim) == 1 and len(to_victim[0].data) < 100


async def test_initial_flood_while_an_established_connection_keeps_working(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config_options = {"policy": allow_any, "max_half_open": 32, "retry_when_half_open_above": 8}
    async with (
        open_memory_network(seed=2, conditions=LinkConditions(delay=0.005)) as net,
        echo_server(net, **config_options) as (nursery, addr),
        dial(net, addr) as conn,
    ):
        genuine = [_initial(KeyPair.generate(), SERVER) for _ in range(40)]
        flooders = [net.bind((f"10.66.{i // 250}.{i % 250}", 7000)) for i in range(400)]

        async def flood() -> None:
            for round_ in range(20):
                for i, carrier in enumerate(flooders[round_ * 20 : round_ * 20 + 20]):
                    junk = bytearray(os.urandom(1200))
                    junk[:LONG_HEADER_LEN] = genuine[i % 40][:LONG_HEADER_LEN]
                    carrier.send_nowait(genuine[(round_ + i) % 40], addr)
                    carrier.send_nowait(bytes(junk), addr)
                await trio.sleep(0.01)

        nursery.start_soon(flood)
        for i in range(50):
            payload = f"through the flood {i}".encode()
            assert await echo_with_retry(conn, payload) == payload
            await trio.sleep(0.005)
        assert not conn.is_closed
    # (the listener is gone now; its counters stay readable on the objects)


async def test_flood_counters(autojump_clock: trio.testing.MockClock) -> None:
    config = server_config(policy=allow_any, max_half_open=16, retry_when_half_open_above=4)
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), config, admission_queue_size=8) as listener,
        dial(net) as conn,
    ):
        await listener.accept()
        initials = [_initial(KeyPair.generate(), SERVER) for _ in range(60)]
        for i, data in enumerate(initials):
            net.bind((f"10.66.0.{i}", 7000)).send_nowait(data, SERVER)
        await trio.sleep(0.5)
        stats, driver = listener.stats, listener.driver_stats
        # all 60 arrived in one burst: the bounded admission queue (8, plus one handed
        # straight to the waiting admission task) took a few ...
        admitted = 60 - driver.admission_dropped
        assert 8 <= admitted <= 9
        # ... of which 4 got state (half-open) and the rest a stateless RETRY
        assert listener.half_open_count() == 4
        assert stats.retries_sent == admitted - 4
        assert not conn.is_closed


async def test_accept_backlog_full_refuses_with_server_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), server_config(), backlog=1) as listener,
    ):
        async with dial(net), dial(net) as second:
            reason = await second.wait_closed()
            assert reason.error_code == ErrorCode.SERVER_BUSY and reason.by_peer
        assert listener.driver_stats.accept_dropped == 1


async def test_wrong_server_key_and_unreachable_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_network() as net, echo_server(net) as (_, addr):
        with pytest.raises(HandshakeError, match="does not hold the expected static key") as info:
            async with mxp_connect(
                addr,
                KeyPair.generate().public,
                client_config(),
                carrier=net.bind(CLIENT),
                connect_timeout=3.0,
            ):
                pass  # pragma: no cover
        assert info.value.error_code == ErrorCode.HANDSHAKE_TIMEOUT
        # a client key the server does not allow
        with pytest.raises(HandshakeError, match="rejected") as info:
            async with mxp_connect(addr, SERVER_KEY.public, carrier=net.bind(CLIENT)):
                pass  # pragma: no cover
        assert info.value.error_code == ErrorCode.ACCESS_DENIED


async def test_no_leaked_tasks_after_close(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network(seed=4, conditions=IMPAIRED) as net:
        before = all_tasks()
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_mxp, echo, net.bind(SERVER), server_config())
            for _ in range(3):
                async with dial(net, addr) as conn:
                    await echo_with_retry(conn, b"x")
                    assert len(all_tasks()) > len(before)
            async with (
                mxp_listen(net.bind(("10.0.0.3", 1)), server_config()) as listener,
                dial(net, listener.local_address),
            ):
                await listener.accept()
            nursery.cancel_scope.cancel()
        assert all_tasks() == before


async def test_listener_accept_after_close_raises(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network() as net:
        async with mxp_listen(net.bind(SERVER), server_config()) as listener:
            with pytest.raises(trio.TooSlowError):
                await listener.accept(timeout=1.0)
            listener.close()
            with pytest.raises(trio.ClosedResourceError):
                await listener.accept()
            assert [c async for c in listener] == []
        assert isinstance(listener, MxpListener)


async def test_keys_from_the_shared_key_module(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Key files written as ``intentus-trio keygen x25519`` writes them are accepted as paths,
    as loaded key pairs, or as raw bytes."""
    path = tmp_path / "server.key"
    keys.save_x25519(path, keys.X25519KeyPair.generate())
    server_pair = keys.load_x25519(path)
    client_pair = keys.X25519KeyPair.generate()
    config = ServerConfiguration(Configuration(static_keypair(path)), allow_any)
    async with (
        open_memory_network() as net,
        mxp_listen(net.bind(SERVER), config) as listener,
        mxp_connect(
            SERVER, f"{path}.pub", static_key=client_pair, carrier=net.bind(CLIENT)
        ) as conn,
    ):
        server_side = await listener.accept()
        assert server_side.remote_static_key == client_pair.public
        assert conn.remote_static_key == server_pair.public
    assert static_keypair(client_pair.private).public == client_pair.public
    assert public_key_bytes(server_pair) == server_pair.public
    with pytest.raises(ValueError):
        public_key_bytes(b"short")


async def test_leaving_the_listener_closes_its_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leave, ready = trio.Event(), trio.Event()

    async def serve(net: MemoryNetwork) -> None:
        async with mxp_listen(net.bind(SERVER), server_config()) as listener:
            ready.set()
            await listener.accept()
            await leave.wait()

    async with open_memory_network() as net, trio.open_nursery() as nursery:
        nursery.start_soon(serve, net)
        await ready.wait()
        async with dial(net) as conn:
            leave.set()
            reason = await conn.wait_closed()
            assert (reason.error_code, reason.reason, reason.by_peer) == (
                ErrorCode.NO_ERROR,
                "server closing",
                True,
            )
            with pytest.raises(ConnectionClosedError, match="server closing"):
                await conn.send_datagram(b"anyone?")


@pytest.mark.parametrize("seed", range(3))
async def test_wait_flushed_lets_a_close_lose_no_stream_data(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    # close() abandons what the peer has not acknowledged; waiting for wait_flushed first
    # makes "write, then close at once" deliver everything over a lossy network.
    payload = bytes(range(256)) * 800
    settled: list[bool] = []

    async def answer(conn: MxpConnection) -> None:
        await conn.wait_flushed()  # nothing written yet: returns at once
        stream = await conn.accept_stream()
        assert await stream.receive_some() == b"go"
        await stream.send_all(payload)
        await stream.send_eof()
        await conn.wait_flushed()
        manager = conn.connection.streams
        settled.append(manager is not None and manager.settled())
        conn.close(0, "done")

    lossy = LinkConditions(loss=0.2, delay=0.01)
    async with (
        open_memory_network(seed=seed, conditions=lossy) as net,
        server_with(net, answer),
        dial(net) as conn,
    ):
        stream = await conn.open_stream()
        await stream.send_all(b"go")
        received = bytearray()
        while data := await stream.receive_some():
            received += data
        assert received == payload
        assert (await conn.wait_closed()).reason == "done"
    assert settled == [True]


async def test_wait_flushed_returns_when_the_connection_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network() as net,
        server_with(net, _read_forever),
        dial(net) as conn,
    ):
        stream = await conn.open_stream()
        with net.partitioned([SERVER[0]], [CLIENT[0]]):
            await stream.send_all(b"never acknowledged")
            with trio.move_on_after(1):
                await conn.wait_flushed()
                raise AssertionError("flushed without an acknowledgement")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.wait_flushed)
                await trio.sleep(0.1)
                conn.close()


async def _read_forever(conn: MxpConnection) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def server_with(net: MemoryNetwork, handler: Any) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_mxp, handler, net.bind(SERVER), server_config())
        yield
        nursery.cancel_scope.cancel()
