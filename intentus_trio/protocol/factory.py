"""Builders for new envelopes: fresh ids, UTC timestamps, and the ambient trace id.

``new_intent`` called from inside an agent reuses the trace id of the intent that agent
is handling (``current_trace_id``), so a whole call tree shares one trace.
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from ._fastnew import routing_options
from .enums import Priority, RoutingStrategy
from .models import (
    PROTOCOL_VERSION,
    Event,
    IntentContext,
    IntentEnvelope,
    IntentMetadata,
    IntentRef,
    JsonObject,
)

#: The trace id of the intent being handled by the current task (set by the Router).
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "intentus_trio_trace_id", default=None
)


def current_trace_id() -> str | None:
    return trace_id_var.get()


class _Ids:
    """Random UUIDv4 strings from a generator seeded by the OS (reseeded after fork).

    Ids only need to be unique, not secret, and ``uuid.uuid4()`` costs a system call each.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.bits = random.Random(os.urandom(32)).getrandbits

    def new(self) -> str:
        n = (self.bits(128) & _UUID_CLEAR) | _UUID_V4
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)
_ids = _Ids()


def new_id() -> str:
    """A random version-4 UUID string."""
    return _ids.new()


class _Clock:
    """ISO-8601 UTC timestamps; the formatted second is reused within that second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        ns = time.time_ns()
        second, rest = divmod(ns, 1_000_000_000)
        if second != self.second:
            self.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self.second = second
        return f"{self.prefix}{rest // 1_000_000:03d}Z"


_clock = _Clock()


def utc_now() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a ``Z`` suffix."""
    return _clock.now()


def new_intent(
    name: str,
    payload: JsonObject | None = None,
    *,
    version: str = "1.0",
    source: str = "client",
    priority: Priority = Priority.NORMAL,
    tags: Iterable[str] = (),
    target_agent: str | None = None,
    fallback_agents: Iterable[str] = (),
    strategy: RoutingStrategy = RoutingStrategy.DIRECT,
    trace_id: str | None = None,
) -> IntentEnvelope:
    """Build an IntentEnvelope with a new request id and the current time."""
    now = utc_now()
    return IntentEnvelope(
        PROTOCOL_VERSION,
        IntentRef(name, version),
        {} if payload is None else payload,
        IntentContext(source, now, priority, tuple(tags)),
        IntentMetadata(new_id(), source, now, trace_id or trace_id_var.get() or new_id()),
        routing_options(strategy, target_agent, tuple(fallback_agents)),
    )


def new_event(
    event_type: str,
    payload: JsonObject | None = None,
    *,
    source: str = "client",
    trace_id: str | None = None,
) -> Event:
    return Event(event_type, {} if payload is None else payload, new_id(), source, utc_now(),
                 trace_id or trace_id_var.get())

