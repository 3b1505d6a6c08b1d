"""MxpStream against trio's generic stream checks, in memory (MockClock) and over UDP."""

from __future__ import annotations

import trio
import trio.testing

from intentus_trio.testing.netsim import LinkConditions, open_memory_network

from .driver_helpers import all_tasks
from .stream_helpers import connected, makers

SMALL_WINDOWS = {
    "max_stream_data": 16 << 10,
    "max_stream_window": 16 << 10,
    "stream_send_buffer": 32 << 10,
    "idle_timeout": 600.0,
}


async def test_half_closeable_stream_conformance_in_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = all_tasks()
    async with (
        open_memory_network(seed=1, conditions=LinkConditions(delay=0.002)) as net,
        connected(
            net.bind(("10.0.0.2", 4433)), net.bind(("10.0.0.1", 0)), options=SMALL_WINDOWS
        ) as pair,
    ):
        stream_maker, clogged = makers(pair, settle=0.5)
        await trio.testing.check_half_closeable_stream(stream_maker, clogged)
    assert all_tasks() == before


async def test_half_closeable_stream_conformance_in_memory_lossy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lossy = LinkConditions(loss=0.03, reorder=0.05, duplicate=0.01, delay=0.002, jitter=0.001)
    async with (
        open_memory_network(seed=2, conditions=lossy) as net,
        connected(
            net.bind(("10.0.0.2", 4433)), net.bind(("10.0.0.1", 0)), options=SMALL_WINDOWS
        ) as pair,
    ):
        stream_maker, clogged = makers(pair, settle=2.0)
        await trio.testing.check_half_closeable_stream(stream_maker, clogged)


async def test_half_closeable_stream_conformance_over_udp() -> None:
    before = all_tasks()
    with trio.fail_after(60):
        async with connected(("127.0.0.1", 0), options=SMALL_WINDOWS) as pair:
            stream_maker, clogged = makers(pair, settle=0.05)
            await trio.testing.check_half_closeable_stream(stream_maker, clogged)
    assert all_tasks() == before
