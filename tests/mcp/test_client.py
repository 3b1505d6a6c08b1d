"""MCP servers as agents: `open_mcp_agents` against a server built with the official SDK
(MCPServer, run as a stdio subprocess), and against our own MCP server in process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import trio
from mcp import StdioServerParameters

from intentus_trio import (
    ConnectionFailure,
    ErrorCode,
    InProcessTransport,
    Router,
    StreamChunk,
    new_intent,
)
from intentus_trio.mcp.client import open_mcp_agents
from intentus_trio.mcp.server import McpServer
from intentus_trio.samples import register_samples

from .conftest import Probe, build_router, echo
from .loopback import ProtectedLoopback

ROOT = Path(__file__).resolve().parents[2]


def sdk_server() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable,
                                 args=[str(ROOT / "tests" / "mcp" / "sdk_server.py")],
                                 cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_sdk_server_tools_as_agents() -> None:
    router = register_samples(Router(name="host"))
    with trio.fail_after(60):
        async with open_mcp_agents(router, sdk_server(), prefix="sdk.", timeout=1.0) as tools:
            assert tools.name == "sdk-test-server"
            assert {"add", "shout", "oops", "slow", "die", "grow"} <= set(tools.tools)
            reg = router.registry.get("sdk-test-server/add")
            assert reg is not None and reg.description == "Add two integers."
            assert reg.input_schema is not None and set(reg.input_schema["required"]) == {"a", "b"}

            # Reached through a transport, EMCL-style protector on both ends.
            transport = ProtectedLoopback(router)
            added = await transport.send_intent(new_intent("sdk.add", {"a": 2, "b": 3}))
            assert added.ok and added.payload == {"result": 5}
            assert added.metadata["agent"] == "sdk-test-server/add"
            assert transport.protector.sealed == 2 and transport.protector.opened == 2

            shout = await router.route_intent(new_intent("sdk.shout", {"text": "hey"}))
            assert shout.payload == {"result": "HEY"}
            oops = await router.route_intent(new_intent("sdk.oops"))
            assert oops.error is not None and oops.error.code is ErrorCode.AGENT_ERROR
            assert "oops" in oops.error.message
            bad = await router.route_intent(new_intent("sdk.add", {"a": "x"}))
            assert bad.error is not None and bad.error.code is ErrorCode.AGENT_ERROR
            slow = await router.route_intent(new_intent("sdk.slow", {"seconds": 10}))
            assert slow.error is not None and slow.error.code is ErrorCode.AGENT_TIMEOUT
            assert slow.error.retryable

            # The server adds a tool and announces it: the registrations follow.
            grown = await router.route_intent(new_intent("sdk.grow"))
            assert grown.payload == {"result": "grown"}
            with trio.fail_after(10):
                while "extra" not in tools.tools:
                    await tools.wait_for_change()
            extra = await router.route_intent(new_intent("sdk.extra", {"text": "x"}))
            assert extra.payload == {"result": "extra: x"}
        assert not [r for r in router.registry if r.agent.startswith("sdk-test-server/")]
        assert (await router.route_intent(new_intent("echo", {"k": 1}))).payload == {"k": 1}


async def test_crashing_subprocess_gives_agent_unavailable() -> None:
    router = register_samples(Router(name="host"))
    with trio.fail_after(60):
        async with open_mcp_agents(router, sdk_server(), include={"die", "add"}) as tools:
            assert set(tools.tools) == {"die", "add"}
            died = await router.route_intent(new_intent("die"))
            assert died.error is not None and died.error.code is ErrorCode.AGENT_UNAVAILABLE
            assert died.error.retryable
            after = await router.route_intent(new_intent("add", {"a": 1, "b": 1}))
            assert after.error is not None and after.error.code is ErrorCode.AGENT_UNAVAILABLE
            # The router and its other agents are unaffected.
            assert (await router.route_intent(new_intent("upper", {"text": "a"}))).ok


async def test_unstartable_server_fails_to_open() -> None:
    params = StdioServerParameters(command=str(ROOT / "no-such-program"))
    with trio.fail_after(30), pytest.raises(ConnectionFailure):
        async with open_mcp_agents(Router(), params):
            pass  # pragma: no cover


async def test_round_trip_through_our_own_server() -> None:
    """intentus_trio -> MCP -> intentus_trio: errors come back exactly as the agents made them."""
    probe = Probe()
    far = build_router(probe)
    near = Router(name="near")
    async with McpServer(far) as bridge, \
            open_mcp_agents(near, bridge.server, prefix="far.", name="far") as tools:
        assert "math.add" not in tools.tools  # wildcard intents are not tools
        async with InProcessTransport(near) as transport:
            ok = await transport.send_intent(new_intent("far.upper", {"text": "x"}))
            assert ok.payload == {"text": "X"} and ok.metadata["agent"] == "far/upper"
            failed = await transport.send_intent(new_intent("far.fail"))
            assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR
            assert failed.error.details == {"intent": "fail"}
            late = await transport.send_intent(new_intent("far.late"))
            assert late.error is not None and late.error.code is ErrorCode.AGENT_TIMEOUT
            invalid = await transport.send_intent(new_intent("far.upper", {"text": 1}))
            assert invalid.error is not None and invalid.error.code is ErrorCode.VALIDATION_ERROR
            items = [item async for item in transport.send_stream(
                new_intent("far.count", {"n": 2}))]
            assert [i.payload for i in items if isinstance(i, StreamChunk)] == \
                [{"i": 0}, {"i": 1}]  # carried as MCP progress
            assert items[-1].payload == {"chunks": [{"i": 0}, {"i": 1}]}
            # Cancelling the caller cancels the far agent.
            with trio.move_on_after(0.3):
                await transport.send_intent(new_intent("far.slow", {"seconds": 30}))
            with trio.fail_after(5):
                await probe.cancelled.wait()
            # Registrations added on the far side appear here.
            far.register("added", "added", echo)
            with trio.fail_after(5):
                while "added" not in tools.tools:
                    await tools.wait_for_change()
            assert (await transport.send_intent(new_intent("far.added", {"z": 1}))).payload == \
                {"z": 1}
