"""MCP tool progress as stream chunks: `open_mcp_agents` with streaming agents, against a
server built with the official SDK (in process, both protocol eras) and against our own MCP
server in front of streaming agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

pytest.importorskip("mcp")

import trio
import trio.testing
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from msgspec.structs import replace

from intentus_trio import (
    AgentResponse,
    ErrorCode,
    InProcessTransport,
    IntentEnvelope,
    Router,
    StreamChunk,
    new_intent,
)
from intentus_trio.mcp.client import _ProgressChunks, open_mcp_agents
from intentus_trio.mcp.server import McpServer, serve_http
from intentus_trio.protocol.models import JsonObject
from intentus_trio.samples import register_samples

# "auto": the SDK's in-process path, which awaits progress callbacks inline; "legacy":
# JSON-RPC over in-memory streams, which starts a task per progress notification.
MODES = ["auto", "legacy"]


class ProgressTools:
    """An SDK server whose tools report progress, and what happened to them."""

    def __init__(self) -> None:
        self.held = trio.Event()
        self.cancelled = trio.Event()
        self.go = trio.Event()
        self.server = server = MCPServer("progress-server")

        @server.tool(description="Report progress n times, then answer.")
        async def steps(n: int, ctx: Context) -> str:
            for i in range(n):
                await ctx.report_progress(i + 1, n, f"step {i + 1}")
            return f"{n} steps"

        @server.tool(description="Report progress once, then fail.")
        async def fails(ctx: Context) -> str:
            await ctx.report_progress(1)
            raise ToolError("broke after one step")

        @server.tool(description="Report progress once, then wait until cancelled.")
        async def hold(ctx: Context) -> str:
            await ctx.report_progress(1, None, "holding")
            self.held.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.set()

        @server.tool(description="Report progress once, wait for go, report n-1 more.")
        async def burst(n: int, ctx: Context) -> str:
            await ctx.report_progress(1)
            await self.go.wait()
            for i in range(2, n + 1):
                await ctx.report_progress(i)
            return "burst"

        @server.tool(description="Whether this request carries a progress token.")
        async def token(ctx: Context) -> bool:
            meta = ctx.request_context.meta or {}
            return "progressToken" in meta or "progress_token" in meta


def chunks_of(items: list[StreamChunk | AgentResponse], start: int = 0) -> list[JsonObject]:
    """The payloads of the chunks before the final item, checking they are numbered on."""
    assert all(isinstance(i, StreamChunk) for i in items[:-1])
    seqs = [i.seq for i in items[:-1] if isinstance(i, StreamChunk)]
    assert seqs == list(range(start, start + len(items) - 1))
    return [i.payload for i in items[:-1] if isinstance(i, StreamChunk)]


def final_of(items: list[StreamChunk | AgentResponse]) -> AgentResponse:
    final = items[-1]
    assert isinstance(final, AgentResponse)
    return final


def sans_trace(response: AgentResponse) -> AgentResponse:
    """``response`` without its per-call trace id, to compare two calls' responses."""
    return replace(response, metadata={k: v for k, v in response.metadata.items()
                                            if k != "traceId"})


async def streamed(transport: InProcessTransport, intent: str,
                   payload: JsonObject | None = None) -> list[StreamChunk | AgentResponse]:
    async with aclosing(transport.send_stream(new_intent(intent, payload or {}))) as items:
        return [item async for item in items]


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_tool_progress_becomes_chunks(mode: str) -> None:
    tools = ProgressTools()
    router = Router(name="host")
    with trio.fail_after(30):
        async with open_mcp_agents(router, tools.server, mode=mode, name="p",
                                   streaming={"steps", "fails"}) as agents, \
                InProcessTransport(router) as transport:
            assert agents.tools["steps"].streaming and agents.tools["fails"].streaming
            assert not agents.tools["token"].streaming

            items = await streamed(transport, "steps", {"n": 5})
            assert chunks_of(items) == [
                {"progress": float(i), "total": 5.0, "message": f"step {i}"} for i in range(1, 6)]
            final = final_of(items)
            assert final.ok and final.payload == {"result": "5 steps"}
            assert final.metadata["agent"] == "p/steps"
            # The final response is the one a non-streamed call gets.
            plain = await transport.send_intent(new_intent("steps", {"n": 5}))
            assert sans_trace(final) == sans_trace(plain)

            failed = await streamed(transport, "fails")
            assert chunks_of(failed) == [{"progress": 1.0}]
            error = final_of(failed).error
            assert error is not None and error.code is ErrorCode.AGENT_ERROR
            assert "broke after one step" in error.message
            assert sans_trace(final_of(failed)) == sans_trace(
                await transport.send_intent(new_intent("fails")))


