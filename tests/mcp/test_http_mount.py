"""The HTTP transport answering MCP beside its own endpoints: ``serve(..., mcp="/mcp")``
(here through a node file's listener options), called by the official SDK's client and by
our HTTP client on the same port."""

from __future__ import annotations

import pytest

pytest.importorskip("mcp")

import trio
from mcp import Client

from intentus_trio import new_intent
from intentus_trio.config import parse_config
from intentus_trio.node import serve_node
from intentus_trio.transports.http import open_client


async def test_one_port_serves_mcp_and_the_http_transport() -> None:
    config = parse_config({"samples": True, "listeners": [
        {"url": "http://127.0.0.1:0", "options": {"mcp": "/mcp"}}]})
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(serve_node, config)
            url = node.urls[0]
            async with Client(url.rstrip("/") + "/mcp") as mcp:
                tools = {t.name for t in (await mcp.list_tools()).tools}
                assert {"echo", "upper"} <= tools
                shouted = await mcp.call_tool("upper", {"text": "one port"})
                assert shouted.structured_content == {"text": "ONE PORT"}
            async with open_client(url) as http:
                response = await http.send_intent(new_intent("upper", {"text": "rest"}))
                assert response.payload == {"text": "REST"}
                assert (await http.health())["status"] == "ok"
            nursery.cancel_scope.cancel()
