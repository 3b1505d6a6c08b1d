"""Shared pieces of the legacy MXP tests, including a wire codec written from the spec alone.

`raw_encode`/`raw_decode` follow the MXP message layout (32-byte little-endian header, payload,
XXH3-64 of both) with struct and xxhash only, so the tests that use them check our adapter
against the wire format rather than against our own codec.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
import xxhash

from intentus_trio.mxp.carrier import Address
from intentus_trio.protocol.models import IntentEnvelope
from intentus_trio.routing.router import Router
from intentus_trio.testing.netsim import (
    PERFECT,
    LinkConditions,
    MemoryCarrier,
    MemoryNetwork,
    open_memory_network,
)
from intentus_trio.transports.mxp_legacy import (
    LegacyMxpClient,
    LegacyServerStats,
    open_legacy_client,
    serve_legacy,
)

MAGIC = 0x4D585031
HEADER = struct.Struct("<IBBHQQQ")
CHECKSUM = struct.Struct("<Q")

CALL, RESPONSE, EVENT, HEARTBEAT, ACK, ERROR = 0x10, 0x11, 0x12, 0x03, 0xF0, 0xF1
REQUIRES_ACK, COMPRESSED, FINAL = 0x04, 0x01, 0x08

SERVER: Address = ("10.0.0.1", 9000)


def raw_encode(
    type_: int,
    payload: bytes,
    message_id: int,
    trace_id: int,
    flags: int = 0,
    *,
    magic: int = MAGIC,
    reserved: int = 0,
) -> bytes:
    body = HEADER.pack(magic, type_, flags, reserved, message_id, trace_id, len(payload))
    return body + payload + CHECKSUM.pack(xxhash.xxh3_64_intdigest(body + payload))


@attrs.frozen
class Raw:
    type: int
    flags: int
    message_id: int
    trace_id: int
    payload: bytes


def raw_decode(data: bytes) -> Raw:
    magic, type_, flags, reserved, message_id, trace_id, length = HEADER.unpack_from(data)
    assert magic == MAGIC and reserved == 0
    assert len(data) == HEADER.size + length + CHECKSUM.size
    (checksum,) = CHECKSUM.unpack_from(data, HEADER.size + length)
    assert checksum == xxhash.xxh3_64_intdigest(data[: HEADER.size + length])
    return Raw(type_, flags, message_id, trace_id, data[HEADER.size : HEADER.size + length])


@attrs.define
class Echo:
    """An agent that echoes its payload and counts its calls per request id."""

    calls: int = 0
    seen: list[str] = attrs.Factory(list)
    gate: trio.Event | None = None

    async def handle(self, env: IntentEnvelope) -> dict[str, Any]:
        self.calls += 1
        self.seen.append(env.metadata.request_id)
        if self.gate is not None:
            await self.gate.wait()
        return {"echo": env.payload, "traceId": env.metadata.trace_id}


def echo_router() -> tuple[Router, Echo]:
    router = Router(name="legacy-test")
    echo = Echo()
    router.register("echo-agent", "echo", echo.handle)
    return router, echo


@attrs.define
class SimSetup:
    net: MemoryNetwork
    router: Router
    echo: Echo
    stats: LegacyServerStats
    client: LegacyMxpClient


@asynccontextmanager
async def sim_pair(
    *,
    conditions: LinkConditions = PERFECT,
    seed: int = 1,
    server_carrier: Any = None,
    client_options: dict[str, Any] | None = None,
    **server_options: Any,
) -> AsyncIterator[SimSetup]:
    router, echo = echo_router()
    stats = LegacyServerStats()
    async with open_memory_network(seed=seed, conditions=conditions) as net, \
            trio.open_nursery() as nursery:
        carrier = net.bind(SERVER)
        if server_carrier is not None:
            carrier = server_carrier(carrier)
        await nursery.start(partial(serve_legacy, router, carrier=carrier, stats=stats,
                                    **server_options))
        async with open_legacy_client(*SERVER, carrier=net.bind(("10.0.0.2", 0)),
                                      **(client_options or {})) as client:
            yield SimSetup(net, router, echo, stats, client)
        nursery.cancel_scope.cancel()


async def exchange(carrier: MemoryCarrier, data: bytes, to: Address = SERVER) -> list[Raw]:
    """Send one datagram and collect every answer that arrives within a simulated second."""
    carrier.send_nowait(data, to)
    answers: list[Raw] = []
    with trio.move_on_after(1.0):
        while True:
            await carrier.wait_readable()
            while (item := carrier.receive_nowait()) is not None:
                answers.append(raw_decode(item[0]))
    return answers
