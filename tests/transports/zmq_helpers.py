"""Shared pieces of the ZeroMQ transport tests: agents, a running node, a test protector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from intentus_trio.protocol.models import (
    IntentEnvelope,
    JsonObject,
)
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import ZmqServer

from ..gate import Gate

URL = "tcp://127.0.0.1:0"


def make_router(gate: Gate | None = None) -> Router:
    router = Router(name="zmq-test")

    @router.agent("echo", "echo")
    async def echo(env: IntentEnvelope) -> JsonObject:
        return env.payload

    @router.agent("sleepy", "sleep")
    async def sleepy(env: IntentEnvelope) -> JsonObject:
        await trio.sleep(float(env.payload["seconds"]))
        return env.payload

    @router.agent("counter", "count")
    async def count(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        for i in range(int(env.payload.get("n", 3))):
            yield {"i": i}
            if env.payload.get("pause"):
                await trio.sleep(float(env.payload["pause"]))

    @router.agent("big", "big")
    async def big(env: IntentEnvelope) -> JsonObject:
        return {"blob": "x" * int(env.payload["size"])}

    if gate is not None:
        router.register("gate", "gate", gate.agent)
    return router


@asynccontextmanager
async def running_node(
    router: Router, url: str = URL, **options: Any
) -> AsyncIterator[ZmqServer]:
    """A node serving ``router``; cancelled (gracefully) on exit."""
    server = ZmqServer(router, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run, url)
        yield server
        nursery.cancel_scope.cancel()


def task_count() -> int:
    """Tasks under the current test's root (to check nothing is left running)."""
    root = trio.lowlevel.current_root_task()
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
