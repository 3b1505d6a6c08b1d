"""What every transport offers, whatever carries its bytes.

Client-side transports are async context managers that own their background tasks. Every
call has a deadline (the transport's ``timeout`` unless the call gives its own). Failures are
returned as AgentResponses with RFC-0007 error codes, never raised: a caller handles one
shape. Local misuse, such as calling a closed transport, raises at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ..protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk

StreamItem = StreamChunk | AgentResponse


@runtime_checkable
class Transport(Protocol):
    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = ...
    ) -> AgentResponse:
        """Deliver ``env`` and return the response (an error response on failure)."""
        ...

    def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = ...
    ) -> AsyncGenerator[StreamItem, None]:
        """Yield the reply's chunks, then exactly one final AgentResponse."""
        ...

    def subscribe(
        self, event_type: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Receive events of ``event_type`` (exact or fnmatch pattern) inside the block."""
        ...

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to the subscribers of its type; raises ``IntentusError`` (a
        subclass naming the failure) when the event was not accepted."""
        ...

    async def aclose(self) -> None:
        ...
