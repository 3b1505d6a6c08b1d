"""JSON-RPC 2.0 over the HTTP transport: requests, notifications, batches, send_batch."""

from __future__ import annotations

import httpx

from intentus_trio.protocol.codec import dumps, event_to_json, intent_to_json
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.transports.http import open_client

from .http_helpers import make_router, running_server

HEADERS = {"content-type": "application/json"}


async def test_single_request_and_notification() -> None:
    router = make_router()
    async with running_server(router) as (url, _), httpx.AsyncClient(base_url=url) as raw:
        env = new_intent("echo", {"v": 1})
        reply = await raw.post("/jsonrpc", headers=HEADERS, content=dumps(
            {"jsonrpc": "2.0", "method": "intent", "params": intent_to_json(env), "id": "a"}))
        assert reply.status_code == 200
        data = reply.json()
        assert data["id"] == "a"
        assert data["result"]["payload"] == {"v": 1}
        assert data["result"]["metadata"]["traceId"] == env.metadata.trace_id

        async with router.events.subscribe("note") as sub:
            reply = await raw.post("/jsonrpc", headers=HEADERS, content=dumps(
                {"jsonrpc": "2.0", "method": "event.publish",
                 "params": event_to_json(new_event("note", {"n": 1}))}))
            assert reply.status_code == 204
            assert reply.content == b""
            assert (await sub.receive()).payload == {"n": 1}

        reply = await raw.post("/jsonrpc", headers=HEADERS, content=dumps(
            {"jsonrpc": "2.0", "method": "intent", "params": intent_to_json(
                new_intent("nobody")), "id": 9}))
        assert reply.status_code == 404
        error = reply.json()["error"]
        assert error["code"] == -32000
        assert error["data"]["error"]["code"] == "CAPABILITY_NOT_FOUND"


async def test_batch_mixes_outcomes_in_one_200() -> None:
    async with running_server() as (url, _), httpx.AsyncClient(base_url=url) as raw:
        batch = [
            {"jsonrpc": "2.0", "method": "intent", "id": 1,
             "params": intent_to_json(new_intent("echo", {"k": 1}))},
            {"jsonrpc": "2.0", "method": "ping", "id": 2},
            {"jsonrpc": "2.0", "method": "nope", "id": 3},
            {"bad": True},
            {"jsonrpc": "2.0", "method": "ping"},  # notification: no reply
            {"jsonrpc": "2.0", "method": "intent", "id": 4, "params": {"x": 1}},
            {"jsonrpc": "2.0", "method": "intent", "id": 5,
             "params": intent_to_json(new_intent("fail"))},
        ]
        reply = await raw.post("/jsonrpc", headers=HEADERS, content=dumps(batch))
        assert reply.status_code == 200
        by_id = {item["id"]: item for item in reply.json()}
        assert len(reply.json()) == 6
        assert by_id[1]["result"]["payload"] == {"k": 1}
        assert by_id[2]["result"] == {"pong": True}
        assert by_id[3]["error"]["code"] == -32601
        assert by_id[None]["error"]["code"] == -32600
        assert by_id[4]["error"]["code"] == -32602
        assert by_id[4]["error"]["data"]["error"]["code"] == "VALIDATION_ERROR"
        assert by_id[5]["error"]["code"] == -32000
        assert by_id[5]["error"]["data"]["error"]["message"] == "always fails"

        only_notifications = [{"jsonrpc": "2.0", "method": "ping"}] * 3
        reply = await raw.post("/jsonrpc", headers=HEADERS, content=dumps(only_notifications))
        assert reply.status_code == 204


async def test_send_batch_keeps_order_and_errors() -> None:
    async with running_server() as (url, server), open_client(url) as client:
        envs = [new_intent("echo", {"i": i}) for i in range(50)]
        envs[7] = new_intent("nobody")
        envs[30] = new_intent("fail")
        replies = await client.send_batch(envs)
        assert len(replies) == 50
        for i, (env, reply) in enumerate(zip(envs, replies, strict=True)):
            assert reply.trace_id == env.metadata.trace_id
            if i == 7:
                assert reply.error is not None
                assert reply.error.code is ErrorCode.CAPABILITY_NOT_FOUND
            elif i == 30:
                assert reply.error is not None and reply.error.details == {"why": "testing"}
            else:
                assert reply.payload == {"i": i}
        assert server.app.stats.requests == 1
        assert await client.send_batch([]) == []


async def test_send_batch_concurrent_agents() -> None:
    """Calls of a batch run concurrently: 20 agents sleeping 0.2 s finish well under 4 s."""
    async with running_server() as (url, _), open_client(url) as client:
        replies = await client.send_batch(
            [new_intent("sleep", {"seconds": 0.2}) for _ in range(20)], timeout=2.0)
        assert all(r.ok for r in replies)


async def test_send_batch_too_large_for_server() -> None:
    from intentus_trio.transports.http import ServerLimits

    async with running_server(limits=ServerLimits(max_body_bytes=2000)) as (url, _), \
            open_client(url) as client:
        replies = await client.send_batch([new_intent("echo", {"x": "y" * 500})
                                           for _ in range(5)])
        assert all(r.error is not None and r.error.code is ErrorCode.TRANSPORT_ERROR
                   and r.error.details["transportCode"] == "PAYLOAD_TOO_LARGE" for r in replies)
        assert (await client.send_batch([new_intent("echo")]))[0].ok
