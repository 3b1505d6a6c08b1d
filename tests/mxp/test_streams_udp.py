"""MXP streams over real UDP sockets on 127.0.0.1, through the impairment relay."""

from __future__ import annotations

import random
from typing import Any

import trio

from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.listener import mxp_listen
from intentus_trio.testing.relay import open_udp_relay

from .driver_helpers import SERVER_KEY, all_tasks, client_config, server_config
from .stream_checks import MessageChecker, messages, read_all, serve_echo

LOCAL = ("127.0.0.1", 0)


async def test_messages_on_many_streams_exactly_once_in_order_through_the_relay() -> None:
    before = all_tasks()
    streams, per_stream = 10, 100
    rng = random.Random(4)
    batches = [messages(i, per_stream, rng) for i in range(streams)]
    with trio.fail_after(60):
        async with (
            mxp_listen(LOCAL, server_config()) as listener,
            open_udp_relay(
                listener.local_address,
                loss=0.05,
                reorder=0.05,
                reorder_delay=0.005,
                duplicate=0.01,
                corrupt=0.01,
                delay=0.002,
                jitter=0.001,
                seed=9,
            ) as relay,
            mxp_connect(relay.address, SERVER_KEY.public, client_config()) as client,
            trio.open_nursery() as nursery,
        ):
            server = await listener.accept()
            nursery.start_soon(serve_echo, server)

            async def one(index: int) -> None:
                stream = await client.open_stream()
                checker = MessageChecker(index)
                async with trio.open_nursery() as inner:
                    inner.start_soon(read_all, stream, checker)
                    for msg in batches[index]:
                        await stream.send_all(msg)
                    await stream.send_eof()
                checker.finish(per_stream)
                await stream.aclose()

            async with trio.open_nursery() as work:
                for i in range(streams):
                    work.start_soon(one, i)
            stats = relay.stats
            assert stats.to_target.lost + stats.to_client.lost > 0
            assert stats.to_target.corrupted + stats.to_client.corrupted > 0
            nursery.cancel_scope.cancel()
    assert all_tasks() == before


async def test_bulk_with_a_stalling_reader_over_udp() -> None:
    total = 2 << 20
    data = random.Random(5).randbytes(total)
    config: dict[str, Any] = {"stream_send_buffer": 128 << 10}
    with trio.fail_after(60):
        async with (
            mxp_listen(LOCAL, server_config(**config)) as listener,
            open_udp_relay(listener.local_address, loss=0.01, delay=0.001, seed=2) as relay,
            mxp_connect(relay.address, SERVER_KEY.public, client_config(**config)) as client,
            trio.open_nursery() as nursery,
        ):
            server = await listener.accept()
            written = 0

            async def writer() -> None:
                nonlocal written
                stream = await client.open_stream()
                for i in range(0, total, 32768):
                    await stream.send_all(data[i : i + 32768])
                    written = i + 32768
                await stream.send_eof()

            nursery.start_soon(writer)
            stream = await server.accept_stream()
            got = bytearray(await stream.receive_some(50_000))
            await trio.sleep(0.5)
            stalled_at = written
            await trio.sleep(0.3)
            assert written == stalled_at < total
            while chunk := await stream.receive_some(65536):
                got += chunk
            assert got == data
