"""Agents that live behind a transport (RFC-0007 §7 step 4).

A RemoteAgent is registered with a local Router like any agent; its handler forwards the
envelope unchanged through a Transport and passes the remote response back unchanged,
errors included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing

from ..protocol.models import AgentResponse, IntentEnvelope, JsonObject, StreamChunk
from ..transports.base import Transport
from .registry import Registration
from .router import Router


class RemoteAgent:
    """Forwards intents to ``transport``; ``timeout`` overrides the transport's deadline."""

    def __init__(self, transport: Transport, *, timeout: float | None = None) -> None:
        self.transport = transport
        self.timeout = timeout

    async def handle(self, env: IntentEnvelope) -> AgentResponse:
        if self.timeout is None:
            return await self.transport.send_intent(env)
        return await self.transport.send_intent(env, timeout=self.timeout)

    async def handle_stream(self, env: IntentEnvelope) -> AsyncIterator[JsonObject | AgentResponse]:
        stream = (self.transport.send_stream(env) if self.timeout is None
                  else self.transport.send_stream(env, timeout=self.timeout))
        async with aclosing(stream) as items:
            async for item in items:
                yield item.payload if isinstance(item, StreamChunk) else item


def register_remote(
    router: Router,
    agent: str,
    intents: str | Iterable[str],
    transport: Transport,
    *,
    streaming: bool = False,
    timeout: float | None = None,
    description: str = "",
) -> Registration:
    """Register the agent behind ``transport`` under ``agent`` in ``router``.

    The local deadline is left to the transport (the router does not add its own). A
    streaming remote agent's non-streamed calls go out as one call, so its chunks stay on
    the remote node.
    """
    remote = RemoteAgent(transport, timeout=timeout)
    if streaming:
        return router.register(agent, intents, remote.handle_stream, timeout=None,
                               description=description, call=remote.handle)
    return router.register(agent, intents, remote.handle, timeout=None, description=description)
