"""A node's lifetime and its node-wide settings: remotes open before and close after the
listeners, ``max_frame_bytes`` reaches listeners and remotes, ``agent_timeout = 0``."""

from __future__ import annotations

import httpx
import pytest
import trio

from intentus_trio import new_intent
from intentus_trio.config import build_router, parse_config
from intentus_trio.node import serve_node
from intentus_trio.protocol.codec import dumps, intent_to_json
from intentus_trio.transports.websocket import open_client as open_ws


async def test_a_node_with_remotes_starts_and_stops_cleanly() -> None:
    back = parse_config({"samples": True, "listeners": [{"url": "http://127.0.0.1:0"}]})
    async with trio.open_nursery() as nursery:
        backend = await nursery.start(serve_node, back)
        front = parse_config({"remotes": [
            {"name": "far-upper", "intents": ["upper"], "url": backend.urls[0]},
            {"name": "nobody", "intents": ["gone"], "url": "http://127.0.0.1:9"},
        ]})
        async with trio.open_nursery() as inner:
            node = await inner.start(serve_node, front)
            response = await node.router.route_intent(new_intent("upper", {"text": "a"}))
            assert response.payload == {"text": "A"}
            inner.cancel_scope.cancel()  # shuts down without error
        nursery.cancel_scope.cancel()


async def test_the_node_frame_limit_reaches_its_listeners() -> None:
    config = parse_config({
        "samples": True,
        "node": {"max_frame_bytes": 2048},
        "listeners": [{"url": "http://127.0.0.1:0"}, {"url": "ws://127.0.0.1:0"}],
    })
    big = new_intent("echo", {"text": "x" * 4096})
    async with trio.open_nursery() as nursery:
        node = await nursery.start(serve_node, config)
        http_url, ws_url = node.urls
        async with httpx.AsyncClient(base_url=http_url) as raw:
            frame = dumps({"protocol": "http", "messageType": "intent", "headers": {},
                           "body": intent_to_json(big)})
            reply = await raw.post("/intent", content=frame,
                                   headers={"content-type": "application/json"})
            assert reply.status_code == 413
        async with open_ws(ws_url, max_frame_bytes=1 << 20) as client:
            refused = await client.send_intent(big)
            # the server announced its limit: the client refuses the frame before sending
            assert refused.error is not None
            assert refused.error.details["transportCode"] == "PAYLOAD_TOO_LARGE"
            assert refused.error.details["limit"] == 2048
            assert (await client.send_intent(new_intent("echo", {"small": 1}))).ok
        nursery.cancel_scope.cancel()


def test_agent_timeout_zero_means_no_router_deadline() -> None:
    assert build_router(parse_config({"node": {"agent_timeout": 0}})).default_timeout is None
    assert build_router(parse_config({})).default_timeout == 30.0


async def test_http_limits_from_a_node_file() -> None:
    config = parse_config({
        "samples": True,
        "node": {"max_frame_bytes": 2048},
        "listeners": [{"url": "http://127.0.0.1:0",
                       "options": {"limits": {"max_call_timeout": 0.2}}}],
    })
    async with trio.open_nursery() as nursery:
        node = await nursery.start(serve_node, config)
        async with httpx.AsyncClient(base_url=node.urls[0]) as raw:
            headers = {"content-type": "application/json"}

            def frame(payload: dict[str, object], name: str = "echo") -> bytes:
                return dumps({"protocol": "http", "messageType": "intent", "headers": {},
                              "body": intent_to_json(new_intent(name, payload))})

            with trio.fail_after(10):
                slow = await raw.post("/intent", content=frame({"seconds": 5}, "sleep"),
                                      headers=headers)
                assert slow.status_code == 504  # the node file's max_call_timeout
                big = await raw.post("/intent", content=frame({"x": "x" * 4096}),
                                     headers=headers)
                assert big.status_code == 413  # the node's max_frame_bytes, merged in
        nursery.cancel_scope.cancel()


async def test_an_unknown_http_limit_is_a_clear_error() -> None:
    config = parse_config({"listeners": [
        {"url": "http://127.0.0.1:0", "options": {"limits": {"max_bodybytes": 1}}}]})
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="max_bodybytes"):
            await nursery.start(serve_node, config)


async def test_a_listener_that_cannot_bind_raises_its_own_error() -> None:
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = parse_config({"listeners": [{"url": f"ws://127.0.0.1:{port}"}]})
    try:
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError):  # not an ExceptionGroup around it
                await nursery.start(serve_node, config)
    finally:
        taken.close()
