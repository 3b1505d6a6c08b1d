"""Our MCP server over Streamable HTTP (hypercorn, trio worker, a real socket on 127.0.0.1),
called by the official SDK's client."""

from __future__ import annotations

import pytest

pytest.importorskip("mcp")

import httpx
import mcp_types as types
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from intentus_trio.mcp.server import serve_http

from .conftest import Probe, build_router, echo


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_list_call_errors_progress_cancel(mode: str) -> None:
    probe = Probe()
    router = build_router(probe)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_http, router, "http://127.0.0.1:0/mcp")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        assert not url.endswith(":0/mcp")
        async with Client(url, mode=mode) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "upper", "count", "slow"} <= tools
            ok = await client.call_tool("upper", {"text": "web"})
            assert ok.structured_content == {"text": "WEB"}
            bad = await client.call_tool("upper", {})
            assert bad.is_error is True and bad.structured_content is not None
            assert bad.structured_content["error"]["code"] == "VALIDATION_ERROR"
            with pytest.raises(MCPError) as info:
                await client.call_tool("nothing-here", {})
            assert info.value.code == types.INVALID_PARAMS

            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None
                                  ) -> None:
                seen.append(progress)

            streamed = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
            assert streamed.structured_content == {"chunks": [{"i": 0}, {"i": 1}, {"i": 2}]}
            assert seen == [1.0, 2.0, 3.0]

            async with trio.open_nursery() as calls:
                async def call() -> None:
                    await client.call_tool("slow", {"seconds": 30})

                calls.start_soon(call)
                with trio.fail_after(5):
                    await probe.started.wait()
                calls.cancel_scope.cancel()
            with trio.fail_after(5):
                await probe.cancelled.wait()
            assert (await client.call_tool("echo", {"a": 1})).structured_content == {"a": 1}
        nursery.cancel_scope.cancel()


async def test_http_tool_list_changes() -> None:
    router = build_router(Probe())
    changed = trio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_http, router, "http://127.0.0.1:0/mcp")
        async with Client(url, mode="legacy", message_handler=on_message) as legacy, \
                Client(url) as modern:
            assert modern.protocol_version == "2026-07-28"
            await legacy.list_tools()
            async with modern.listen(tools_list_changed=True) as subscription:
                router.register("added", "added", echo)
                with trio.fail_after(5):
                    async for _event in subscription:
                        break
                    await changed.wait()
            assert "added" in {t.name for t in (await legacy.list_tools()).tools}
            assert "added" in {t.name for t in (await modern.list_tools()).tools}
        nursery.cancel_scope.cancel()


async def test_http_refuses_garbage_and_keeps_serving() -> None:
    router = build_router(Probe())
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_http, router, "http://127.0.0.1:0/mcp")
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as http:
            for body in (b"not json", b"[]", b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}'):
                reply = await http.post(url, content=body, headers=headers)
                assert reply.status_code in (400, 404, 406, 415, 422), reply.status_code
            reply = await http.post(url, content=b"{}", headers={**headers, "host": "evil.example"})
            assert reply.status_code in (400, 421)
        async with Client(url) as client:
            assert (await client.call_tool("echo", {"ok": 1})).structured_content == {"ok": 1}
        nursery.cancel_scope.cancel()


async def test_mounted_beside_the_http_transport() -> None:
    """One hypercorn server: MCP at /mcp, the IntentusNet HTTP transport everywhere else."""
    http_transport = pytest.importorskip("intentus_trio.transports.http")
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from intentus_trio import new_intent
    from intentus_trio.mcp.server import McpMount, McpServer
    from intentus_trio.transports.http.app import HttpApp

    router = build_router(Probe())
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with McpServer(router) as bridge, trio.open_nursery() as nursery:
        app = McpMount(bridge, HttpApp(router), path="/mcp")
        binds = await nursery.start(serve, app, config)
        async with Client(binds[0] + "/mcp") as client:
            assert (await client.call_tool("upper", {"text": "m"})).structured_content == \
                {"text": "M"}
        async with http_transport.open_client(binds[0]) as transport:
            response = await transport.send_intent(new_intent("upper", {"text": "h"}))
            assert response.payload == {"text": "H"}
        nursery.cancel_scope.cancel()
