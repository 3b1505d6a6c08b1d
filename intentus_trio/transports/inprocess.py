"""The default transport: a direct await into a Router in the same trio run.

Request/response costs one coroutine call chain: no task, no channel, no serialisation.
Streams run the agent in the caller's task, so the consumer's pace is the agent's pace.
Events go through the router's EventBus (bounded, drop-oldest per subscriber).

With a ``protector`` (EMCL), every call goes the way it would over a network — seal, open,
route, seal the reply, open it — so in-process deployments get the same checks; without
one, none of that code runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine
from contextlib import aclosing, asynccontextmanager
from types import TracebackType
from typing import Any

import trio

from .._deadline import Timeout, run_with_timeout
from ..protocol.enums import TransportProtocol
from ..protocol.errors import IntentusError, TransportTimeout
from ..protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from ..routing.events import Subscription
from ..routing.router import Router
from .base import StreamItem
from .framing import FrameProtector, event_frame, reply_item, request_frame, response_frame

_UNSET: Any = object()
_LOCAL = TransportProtocol.LOCAL
log = logging.getLogger("intentus_trio.inprocess")


class InProcessTransport:
    """Sends intents straight to ``router``; ``timeout`` bounds every call (None: no bound).

    ``protector`` seals and opens on the caller's side, ``server_protector`` on the router's
    side (default: ``protector``, for one identity at both ends, which needs an EMCL protector
    of the peer role).
    """

    protocol = "local"

    def __init__(
        self,
        router: Router,
        *,
        timeout: float | None = None,
        protector: FrameProtector | None = None,
        server_protector: FrameProtector | None = None,
    ) -> None:
        self.router = router
        self.timeout = timeout
        self._closed = False
        self._subscriptions: set[Subscription] = set()
        self.protector = protector
        self.server_protector = server_protector if server_protector is not None else protector
        if self.protector is None and server_protector is not None:
            raise ValueError("a server_protector needs a protector on the calling side")
        role = getattr(protector, "role", "peer")
        if server_protector is None and protector is not None and role != "peer":
            # A client-role protector cannot open requests (nor a server-role one seal them).
            raise ValueError(f"a {role}-role protector serves one end only: give "
                             "server_protector for the router's side (or use the peer role)")

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

    def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> Coroutine[Any, Any, AgentResponse]:
        """Await it like an ``async def``. Without a deadline or protector the router's own
        coroutine is handed back, which spares a coroutine per call; a closed transport
        raises at the call."""
        self._check_open()
        limit = self.timeout if timeout is _UNSET else timeout
        if limit is None and self.protector is None:
            return self.router.route_intent(env)
        return self._send_intent(env, limit)

    async def _send_intent(self, env: IntentEnvelope, limit: float | None) -> AgentResponse:
        if self.protector is not None:
            try:
                return await run_with_timeout(self._protected_call(env), limit)
            except Timeout:
                return _timed_out(env, limit)
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
        stream = (self.router.route_stream(env) if self.protector is None
                  else self._protected_stream(env))
        async with aclosing(stream) as items:
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
        """Events of ``event_type`` (exact or pattern); with a protector each one is sealed
        by the router's side and opened by the caller's, as over a network."""
        self._check_open()
        async with self.router.events.subscribe(event_type) as sub:
            self._subscriptions.add(sub)
            try:
                if self.protector is None:
                    yield sub
                else:
                    assert self.server_protector is not None
                    yield SealedEvents(sub, self.server_protector, self.protector)
            finally:
                self._subscriptions.discard(sub)

    async def publish(self, event: Event) -> None:
        self._check_open()
        if self.protector is not None:
            assert self.server_protector is not None
            frame = self.protector.seal(event_frame(event, TransportProtocol.LOCAL))
            opened = self.server_protector.open(frame)
            if not isinstance(opened.body, Event):
                raise TypeError("an event frame did not open to an event")
            event = opened.body
        self.router.events.publish(event)

    # ------------------------------------------------------------------ EMCL path

    async def _protected_call(self, env: IntentEnvelope) -> AgentResponse:
        async with aclosing(self._protected_stream(env, stream=False)) as items:
            async for item in items:
                if isinstance(item, AgentResponse):
                    return item
        raise AssertionError("a protected call ended without a response")

    async def _protected_stream(
        self, env: IntentEnvelope, *, stream: bool = True
    ) -> AsyncGenerator[StreamItem, None]:
        """seal -> open -> route -> seal -> open, for each reply item."""
        client, server = self.protector, self.server_protector
        assert client is not None and server is not None
        trace_id = env.metadata.trace_id
        frame = client.seal(request_frame(env, TransportProtocol.LOCAL))
        try:
            opened = server.open(frame)
        except IntentusError as exc:
            # Refused before reaching the router: the answer is a plain error response.
            yield exc.to_response(trace_id=trace_id)
            return
        body = opened.body
        if not isinstance(body, IntentEnvelope):
            raise TypeError("an intent frame did not open to an intent")
        if stream:
            items: AsyncGenerator[StreamItem, None] = self.router.route_stream(body)
        else:
            items = _single(self.router.route_intent(body))
        async with aclosing(items):
            async for item in items:
                reply = server.seal(response_frame(item, TransportProtocol.LOCAL), reply_to=frame)
                try:
                    out = reply_item(client.open(reply))
                except IntentusError as exc:
                    yield exc.to_response(trace_id=trace_id)
                    return
                yield out
                if isinstance(out, AgentResponse):
                    return


async def _single(call: Awaitable[AgentResponse]) -> AsyncGenerator[StreamItem, None]:
    yield await call


def _timed_out(env: IntentEnvelope, limit: float | None) -> AgentResponse:
    return TransportTimeout(
        f"no response within {limit} s", details={"timeout": limit}
    ).to_response(trace_id=env.metadata.trace_id)


class SealedEvents:
    """A subscription whose events travel sealed: ``server`` seals, ``client`` opens.

    An event that does not open (a key retired meanwhile, say) is dropped, logged and
    counted in ``refused``; ``dropped`` adds those the subscription's buffer dropped.
    """

    def __init__(self, sub: Subscription, server: FrameProtector, client: FrameProtector) -> None:
        self.subscription = sub
        self.event_type = sub.event_type
        self._server = server
        self._client = client
        self.refused = 0

    @property
    def dropped(self) -> int:
        return self.subscription.dropped + self.refused

    def __aiter__(self) -> SealedEvents:
        return self

    async def __anext__(self) -> Event:
        sub = self.subscription
        while True:
            event = await sub.__anext__()
            try:
                opened = self._client.open(self._server.seal(event_frame(event, _LOCAL)))
            except IntentusError as exc:
                self.refused += 1
                log.warning("an event of %r did not open: %s", self.event_type, exc.message)
                continue
            except TypeError as exc:  # a payload JSON cannot hold: skipped, as on a network
                self.refused += 1
                log.warning("an event of %r was not sealed: %s", self.event_type, exc)
                continue
            if isinstance(opened.body, Event):
                return opened.body
            self.refused += 1
