"""Opening an MXP connection from a trio program: ``async with mxp_connect(...) as conn``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from intentus_trio._groups import unwrap_single
from intentus_trio.mxp.carrier import Address, DatagramCarrier, open_udp_carrier
from intentus_trio.mxp.config import Configuration
from intentus_trio.mxp.connection import Connection
from intentus_trio.mxp.driver import (
    DEFAULT_INBOX_SIZE,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    MAX_DRAIN,
    MxpConnection,
    PublicKeyLike,
    StaticKeyLike,
    application_turn,
    public_key_bytes,
    static_keypair,
)
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.noise import KeyPair

__all__ = ["mxp_connect"]


async def _resolve(address: tuple[str, int]) -> tuple[Address, str]:
    """A numeric address for ``address`` and the wildcard host of its family."""
    infos = await trio.socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {address[0]!r}")
    family, _, _, _, sockaddr = infos[0]
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    return (str(sockaddr[0]), int(sockaddr[1])), wildcard


async def _receive_loop(carrier: DatagramCarrier, conn: MxpConnection) -> None:
    """Wake once, process up to MAX_DRAIN datagrams inline, then act on them (ACKs, stream
    readers, writers) in one service call."""
    receive = conn.receive
    try:
        while True:
            await carrier.wait_readable()
            now = trio.current_time()
            for _ in range(MAX_DRAIN):
                item = carrier.receive_nowait()
                if item is None:
                    break
                receive(item[0], item[1], now)
            if conn.ack_due(now):
                conn.wake()
                await application_turn()
                now = trio.current_time()
            conn.service(now)
    except trio.ClosedResourceError:
        return


@asynccontextmanager
async def mxp_connect(
    address: tuple[str, int],
    server_key: PublicKeyLike,
    config: Configuration | None = None,
    *,
    static_key: StaticKeyLike | None = None,
    carrier: DatagramCarrier | None = None,
    connect_timeout: float | None = None,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    inbox_size: int = DEFAULT_INBOX_SIZE,
) -> AsyncIterator[MxpConnection]:
    """Connect to the MXP server at ``address`` that must prove ``server_key``.

    ``static_key`` (or ``config.static_key``) is this client's identity; without either, a
    fresh key is generated (the server's policy decides whether it is welcome). ``carrier``
    sends from an existing carrier (a ``MemoryCarrier`` in tests); by default a UDP socket is
    bound for the connection and closed with it. ``connect_timeout`` bounds the handshake
    (default ``config.handshake_timeout``); failure raises ``HandshakeError`` with the reason.
    Leaving the block sends a CLOSE (NO_ERROR) and ends the connection's tasks.
    """
    if config is None:
        config = Configuration(
            static_keypair(static_key) if static_key is not None else KeyPair.generate()
        )
    elif static_key is not None:
        config = attrs.evolve(config, static_key=static_keypair(static_key))
    if connect_timeout is not None:
        config = attrs.evolve(config, handshake_timeout=connect_timeout)
    server_public = public_key_bytes(server_key)
    own_carrier = carrier is None
    if carrier is None:
        remote, wildcard = await _resolve(address)
        carrier = await open_udp_carrier(wildcard, 0)
    else:
        remote = (address[0], address[1])
    try:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                now = trio.current_time()
                mxp = MxpConnection(
                    Connection.connect(config, server_public, remote, now),
                    carrier,
                    inbox_size=inbox_size,
                    receive_queue_size=receive_queue_size,
                )
                nursery.start_soon(_receive_loop, carrier, mxp)
                await nursery.start(mxp.run)
                try:
                    await mxp.wait_established()
                    yield mxp
                finally:
                    mxp.close(ErrorCode.NO_ERROR, "")
                    nursery.cancel_scope.cancel()
    finally:
        if own_carrier:
            carrier.close()
