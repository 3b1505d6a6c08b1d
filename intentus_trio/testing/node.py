"""A router plus an in-process transport: the unit most agent tests need."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from attrs import define

from ..protocol.factory import new_intent
from ..protocol.models import AgentResponse, JsonObject, StreamChunk
from ..routing.router import Router
from ..samples import register_samples
from ..transports.base import Transport
from ..transports.inprocess import InProcessTransport


@define
class TestNode:
    """What ``open_test_node`` yields: the router to register agents on and a client."""

    __test__ = False  # not a pytest test class

    router: Router
    transport: InProcessTransport

    async def call(self, intent: str, payload: JsonObject | None = None,
                   **options: Any) -> AgentResponse:
        """Send ``intent`` with ``payload`` and return the response."""
        return await self.transport.send_intent(new_intent(intent, payload, **options))

    async def stream(self, intent: str, payload: JsonObject | None = None,
                     **options: Any) -> tuple[list[JsonObject], AgentResponse]:
        """Send ``intent`` as a stream; return (chunk payloads, final response)."""
        return await collect_stream(self.transport, new_intent(intent, payload, **options))


async def collect_stream(
    transport: Transport, env: Any, *, timeout: float | None = None
) -> tuple[list[JsonObject], AgentResponse]:
    """Drain ``transport.send_stream(env)`` into (chunk payloads, final response)."""
    chunks: list[JsonObject] = []
    stream = transport.send_stream(env) if timeout is None else transport.send_stream(
        env, timeout=timeout)
    async with aclosing(stream) as items:
        async for item in items:
            if isinstance(item, StreamChunk):
                chunks.append(item.payload)
            else:
                return chunks, item
    raise AssertionError("the stream ended without a final response")


@asynccontextmanager
async def open_test_node(
    *, samples: bool = True, timeout: float | None = None, router: Router | None = None
) -> AsyncIterator[TestNode]:
    """A Router (with the sample agents unless ``samples=False``) and an in-process client."""
    router = router or Router(name="test-node")
    if samples:
        register_samples(router)
    async with InProcessTransport(router, timeout=timeout) as transport:
        yield TestNode(router, transport)
