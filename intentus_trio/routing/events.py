"""In-process event fan-out with bounded, never-blocking delivery.

Publishing never waits for a subscriber: each subscription has a bounded buffer, and when
it is full the *oldest* event is dropped and counted (``Subscription.dropped``). A slow
subscriber therefore costs bounded memory and cannot stall the publisher or other
subscribers. Event types are matched exactly or by ``fnmatch`` pattern (``"agent.*"``, ``"*"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase

import trio

from ..protocol.models import Event

DEFAULT_SUBSCRIPTION_BUFFER = 256


class Subscription:
    """An async iterator of the events published to one subscription."""

    def __init__(self, event_type: str, buffer: int) -> None:
        self.event_type = event_type
        self.dropped = 0
        self.delivered = 0
        self._pattern = any(c in event_type for c in "*?[")
        self._send, self._receive = trio.open_memory_channel[Event](buffer)

    def matches(self, event_type: str) -> bool:
        if self._pattern:
            return fnmatchcase(event_type, self.event_type)
        return event_type == self.event_type

    def offer(self, event: Event) -> None:
        """Queue ``event``, dropping the oldest queued one if the buffer is full."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._receive.receive_nowait()
            self.dropped += 1
            self._send.send_nowait(event)
        except trio.ClosedResourceError:
            return
        self.delivered += 1

    async def receive(self) -> Event:
        return await self._receive.receive()

    def close(self) -> None:
        self._send.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class EventBus:
    """Delivers each published event to every matching subscription."""

    def __init__(self, *, buffer: int = DEFAULT_SUBSCRIPTION_BUFFER) -> None:
        self.buffer = buffer
        self._subscriptions: list[Subscription] = []
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, event: Event) -> int:
        """Deliver ``event`` now; returns how many subscriptions received it."""
        self.published += 1
        count = 0
        for sub in self._subscriptions:
            if sub.matches(event.event_type):
                sub.offer(event)
                count += 1
        return count

    @asynccontextmanager
    async def subscribe(
        self, event_type: str, *, buffer: int | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive events of ``event_type`` for the duration of the ``async with`` block."""
        sub = Subscription(event_type, self.buffer if buffer is None else buffer)
        self._subscriptions.append(sub)
        try:
            yield sub
        finally:
            self._subscriptions.remove(sub)
            sub.close()
