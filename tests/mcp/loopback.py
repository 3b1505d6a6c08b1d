"""A Transport that moves real frame bytes through ClientFraming and a FrameDispatcher, with
an EMCL-style protector on both ends: the MCP bridge must work over any such transport."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing

import attrs
import orjson

from intentus_trio import (
    AgentResponse,
    EMCLEnvelope,
    EMCLFailure,
    Event,
    IntentEnvelope,
    Router,
    StreamItem,
    TransportEnvelope,
    TransportProtocol,
)
from intentus_trio.protocol import codec
from intentus_trio.transports.framing import ClientFraming, FrameDispatcher


class CountingProtector:
    """A stand-in protector (reversed body JSON in the ciphertext) that counts its work."""

    def __init__(self) -> None:
        self.sealed = 0
        self.opened = 0

    def seal(self, frame: TransportEnvelope) -> TransportEnvelope:
        self.sealed += 1
        text = orjson.dumps(codec.body_to_json(frame.body)).decode()[::-1]
        body = EMCLEnvelope("1.0", text, "n", "m", message_type=frame.message_type)
        return attrs.evolve(frame, body=body, headers={**frame.headers, "emcl": "1.0"})

    def open(self, frame: TransportEnvelope) -> TransportEnvelope:
        self.opened += 1
        if not isinstance(frame.body, EMCLEnvelope) or frame.body.hmac != "m":
            raise EMCLFailure("tampered", details={"reason": "tampered"})
        obj = orjson.loads(frame.body.ciphertext[::-1])
        headers = {k: v for k, v in frame.headers.items() if k != "emcl"}
        return attrs.evolve(frame, headers=headers,
                            body=codec.body_from_json(frame.message_type, obj))


class ProtectedLoopback:
    """Client and server halves of a network transport, joined without sockets."""

    def __init__(self, router: Router) -> None:
        self.protector = CountingProtector()
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