@pytest.mark.parametrize("mode", MODES)
async def test_only_streamed_calls_of_streaming_agents_ask_for_progress(mode: str) -> None:
    tools = ProgressTools()
    router = Router(name="host")
    with trio.fail_after(30):
        # By default only tools the server marks as streaming stream: none of the SDK's.
        async with open_mcp_agents(router, tools.server, mode=mode) as agents, \
                InProcessTransport(router) as transport:
            assert not any(reg.streaming for reg in agents.tools.values())
            assert (await transport.send_intent(new_intent("token"))).payload == \
                {"result": False}
            items = await streamed(transport, "steps", {"n": 3})
            assert len(items) == 1 and final_of(items).payload == {"result": "3 steps"}
        if mode == "legacy":  # only the JSON-RPC path puts the token in the request
            async with open_mcp_agents(router, tools.server, mode=mode, streaming=True), \
                    InProcessTransport(router) as transport:
                items = await streamed(transport, "token")
                assert chunks_of(items) == [] and final_of(items).payload == {"result": True}
                # a non-streamed call of a streaming tool is one plain call: no token
                assert (await transport.send_intent(new_intent("token"))).payload == \
                    {"result": False}


@pytest.mark.parametrize("mode", MODES)
async def test_chunks_round_trip_through_our_server(mode: str) -> None:
    far = register_samples(Router(name="far"))
    odd: JsonObject = {"text": "h\u00e9llo \u2713", "nested": {"a": [1, 2.5, None, True]}}

    async def story(env: IntentEnvelope) -> AsyncIterator[JsonObject | AgentResponse]:
        yield odd
        yield {"progress": 7, "message": "looks like progress, is a chunk"}
        yield AgentResponse.success({"done": True})

    far.register("story", "story", story)
    near = Router(name="near")
    with trio.fail_after(30):
        async with McpServer(far) as bridge, \
                open_mcp_agents(near, bridge.server, prefix="far.", name="far",
                                mode=mode) as agents, \
                InProcessTransport(near) as transport:
            # The server marks its streaming agents' tools: those stream here too.
            assert agents.tools["count"].streaming and agents.tools["story"].streaming
            assert not agents.tools["upper"].streaming

            items = await streamed(transport, "far.count", {"n": 4})
            assert chunks_of(items) == [{"i": i} for i in range(4)]
            assert final_of(items).payload == {"chunks": [{"i": i} for i in range(4)]}
            assert final_of(items).metadata["agent"] == "far/count"

            items = await streamed(transport, "far.story")
            assert chunks_of(items) == [odd, {"progress": 7, "message":
                                              "looks like progress, is a chunk"}]
            assert final_of(items).payload == {"done": True}

            bad = await streamed(transport, "far.count", {"n": -1})
            error = final_of(bad).error
            assert len(bad) == 1 and error is not None
            assert error.code is ErrorCode.VALIDATION_ERROR  # restored from the far side

            # Non-streamed calls: the same responses as before.
            assert (await transport.send_intent(new_intent("far.count", {"n": 2}))).payload \
                == {"chunks": [{"i": 0}, {"i": 1}]}
            assert (await transport.send_intent(new_intent("far.upper", {"text": "a"}))) \
                .payload == {"text": "A"}


