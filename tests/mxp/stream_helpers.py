"""Connected MXP connection pairs and stream makers for the stream tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from intentus_trio.mxp.carrier import DatagramCarrier
from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.driver import MxpConnection
from intentus_trio.mxp.listener import mxp_listen
from intentus_trio.mxp.stream import MxpStream

from .driver_helpers import SERVER_KEY, client_config, server_config

Pair = tuple[MxpConnection, MxpConnection]


@asynccontextmanager
async def connected(
    server_bind: tuple[str, int] | DatagramCarrier,
    client_carrier: DatagramCarrier | None = None,
    *,
    via: tuple[str, int] | None = None,
    options: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    """A (client, server) connection pair. ``options`` apply to both sides' Configuration;
    ``via`` is where the client sends to (a relay) instead of the listener's address."""
    both = dict(options or {})
    async with mxp_listen(server_bind, server_config(**both, **(server_options or {}))) as listener:
        target = via if via is not None else listener.local_address
        async with mxp_connect(
            target,
            SERVER_KEY.public,
            client_config(**both, **(client_options or {})),
            carrier=client_carrier,
        ) as client:
            server = await listener.accept()
            yield client, server


async def open_pair(
    a: MxpConnection, b: MxpConnection, **options: Any
) -> tuple[MxpStream, MxpStream]:
    """A stream opened by ``a`` and accepted by ``b``: one byte makes it visible to ``b``,
    which reads it back out."""
    s = await a.open_stream(**options)
    await s.send_all(b"\0")
    r = await b.accept_stream()
    assert await r.receive_some(1) == b"\0"
    return s, r


def makers(
    pair: Pair, settle: float
) -> tuple[
    Callable[[], Awaitable[tuple[MxpStream, MxpStream]]],
    Callable[[], Awaitable[tuple[MxpStream, MxpStream]]],
]:
    """The stream maker and the clogged stream maker of trio's conformance checks. A clogged
    pair has its sender's buffer full and the receiver's window used up, so sending blocks
    until the receiver reads."""
    client, server = pair

    async def stream_maker() -> tuple[MxpStream, MxpStream]:
        return await open_pair(client, server)

    async def clog(stream: MxpStream) -> None:
        manager = stream.connection.connection.streams
        assert manager is not None
        while True:
            space = manager.send_buffer_space(stream.stream_id)
            if space:
                await stream.send_all(b"x" * space)
            await trio.sleep(settle)
            if manager.send_buffer_space(stream.stream_id) == 0:
                return

    async def clogged_stream_maker() -> tuple[MxpStream, MxpStream]:
        # both directions: the checks also use the pair reversed
        s, r = await open_pair(client, server)
        await clog(s)
        await clog(r)
        return s, r

    return stream_maker, clogged_stream_maker
