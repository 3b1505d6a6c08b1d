"""A Transport that moves real frame bytes through ClientFraming and a FrameDispatcher, with
an EMCL-style protector on both ends: the MCP bridge must work over any such transport."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing

from intentus_trio import (
    AgentResponse,
    Event,
    IntentEnvelope,
    Router,
    StreamItem,
    TransportProtocol,
)
from intentus_trio.transports.framing import ClientFraming, FrameDispatcher

from ..protectors import StandInProtector


class ProtectedLoopback:
    """Client and server halves of a network transport, joined without sockets."""

    def __init__(self, router: Router) -> None:
        self.protector = StandInProtector()
        self.client = ClientFraming(TransportProtocol.HTTP, protector=self.protector)
        self.server = FrameDispatcher(router, TransportProtocol.HTTP, protector=self.protector,
                                      require_emcl=True)
        self.router = router

    async def send_intent(self, env: IntentEnvelope, *, timeout: float | None = None
                          ) -> AgentResponse:
        reply = self.client.decode_reply(await self.server.handle_bytes(
            self.client.encode_intent(env)))
        assert isinstance(reply, AgentResponse)
        return reply

    async def send_stream(self, env: IntentEnvelope, *, timeout: float | None = None
                          ) -> AsyncGenerator[StreamItem, None]:
        data = self.client.encode_intent(env)
        frame = self.server.decode(data)
        async with aclosing(self.server.handle_stream(frame)) as frames:
            async for out in frames:
                item = self.client.decode_reply(self.server.codec.encode(out))
                yield item
                if isinstance(item, AgentResponse):
                    return

    def subscribe(self, event_type: str) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self.router.events.subscribe(event_type)

    async def publish(self, event: Event) -> None:
        self.router.events.publish(event)

    async def aclose(self) -> None:
        pass
