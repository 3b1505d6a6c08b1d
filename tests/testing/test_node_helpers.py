"""The user-facing test helpers behave as documented."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from intentus_trio import ErrorCode, InProcessTransport, Router
from intentus_trio.testing import TestNode, open_test_node


async def test_open_test_node_has_samples() -> None:
    async with open_test_node() as node:
        assert {r.agent for r in node.router.registry.agents()} == {
            "echo", "upper", "count", "sleep", "fail"}
        assert (await node.call("echo", {"a": 1})).payload == {"a": 1}
        failed = await node.call("fail")
        assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR


async def test_open_test_node_without_samples() -> None:
    async with open_test_node(samples=False) as node:
        response = await node.call("echo")
        assert response.error is not None
        assert response.error.code is ErrorCode.CAPABILITY_NOT_FOUND


async def test_node_under_mock_clock_is_instant(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_node(timeout=10) as node:
        start = trio.current_time()
        assert (await node.call("sleep", {"seconds": 9})).ok
        timed_out = await node.call("sleep", {"seconds": 11})
        assert timed_out.error is not None
        assert trio.current_time() - start == pytest.approx(19)


async def test_fixtures(intentus_router: Router, intentus_transport: InProcessTransport,
                        intentus_node: TestNode) -> None:
    assert intentus_transport.router is intentus_router
    assert len(intentus_router.registry) == 0
    chunks, final = await intentus_node.stream("count", {"n": 2})
    assert chunks == [{"i": 0}, {"i": 1}] and final.ok
