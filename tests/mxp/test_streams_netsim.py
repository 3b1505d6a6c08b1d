"""MXP streams end to end over the deterministic in-memory network (MockClock, seeded
impairments): delivery under loss, flow control, priorities, congestion, idle and limits."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from intentus_trio.mxp.driver import ConnectionClosedError, MxpConnection
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.stream import MxpStream, StreamResetError, StreamStoppedError
from intentus_trio.testing.netsim import LinkConditions, MemoryNetwork, open_memory_network

from .driver_helpers import all_tasks
from .stream_checks import MessageChecker, messages, read_all, serve_echo
from .stream_helpers import Pair, connected, open_pair

SERVER = ("10.0.0.2", 4433)
CLIENT = ("10.0.0.1", 0)

HOSTILE = LinkConditions(
    loss=0.05,
    reorder=0.05,
    reorder_delay=0.015,
    duplicate=0.01,
    corrupt=0.01,
    delay=0.010,
    jitter=0.002,
)


def pair_on(net: MemoryNetwork, **kwargs: Any) -> AbstractAsyncContextManager[Pair]:
    return connected(net.bind(SERVER), net.bind(CLIENT), **kwargs)


async def _exchange(client: MxpConnection, streams: int, per_stream: int, seed: int) -> None:
    """Open ``streams`` streams at once; on each, send ``per_stream`` messages and check the
    echo: every message exactly once and in order, both ways."""
    rng = random.Random(seed)
    batches = [messages(i, per_stream, rng) for i in range(streams)]

    async def one(index: int) -> None:
        stream = await client.open_stream(urgency=index % 8)
        checker = MessageChecker(index)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, stream, checker)
            for msg in batches[index]:
                await stream.send_all(msg)
            await stream.send_eof()
        checker.finish(per_stream)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(one, i)


@pytest.mark.parametrize("congestion", ["newreno", "cubic"])
async def test_ten_thousand_messages_on_many_streams_through_a_hostile_network(
    autojump_clock: trio.testing.MockClock, congestion: str
) -> None:
    before = all_tasks()
    async with (
        open_memory_network(seed=5, conditions=HOSTILE) as net,
        pair_on(net, options={"congestion_control": congestion}) as (client, server),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, server)
        await _exchange(client, streams=40, per_stream=250, seed=1)
        stats = net.stats
        assert stats.lost > 100 and stats.duplicated > 10 and stats.corrupted > 10
        assert stats.reordered > 100
        assert client.path_stats().packets_lost > 0
        assert client.stats.drops["auth"] + server.stats.drops["auth"] > 0  # corrupted
        nursery.cancel_scope.cancel()
    assert all_tasks() == before


async def test_a_stalled_reader_stops_the_sender_without_loss_then_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    total = 3 << 20
    data = random.Random(3).randbytes(total)
    options = {"stream_send_buffer": 256 << 10}
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.005)) as net,
        pair_on(net, options=options) as (client, server),
    ):
        written = 0

        async def writer() -> None:
            nonlocal written
            stream = await client.open_stream()
            view = memoryview(data)
            for i in range(0, total, 16384):
                await stream.send_all(view[i : i + 16384])
                written = i + 16384
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            stream = await server.accept_stream()
            got = bytearray(await stream.receive_some(100_000))
            # the reader stalls: the windows close, the writer stops
            await trio.sleep(5)
            stalled_at = written
            await trio.sleep(5)
            assert written == stalled_at < total
            path = client.path_stats()
            assert path.bytes_in_flight == 0
            assert path.packets_lost == 0
            assert client.connection.streams is not None
            # resume: everything arrives, once, in order
            while chunk := await stream.receive_some(65536):
                got += chunk
        assert got == data
        assert client.path_stats().packets_lost == 0


async def test_urgent_stream_finishes_first_and_small_calls_are_not_starved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = LinkConditions(delay=0.005, bandwidth=2_000_000, queue_limit=60_000)
    done: dict[str, float] = {}
    latencies: list[float] = []
    async with (
        open_memory_network(seed=2, conditions=link) as net,
        pair_on(net) as (client, server),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, server)
        start = trio.current_time()

        async def transfer(name: str, size: int, urgency: int, delay: float) -> None:
            await trio.sleep(delay)
            stream = await client.open_stream(urgency=urgency)
            checker = MessageChecker()
            body = b"".join(messages(len(done), size // 1000, random.Random(size), 994))
            async with trio.open_nursery() as inner:
                inner.start_soon(read_all, stream, checker)
                await stream.send_all(body)
                await stream.send_eof()
            assert checker.bytes == len(body)
            done[name] = trio.current_time() - start

        async def small_calls() -> None:
            await trio.sleep(0.2)
            for _ in range(20):
                t0 = trio.current_time()
                stream = await client.open_stream()
                await stream.send_all(b"ping" * 16)
                await stream.send_eof()
                got = b""
                while chunk := await stream.receive_some():
                    got += chunk
                assert got == b"ping" * 16
                latencies.append(trio.current_time() - t0)
                await trio.sleep(0.05)

        async with trio.open_nursery() as work:
            work.start_soon(transfer, "bulk-1", 1_000_000, 3, 0.0)
            work.start_soon(transfer, "bulk-2", 1_000_000, 3, 0.0)
            work.start_soon(transfer, "urgent", 300_000, 0, 0.1)
            work.start_soon(small_calls)
        nursery.cancel_scope.cancel()
    assert done["urgent"] < min(done["bulk-1"], done["bulk-2"])
    # a bulk stream takes about 1 s (2 MB each way through 2 MB/s); calls stay far below
    assert max(latencies) < 0.25 * min(done["bulk-1"], done["bulk-2"])


async def test_congestion_window_drops_on_loss_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    samples: list[tuple[float, int, int]] = []
    path = LinkConditions(delay=0.010, bandwidth=1_000_000)
    async with (
        open_memory_network(seed=4, conditions=path) as net,
        pair_on(net) as (client, server),
        trio.open_nursery() as nursery,
    ):

        async def sink() -> None:
            stream = await server.accept_stream()
            while await stream.receive_some():
                pass

        async def sample() -> None:
            while True:
                path = client.path_stats()
                samples.append((trio.current_time(), path.cwnd, path.congestion_events))
                await trio.sleep(0.01)

        nursery.start_soon(sink)
        nursery.start_soon(sample)
        stream = await client.open_stream()
        chunk = bytes(65536)

        async def send_for(seconds: float) -> None:
            with trio.move_on_after(seconds):
                while True:
                    await stream.send_all(chunk)

        await send_for(1.0)
        before = client.path_stats()
        assert before.congestion_events == 0
        net.conditions = attrs.evolve(path, loss=0.3)
        await send_for(0.3)
        net.conditions = path
        await send_for(1.0)  # the losses are detected about one (queue-inflated) RTT later
        after_loss = client.path_stats()
        assert after_loss.congestion_events > 0
        assert after_loss.packets_lost > 0
        loss_time = next(t for t, _, events in samples if events > 0)
        low = min(c for t, c, _ in samples if t >= loss_time)
        assert low < before.cwnd
        await send_for(2.0)
        recovered = client.path_stats()
        assert recovered.congestion_events == after_loss.congestion_events
        assert recovered.cwnd > low
        nursery.cancel_scope.cancel()


async def test_keepalive_keeps_an_idle_connection_with_open_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = {"idle_timeout": 2.0, "keepalive_interval": 0.5}
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net, options=options) as (client, server),
    ):
        s, r = await open_pair(client, server)
        await trio.sleep(30)  # nothing but keepalives
        assert not client.is_closed and not server.is_closed
        await s.send_all(b"still here")
        assert await r.receive_some() == b"still here"
        await r.send_all(b"yes")
        assert await s.receive_some() == b"yes"


async def test_idle_timeout_ends_blocked_stream_operations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net, options={"idle_timeout": 2.0}) as (client, server),
    ):
        s, _ = await open_pair(client, server)
        with pytest.raises(ConnectionClosedError) as info:
            await s.receive_some()
        assert info.value.error_code == ErrorCode.IDLE_TIMEOUT
        with pytest.raises(ConnectionClosedError):
            await s.send_all(b"late")
        with pytest.raises(ConnectionClosedError):
            await client.open_stream()


async def test_stream_limit_makes_open_wait_for_credit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net, server_options={"max_streams_bidi": 3}) as (client, server),
    ):
        pairs = [await open_pair(client, server) for _ in range(3)]
        with pytest.raises(trio.TooSlowError):
            await client.open_stream(timeout=1.0)
        # finishing one stream both ways returns its credit to the client
        s, r = pairs[0]
        await s.send_eof()
        assert await r.receive_some() == b""
        await r.send_eof()
        assert await s.receive_some() == b""
        with trio.fail_after(1.0):
            extra = await client.open_stream()
        await extra.send_all(b"4th")
        fourth = await server.accept_stream()
        assert await fourth.receive_some() == b"4th"


async def test_reset_and_stop_sending_reach_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net) as (client, server),
    ):
        s, r = await open_pair(client, server)
        await s.send_all(b"partial")
        s.reset(7)
        with pytest.raises(trio.ClosedResourceError):
            await s.send_all(b"more")
        with pytest.raises(StreamResetError) as reset:
            while True:
                await r.receive_some()
        assert reset.value.error_code == 7
        # the other direction still works until stopped
        await r.send_all(b"answer")
        assert await s.receive_some() == b"answer"
        s.stop_sending(9)
        with pytest.raises(StreamStoppedError) as stopped:
            while True:
                await r.send_all(b"x" * 1000)
                await trio.sleep(0.01)
        assert stopped.value.error_code == 9
        # the connection is unaffected
        s2, r2 = await open_pair(client, server)
        await s2.send_all(b"fine")
        assert await r2.receive_some() == b"fine"


async def test_many_concurrent_streams_and_unidirectional_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net, options={"max_streams_bidi": 1000}) as (client, server),
    ):
        streams = [await client.open_stream() for _ in range(500)]
        for i, stream in enumerate(streams):
            await stream.send_all(b"%d" % i)
            await stream.send_eof()
        seen = set()
        for _ in range(500):
            peer = await server.accept_stream()
            data = b""
            while chunk := await peer.receive_some():
                data += chunk
            assert int(data) * 4 == peer.stream_id
            seen.add(peer.stream_id)
        assert len(seen) == 500
        uni = await client.open_stream(bidirectional=False)
        await uni.send_all(b"one way")
        await uni.send_eof()
        assert await uni.receive_some() == b""
        peer = await server.accept_stream()
        assert await peer.receive_some() == b"one way"
        with pytest.raises(trio.ClosedResourceError):
            await peer.send_all(b"back")


async def test_closing_the_connection_wakes_every_stream_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.01)) as net,
        pair_on(net) as (client, server),
    ):
        s, r = await open_pair(client, server)
        errors: list[BaseException] = []

        async def expect_error(fn: object) -> None:
            try:
                await fn()  # type: ignore[operator]
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expect_error, r.receive_some)
            nursery.start_soon(expect_error, server.accept_stream)
            await trio.sleep(0.1)
            client.close(ErrorCode.APPLICATION_ERROR + 3, "bye")
        assert len(errors) == 2
        assert all(isinstance(e, ConnectionClosedError) and e.by_peer for e in errors)
        with pytest.raises(trio.ClosedResourceError):
            await s.send_all(b"x")


@asynccontextmanager
async def echo_on_a_1ms_path(
    options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[MemoryNetwork, MxpConnection, MxpConnection, MxpStream]]:
    """A connected pair 0.5 ms apart each way, the server echoing, and one client stream."""
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.0005)) as net,
        pair_on(net, options=options) as (client, server),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, server)
        yield net, client, server, await client.open_stream()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("lost", ["request", "response"])
async def test_a_lone_lost_request_or_response_is_recovered_within_a_few_round_trips(
    autojump_clock: trio.testing.MockClock, lost: str
) -> None:
    """Only the probe timeout finds a lost last packet; it allows for the peer's
    max_ack_delay, so that default (1 ms) bounds the loss tail of request/response."""
    async with echo_on_a_1ms_path() as (net, _, _, stream):
        for _ in range(20):  # RTT estimates settle at 1 ms
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
        source, destination = (CLIENT, SERVER) if lost == "request" else (SERVER, CLIENT)
        net.set_link(source[0], destination[0], LinkConditions(loss=1.0, delay=0.0005),
                     both_ways=False)
        start = trio.current_time()
        await stream.send_all(b"lost")
        if lost == "response":
            await trio.sleep(0.0006)  # the request is through; the echo goes out into loss
        await trio.sleep(0.0009)
        net.set_link(source[0], destination[0], None, both_ways=False)
        assert await stream.receive_some() == b"lost"
        elapsed = trio.current_time() - start
        # probe timeout (srtt 1 ms + 1 ms granularity + the peer's 1 ms) and one round
        # trip; QUIC's 25 ms default made this about 28 ms.
        assert elapsed < 0.006, elapsed


async def test_request_response_wakes_no_timer_for_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ACKs ride on the replies and acknowledgements push probe timeouts back: the driver's
    timer follows, so it never wakes with nothing due."""
    async with echo_on_a_1ms_path() as (_, client, server, stream):
        for _ in range(100):
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
        for side in (client, server):
            assert side.driver_stats.timer_wakeups_early == 0, side.driver_stats


async def test_with_max_ack_delay_zero_replies_carry_the_acks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The receive loops let the application answer before they send an ACK that is due at
    once: a reply written meanwhile carries it, so there is no ACK-only packet per request."""
    async with echo_on_a_1ms_path({"max_ack_delay": 0.0}) as (_, _, server, stream):
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        sent = server.path_stats().packets_sent
        for _ in range(100):
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
        assert server.path_stats().packets_sent - sent <= 102  # one reply each
