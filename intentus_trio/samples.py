"""Small agents for demos, examples and tests of your own wiring.

``register_samples(router)`` installs them all: ``echo`` (returns its payload),
``upper`` (upper-cases ``payload["text"]``), ``count`` (streams ``n`` chunks),
``sleep`` (sleeps ``payload["seconds"]``) and ``fail`` (always fails with AGENT_ERROR).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from .protocol.errors import AgentError, ValidationError
from .protocol.models import IntentEnvelope, JsonObject
from .routing.router import Router


async def echo(env: IntentEnvelope) -> JsonObject:
    """Return the payload unchanged."""
    return env.payload


async def upper(env: IntentEnvelope) -> JsonObject:
    """Upper-case payload.text."""
    text = env.payload.get("text")
    if not isinstance(text, str):
        raise ValidationError("payload.text", "expected a string")
    return {"text": text.upper()}


async def count(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    """Stream payload.n chunks {"i": 0..n-1}, payload.delay seconds apart."""
    n = env.payload.get("n", 3)
    if type(n) is not int or not 0 <= n <= 10_000:
        raise ValidationError("payload.n", "expected an integer 0..10000")
    delay = env.payload.get("delay", 0)
    for i in range(n):
        if delay:
            await trio.sleep(float(delay))
        yield {"i": i}


async def sleep(env: IntentEnvelope) -> JsonObject:
    """Sleep payload.seconds, then answer."""
    seconds = env.payload.get("seconds", 0)
    if not isinstance(seconds, int | float) or seconds < 0:
        raise ValidationError("payload.seconds", "expected a non-negative number")
    await trio.sleep(seconds)
    return {"slept": seconds}


async def fail(env: IntentEnvelope) -> JsonObject:
    """Always fail with AGENT_ERROR."""
    raise AgentError("this agent always fails", details={"intent": env.intent.name})


SAMPLES: dict[str, tuple[Any, JsonObject]] = {
    "echo": (echo, {"type": "object"}),
    "upper": (upper, {"type": "object", "properties": {"text": {"type": "string"}},
                      "required": ["text"]}),
    "count": (count, {"type": "object", "properties": {"n": {"type": "integer"}}}),
    "sleep": (sleep, {"type": "object", "properties": {"seconds": {"type": "number"}}}),
    "fail": (fail, {"type": "object"}),
}


def register_samples(router: Router) -> Router:
    """Register every sample agent under its own name as intent name."""
    for name, (handler, schema) in SAMPLES.items():
        router.register(name, name, handler, description=(handler.__doc__ or name).strip(),
                        input_schema=schema)
    return router
