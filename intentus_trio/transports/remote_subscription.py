"""The client side of a subscription held by a server across reconnections.

Events wait in a bounded buffer that drops its oldest when full; ``dropped`` counts those
and the drops the server reports (per connection, so the counts of earlier connections are
kept). Events published while no connection carries the subscription are not seen and not
counted. Transports that push events over a connection (WebSocket, MXP) subclass it.
"""

from __future__ import annotations

import trio

from ..protocol.models import Event
from ..routing.events import Subscription


class RemoteSubscription:
    """An async iterator of the events of one subscription."""

    def __init__(self, event_type: str, buffer: int) -> None:
        self.event_type = event_type
        self._local = Subscription(event_type, buffer)
        self._server_dropped_before = 0
        self._server_dropped = 0
        self._active = trio.Event()
        #: How many times a server acknowledged this subscription (1 + re-subscriptions).
        self.established = 0

    @property
    def dropped(self) -> int:
        return self._local.dropped + self._server_dropped_before + self._server_dropped

    @property
    def active(self) -> bool:
        """True while a connection carries the subscription."""
        return self._active.is_set()

    async def wait_active(self) -> None:
        await self._active.wait()

    def push(self, event: Event, server_dropped: int | None) -> None:
        """Queue an event the server pushed; ``server_dropped`` is its running drop count."""
        if server_dropped is not None and server_dropped > self._server_dropped:
            self._server_dropped = server_dropped
        self._local.offer(event)

    def activate(self) -> None:
        self.established += 1
        self._active.set()

    def deactivate(self) -> None:
        if self._active.is_set():
            self._active = trio.Event()
        self._server_dropped_before += self._server_dropped
        self._server_dropped = 0

    def close(self) -> None:
        self.deactivate()
        self._local.close()

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def __anext__(self) -> Event:
        return await self._local.__anext__()
