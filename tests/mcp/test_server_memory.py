"""Our MCP server, called by the official SDK's client over its in-memory transport
(handshake era and 2026-07-28 era), and over a protected IntentusNet transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

pytest.importorskip("mcp")

import mcp_types as types
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from intentus_trio import IntentEnvelope
from intentus_trio.mcp.server import McpServer

from .conftest import Probe, build_router, echo
from .loopback import ProtectedLoopback

MODES = ["auto", "legacy"]


def meta(values: dict[str, str]) -> types.RequestParamsMeta:
    return cast(types.RequestParamsMeta, values)


def error_of(result: types.CallToolResult) -> dict[str, object]:
    assert result.is_error is True
    assert result.structured_content is not None
    error: dict[str, object] = result.structured_content["error"]
    return error


@pytest.mark.parametrize("mode", MODES)
async def test_list_call_and_errors(mode: str) -> None:
    router = build_router(Probe())
    async with McpServer(router) as bridge, Client(bridge.server, mode=mode) as client:
        assert client.server_capabilities.tools is not None
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"echo", "upper", "count", "sleep", "fail", "slow", "crash", "late"}
        assert tools["upper"].description == "Upper-case payload.text."
        assert tools["upper"].input_schema["required"] == ["text"]
        assert tools["crash"].input_schema == {"type": "object"}

        ok = await client.call_tool("upper", {"text": "hi"})
        assert ok.is_error is not True and ok.structured_content == {"text": "HI"}
        assert isinstance(ok.content[0], types.TextContent)
        assert ok.content[0].text == '{"text":"HI"}'
        assert ok.meta is not None and ok.meta["intentus/agent"] == "upper"

        # Arguments that fail the input schema: a tool execution error, the agent never runs.
        bad = error_of(await client.call_tool("upper", {"text": 3}))
        assert bad["code"] == "VALIDATION_ERROR" and bad["details"] == {
            "field": "arguments.text", "reason": "3 is not of type 'string'"}
        assert error_of(await client.call_tool("slow", {"seconds": -1}))["code"] == \
            "VALIDATION_ERROR"
        failed = await client.call_tool("fail", {})
        assert error_of(failed)["code"] == "AGENT_ERROR"
        assert isinstance(failed.content[0], types.TextContent)
        assert failed.content[0].text == "AGENT_ERROR: this agent always fails"
        crashed = error_of(await client.call_tool("crash", {}))
        assert crashed["code"] == "INTERNAL_AGENT_ERROR" and "secret" not in str(crashed)
        timed_out = error_of(await client.call_tool("late", {}))
        assert timed_out["code"] == "AGENT_TIMEOUT" and timed_out["retryable"] is True

        with pytest.raises(MCPError) as info:
            await client.call_tool("no-such-tool", {})
        assert info.value.code == types.INVALID_PARAMS
        assert info.value.message == "Unknown tool: no-such-tool"
        with pytest.raises(MCPError) as info:
            await client.call_tool("echo", {}, meta=meta({"intentus/targetAgent": "nobody"}))
        assert info.value.code == types.INVALID_PARAMS
        with pytest.raises(MCPError) as info:
            await client.call_tool("echo", {}, meta=meta({"intentus/priority": "urgent"}))
        assert info.value.code == types.INVALID_PARAMS

        # Names only a wildcard registration matches are not listed but still routed.
        routed = await client.call_tool("math.add", {})
        assert routed.structured_content == {"op": "math.add"}
        # ...and the server kept serving through all of that.
        again = await client.call_tool("echo", {"n": 1})
        assert again.structured_content == {"n": 1}


async def test_trace_context_reaches_the_agent() -> None:
    router = build_router(Probe())
    seen: list[IntentEnvelope] = []

    async def record(env: IntentEnvelope) -> dict[str, object]:
        seen.append(env)
        return {}

    router.register("record", "record", record)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with McpServer(router) as bridge, Client(bridge.server, mode="legacy") as client:
        result = await client.call_tool("record", {}, meta=meta({"traceparent": traceparent}))
    env = seen[0]
    assert env.metadata.trace_id == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert env.context.source_agent == "mcp:mcp"  # the SDK client's default name
    assert result.meta is not None and result.meta["intentus/traceId"] == env.metadata.trace_id


async def test_listed_only_refuses_unlisted_names() -> None:
    router = build_router(Probe())
    async with McpServer(router, route_unlisted=False) as bridge, \
            Client(bridge.server) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("math.add", {})
        assert info.value.code == types.INVALID_PARAMS
        assert (await client.call_tool("echo", {})).is_error is not True


@pytest.mark.parametrize("mode", MODES)
async def test_streaming_agents_report_progress(mode: str) -> None:
    router = build_router(Probe())
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with McpServer(router) as bridge, Client(bridge.server, mode=mode) as client:
        result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
        assert result.structured_content == {"chunks": [{"i": 0}, {"i": 1}, {"i": 2}]}
        assert seen == [(1.0, None, '{"i":0}'), (2.0, None, '{"i":1}'),
                            (3.0, None, '{"i":2}')]
        # Without a progress callback: the same result.
        again = await client.call_tool("count", {"n": 2})
        assert again.structured_content == {"chunks": [{"i": 0}, {"i": 1}]}
        bad = error_of(await client.call_tool("count", {"n": -1}))
        assert bad["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("mode", MODES)
async def test_cancellation_cancels_the_agent(mode: str) -> None:
    probe = Probe()
    router = build_router(probe)
    async with McpServer(router) as bridge, Client(bridge.server, mode=mode) as client:
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                await client.call_tool("slow", {"seconds": 30})

            nursery.start_soon(call)
            with trio.fail_after(5):
                await probe.started.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await probe.cancelled.wait()
        assert (await client.call_tool("echo", {"x": 1})).structured_content == {"x": 1}


async def test_tool_list_changes_reach_handshake_clients() -> None:
    router = build_router(Probe())
    changed = trio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with McpServer(router) as bridge, \
            Client(bridge.server, mode="legacy", message_handler=on_message) as client:
        caps = client.server_capabilities.tools
        assert caps is not None and caps.list_changed is True
        assert "added" not in {t.name for t in (await client.list_tools()).tools}
        router.register("added", "added", echo)
        with trio.fail_after(5):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "added" in names
        router.unregister("added")
        assert "added" not in {t.name for t in (await client.list_tools()).tools}


async def test_tool_list_changes_reach_listening_clients() -> None:
    router = build_router(Probe())
    async with McpServer(router) as bridge, Client(bridge.server) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            router.register("added", "added", echo)
            with trio.fail_after(5):
                async for event in subscription:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        assert "added" in {t.name for t in (await client.list_tools()).tools}


async def test_calls_through_a_protected_transport() -> None:
    router = build_router(Probe())
    transport = ProtectedLoopback(router)
    async with McpServer(router, transport=transport) as bridge, \
            Client(bridge.server) as client:
        ok = await client.call_tool("upper", {"text": "sealed"})
        assert ok.structured_content == {"text": "SEALED"}
        streamed = await client.call_tool("count", {"n": 2})
        assert streamed.structured_content == {"chunks": [{"i": 0}, {"i": 1}]}
        assert error_of(await client.call_tool("fail", {}))["code"] == "AGENT_ERROR"
    # Each request sealed by the client and opened by the server, each reply back again.
    assert transport.protector.sealed >= 8 and transport.protector.opened >= 8


async def test_a_streamed_chunk_json_cannot_hold_is_a_tool_error() -> None:
    router = build_router(Probe())
    produced: list[int] = []

    async def odd(env: IntentEnvelope) -> AsyncIterator[dict[str, object]]:
        for item in ({"i": 0}, {"i": object()}, {"i": 2}):
            produced.append(0)
            yield item

    router.register("odd", "odd", odd)
    async with McpServer(router) as bridge, Client(bridge.server) as client:
        error = error_of(await client.call_tool("odd", {}))
        assert error["code"] == "INTERNAL_AGENT_ERROR"
        assert len(produced) == 2
        assert (await client.call_tool("echo", {})).is_error is not True
