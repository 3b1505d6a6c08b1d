"""An agent that holds calls until the test opens it (no sleeps standing in for sync)."""

from __future__ import annotations

import trio

from intentus_trio import IntentEnvelope
from intentus_trio.protocol.models import JsonObject


class Gate:
    """Holds agents until the test opens it; counts entries and cancellations."""

    def __init__(self) -> None:
        self.entered = 0
        self.cancelled = 0
        self.open = trio.Event()
        self._changed = trio.Event()

    async def wait_entered(self, n: int) -> None:
        while self.entered < n:
            await self._changed.wait()

    async def agent(self, env: IntentEnvelope) -> JsonObject:
        self.entered += 1
        self._changed.set()
        self._changed = trio.Event()
        try:
            await self.open.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return env.payload
