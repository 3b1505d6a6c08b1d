"""An agent whose reply JSON cannot hold fails its own call only, on every network transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio

from intentus_trio import (
    AgentResponse,
    ErrorCode,
    IntentEnvelope,
    Router,
    StreamChunk,
    new_intent,
)
from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.models import JsonObject
from intentus_trio.transports.registry import open_transport, server_for

URLS = ["ws://127.0.0.1:0/", "http://127.0.0.1:0", "tcp://127.0.0.1:0", "mxp://127.0.0.1:0"]


def router() -> Router:
    r = Router(name="node")

    async def bad(env: IntentEnvelope) -> JsonObject:
        return {"thing": object()}

    async def good(env: IntentEnvelope) -> JsonObject:
        return {"echo": env.payload}

    async def chunks(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        yield {"n": 1}
        yield {"n": object()}
        yield {"n": 3}

    r.register("bad", "bad", bad)
    r.register("good", "good", good)
    r.register("chunks", "chunks", chunks)
    return r


async def check(transport: Any) -> None:
    response = await transport.send_intent(new_intent("bad", {}), timeout=10)
    assert response.error is not None
    assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR
    assert "could not be encoded as JSON" in response.error.message
    assert response.trace_id is not None
    # The connection and the server go on serving.
    response = await transport.send_intent(new_intent("good", {"a": 1}), timeout=10)
    assert response.ok and response.payload == {"echo": {"a": 1}}
    items = [item async for item in transport.send_stream(new_intent("chunks", {}), timeout=10)]
    assert items[0] == StreamChunk(0, {"n": 1})
    final = items[-1]
    assert isinstance(final, AgentResponse) and final.error is not None
    assert final.error.code is ErrorCode.INTERNAL_AGENT_ERROR
    response = await transport.send_intent(new_intent("good", {"b": 2}), timeout=10)
    assert response.ok


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "emcl"])
async def test_an_unencodable_reply_fails_only_its_call(url: str, sealed: bool) -> None:
    server_options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    if sealed:
        ring = Keyring()
        ring.add_group_key("g1", generate_master_key())
        server_options["protector"] = EmclProtector(ring, "node", role=Role.SERVER)
        client_options["protector"] = EmclProtector(ring, "caller", role=Role.CLIENT)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(server_for(url), router(), url, **server_options))
        with trio.fail_after(30):
            async with open_transport(bound, **client_options) as transport:
                await check(transport)
        nursery.cancel_scope.cancel()
