"""The default transport: a direct await into a Router in the same trio run.

Request/response costs one coroutine call chain: no task, no channel, no serialisation.
Streams run the agent in the caller's task, so the consumer's pace is the agent's pace.
Events go through the router's EventBus (bounded, drop-oldest per subscriber).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from types import TracebackType
from typing import Any

import trio

from .._deadline import Timeout, run_with_timeout
from ..protocol.errors import TransportTimeout
from ..protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from ..routing.events import Subscription
from ..routing.router import Router
from .base import StreamItem

_UNSET: Any = object()


class InProcessTransport:
    """Sends intents straight to ``router``; ``timeout`` bounds every call (None: no bound)."""

    protocol = "local"

    def __init__(self, router: Router, *, timeout: float | None = None) -> None:
        self.router = router
        self.timeout = timeout
        self._closed = False
        self._subscriptions: set[Subscription] = set()

    async def __aenter__(self) -> InProcessTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for sub in list(self._subscriptions):
            sub.close()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the transport is closed")

    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AgentResponse:
        self._check_open()
        limit = self.timeout if timeout is _UNSET else timeout
        if limit is None:
            return await self.router.route_intent(env)
        try:
            return await run_with_timeout(self.router.route_intent(env), limit)
        except Timeout:
            return _timed_out(env, limit)

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamItem, None]:
        self._check_open()
        limit = self.timeout if timeout is _UNSET else timeout
        deadline = None if limit is None else trio.current_time() + limit
        async with aclosing(self.router.route_stream(env)) as items:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - trio.current_time())
                try:
                    item = await run_with_timeout(items.__anext__(), remaining)
                except StopAsyncIteration:
                    return
                except Timeout:
                    yield _timed_out(env, limit)
                    return
                yield item
                if not isinstance(item, StreamChunk):
                    return

    @asynccontextmanager
    async def subscribe(self, event_type: str) -> AsyncIterator[AsyncIterator[Event]]:
        self._check_open()
        async with self.router.events.subscribe(event_type) as sub:
            self._subscriptions.add(sub)
            try:
                yield sub
            finally:
                self._subscriptions.discard(sub)

    async def publish(self, event: Event) -> None:
        self._check_open()
        self.router.events.publish(event)


def _timed_out(env: IntentEnvelope, limit: float | None) -> AgentResponse:
    return TransportTimeout(
        f"no response within {limit} s", details={"timeout": limit}
    ).to_response(trace_id=env.metadata.trace_id)