@pytest.mark.parametrize("mode", MODES)
async def test_chunks_round_trip_over_streamable_http(mode: str) -> None:
    far = register_samples(Router(name="far"))
    near = Router(name="near")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_http, far, "http://127.0.0.1:0/mcp")
            async with open_mcp_agents(near, url, mode=mode, name="far"), \
                    InProcessTransport(near) as transport:
                items = await streamed(transport, "count", {"n": 20})
                assert chunks_of(items) == [{"i": i} for i in range(20)]
                assert final_of(items).payload == {"chunks": [{"i": i} for i in range(20)]}
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode", MODES)
async def test_leaving_a_stream_cancels_the_tool_and_keeps_the_session(mode: str) -> None:
    tools = ProgressTools()
    router = Router(name="host")
    with trio.fail_after(30):
        async with open_mcp_agents(router, tools.server, mode=mode, streaming=True) as agents, \
                InProcessTransport(router) as transport:
            # The consumer stops after the first chunk.
            async with aclosing(transport.send_stream(new_intent("hold"))) as items:
                first = await items.__anext__()
            assert isinstance(first, StreamChunk)
            assert first.payload == {"progress": 1.0, "message": "holding"}
            await tools.cancelled.wait()

            # The consumer is cancelled while it waits for the next item.
            tools.held, tools.cancelled = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                async def consume() -> None:
                    async with aclosing(transport.send_stream(new_intent("hold"))) as items:
                        async for item in items:
                            assert isinstance(item, StreamChunk)  # never a final response

                nursery.start_soon(consume)
                await tools.held.wait()
                nursery.cancel_scope.cancel()
            await tools.cancelled.wait()

            assert agents.unavailable is None
            items2 = await streamed(transport, "steps", {"n": 2})
            assert len(chunks_of(items2)) == 2 and final_of(items2).payload == \
                {"result": "2 steps"}
            assert (await transport.send_intent(new_intent("steps", {"n": 1}))).payload == \
                {"result": "1 steps"}


@pytest.mark.parametrize("mode", MODES)
async def test_a_slow_consumer_gets_bounded_chunks_then_the_result(mode: str) -> None:
    tools = ProgressTools()
    router = Router(name="host")
    with trio.fail_after(30):
        async with open_mcp_agents(router, tools.server, mode=mode, streaming=True,
                                   progress_buffer=2):
            async with aclosing(router.route_stream(new_intent("burst", {"n": 6}))) as items:
                first = await items.__anext__()
                assert isinstance(first, StreamChunk) and first.payload == {"progress": 1.0}
                # The tool reports 2..6 and answers while nobody reads.
                tools.go.set()
                await trio.testing.wait_all_tasks_blocked()
                rest = [item async for item in items]
            assert chunks_of(rest, start=1) == [{"progress": 2.0}, {"progress": 3.0}]
            final = final_of(rest)
            assert final.payload == {"result": "burst"}
            assert final.metadata["droppedProgress"] == 3


async def test_progress_is_put_in_order_and_stale_or_repeated_values_dropped() -> None:
    # The SDK may run progress callbacks in any order: feed them shuffled.
    chunks = _ProgressChunks(10, restore=False)
    for progress in (3, 1, 2, 2, float("nan"), 1):
        await chunks.on_progress(progress, None, None)
    assert [await chunks.next() for _ in range(3)] == [
        {"progress": 1.0}, {"progress": 2.0}, {"progress": 3.0}]
    await chunks.on_progress(2.5, None, "late")  # below what was handed out: stale
    await chunks.on_progress(4, 8, "four")
    done = AgentResponse.success({"ok": True})
    chunks.finish(done)
    await chunks.on_progress(5, None, None)  # after the result: ignored
    assert await chunks.next() == {"progress": 4.0, "total": 8.0, "message": "four"}
    assert await chunks.next() is None
    assert chunks.outcome is done and chunks.dropped == 0


async def test_restoring_chunks_of_an_intentus_trio_server() -> None:
    chunks = _ProgressChunks(10, restore=True)
    messages = ['{"a":[1,{"b":null}]}', "[1,2]", "not json", '{"x":1}']
    for i, message in enumerate(messages, 1):
        await chunks.on_progress(i, 9 if i == 4 else None, message)
    chunks.finish(AgentResponse.success({}))
    assert [await chunks.next() for _ in range(4)] == [
        {"a": [1, {"b": None}]},
        {"progress": 2.0, "message": "[1,2]"},
        {"progress": 3.0, "message": "not json"},
        {"progress": 4.0, "total": 9.0, "message": '{"x":1}'},
    ]
