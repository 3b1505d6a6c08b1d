"""The MXP transport's TCP test backend: a connection that never sends its preface is closed
after PREFACE_TIMEOUT instead of holding a handler task forever."""

from __future__ import annotations

import pytest
import trio

from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.mxp import (
    MxpEndpoint,
    MxpPool,
    MxpServer,
    TcpStreamBackend,
    open_client,
    tcpstreams,
)

from .test_mxp_transport import Gate, make_router


async def test_a_silent_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpstreams, "PREFACE_TIMEOUT", 0.2)
    backend = TcpStreamBackend()
    server = MxpServer(make_router(Gate()), backend=backend)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        host, port = MxpEndpoint.parse(url).address
        silent = await trio.open_tcp_stream(host, port)
        with trio.fail_after(5):
            assert await silent.receive_some(10) == b""  # closed by the server
        await silent.aclose()
        async with MxpPool(backend=backend) as pool, open_client(url, pool=pool) as client:
            assert (await client.send_intent(new_intent("echo", {"n": 1}))).ok
        nursery.cancel_scope.cancel()
