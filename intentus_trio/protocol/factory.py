"""Builders for new envelopes: fresh ids, UTC timestamps, and the ambient trace id.

``new_intent`` called from inside an agent reuses the trace id of the intent that agent
is handling (``current_trace_id``), so a whole call tree shares one trace.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterable
from datetime import UTC, datetime

from .enums import Priority, RoutingStrategy
from .models import (
    PROTOCOL_VERSION,
    Event,
    IntentContext,
    IntentEnvelope,
    IntentMetadata,
    IntentRef,
    JsonObject,
    RoutingOptions,
)

#: The trace id of the intent being handled by the current task (set by the Router).
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "intentus_trio_trace_id", default=None
)


def current_trace_id() -> str | None:
    return trace_id_var.get()


def new_id() -> str:
    """A random (version 4) UUID string, without the cost of ``uuid.uuid4()``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utc_now() -> str:
    """The current UTC time as ISO-8601 with a ``Z`` suffix (millisecond precision)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        RoutingOptions(strategy, target_agent, tuple(fallback_agents)),
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

