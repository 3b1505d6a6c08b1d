"""An agent whose reply JSON cannot hold fails its own call only, on every network transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from intentus_trio import (
    AgentResponse,
    ErrorCode,
    IntentEnvelope,
    Router,
    StreamChunk,
    new_event,
    new_intent,
)
from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.codec import dumps, intent_to_json
from intentus_trio.protocol.models import JsonObject
from intentus_trio.transports.mxp_legacy import open_legacy_client, serve_legacy
from intentus_trio.transports.registry import open_transport, server_for

URLS = ["ws://127.0.0.1:0/", "http://127.0.0.1:0", "tcp://127.0.0.1:0", "mxp://127.0.0.1:0"]


class Markup(str):
    """A str subclass, as HTML and XML libraries return."""


def router(produced: list[int] | None = None) -> Router:
    r = Router(name="node")
    produced = [] if produced is None else produced

    async def bad(env: IntentEnvelope) -> JsonObject:
        return {"thing": object()}

    async def cyclic(env: IntentEnvelope) -> JsonObject:
        loop: list[object] = []
        loop.append(loop)
        return {"loop": loop}

    async def subclass(env: IntentEnvelope) -> JsonObject:
        return {"text": Markup("<b>"), "n": True}

    async def publish_bad(env: IntentEnvelope) -> JsonObject:
        r.events.publish(new_event("tick", {"thing": object()}))
        r.events.publish(new_event("tick", {"n": 2}))
        return {}

    async def good(env: IntentEnvelope) -> JsonObject:
        return {"echo": env.payload}

    async def chunks(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        for item in ({"n": 1}, {"n": object()}, {"n": 3}, {"n": 4}):
            produced.append(0)
            yield item

    r.register("bad", "bad", bad)
    r.register("cyclic", "cyclic", cyclic)
    r.register("subclass", "subclass", subclass)
    r.register("publish", "publish", publish_bad)
    r.register("good", "good", good)
    r.register("chunks", "chunks", chunks)
    return r


async def check(transport: Any, produced: list[int]) -> None:
    for intent in ("bad", "cyclic"):
        env = new_intent(intent, {})
        response = await transport.send_intent(env, timeout=10)
        assert response.error is not None
        assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR
        assert "could not be encoded as JSON" in response.error.message
        assert response.trace_id == env.metadata.trace_id
    # A str subclass is written as its plain value.
    response = await transport.send_intent(new_intent("subclass", {}), timeout=10)
    assert response.ok and response.payload == {"text": "<b>", "n": True}
    # The connection and the server go on serving.
    response = await transport.send_intent(new_intent("good", {"a": 1}), timeout=10)
    assert response.ok and response.payload == {"echo": {"a": 1}}
    items = [item async for item in transport.send_stream(new_intent("chunks", {}), timeout=10)]
    assert items[0] == StreamChunk(0, {"n": 1})
    final = items[-1]
    assert len(items) == 2 and isinstance(final, AgentResponse) and final.error is not None
    assert final.error.code is ErrorCode.INTERNAL_AGENT_ERROR
    assert final.trace_id is not None
    response = await transport.send_intent(new_intent("good", {"b": 2}), timeout=10)
    assert response.ok
    assert len(produced) == 2  # the agent's stream was closed at the bad chunk
    # An event JSON cannot hold is skipped; the subscription and the next event go on.
    async with transport.subscribe("tick") as events:
        assert (await transport.send_intent(new_intent("publish", {}), timeout=10)).ok
        with trio.fail_after(10):
            async for event in events:
                assert event.payload == {"n": 2}
                break
    assert (await transport.send_intent(new_intent("good", {}), timeout=10)).ok


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
        produced: list[int] = []
        bound = await nursery.start(partial(server_for(url), router(produced), url,
                                            **server_options))
        with trio.fail_after(30):
            async with open_transport(bound, **client_options) as transport:
                await check(transport, produced)
        nursery.cancel_scope.cancel()


async def test_http_jsonrpc_and_tasks_answer_an_unencodable_reply_with_its_error() -> None:
    """JSON-RPC results and task records are written outside the frame codec."""
    url = "http://127.0.0.1:0"
    headers = {"content-type": "application/json"}
    frame = {"protocol": "http", "messageType": "intent",
             "body": intent_to_json(new_intent("bad", {}))}
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(server_for(url), router(), url))
        async with httpx.AsyncClient(base_url=bound) as raw:
            batch = [{"jsonrpc": "2.0", "method": "intent", "id": i,
                      "params": intent_to_json(new_intent(name, {}))}
                     for i, name in enumerate(("good", "bad", "good"))]
            reply = await raw.post("/jsonrpc", headers=headers, content=dumps(batch))
            assert reply.status_code == 200
            by_id = {item["id"]: item for item in reply.json()}
            assert by_id[0]["result"]["payload"] == {"echo": {}}
            assert by_id[1]["error"]["data"]["error"]["code"] == "INTERNAL_AGENT_ERROR"
            assert by_id[2]["result"]["payload"] == {"echo": {}}
            reply = await raw.post("/jsonrpc", headers=headers, content=dumps(
                {"jsonrpc": "2.0", "method": "frame", "id": "f", "params": frame}))
            assert reply.json()["error"]["data"]["error"]["code"] == "INTERNAL_AGENT_ERROR"
            task = (await raw.post("/tasks", headers=headers, content=dumps(frame))).json()
            status = await raw.get(task["statusUrl"], params={"wait": "5"})
            assert status.status_code == 200
            assert status.json()["reply"]["body"]["error"]["code"] == "INTERNAL_AGENT_ERROR"
        nursery.cancel_scope.cancel()


async def test_legacy_mxp_adapter_answers_an_unencodable_reply_with_its_error() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(partial(serve_legacy, router(), "127.0.0.1", 0))
        async with open_legacy_client(host, port, timeout=10) as client:
            response = await client.send_intent(new_intent("bad", {}))
            assert response.error is not None
            assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR
            assert (await client.send_intent(new_intent("good", {"a": 1}))).ok
        nursery.cancel_scope.cancel()
