"""Shared pieces of the MCP tests."""

from __future__ import annotations

import trio

from intentus_trio import IntentEnvelope, Router
from intentus_trio.protocol.models import JsonObject
from intentus_trio.samples import register_samples


class Probe:
    """Agents that report what happened to them."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()

    async def slow(self, env: IntentEnvelope) -> JsonObject:
        self.started.set()
        try:
            await trio.sleep(float(env.payload.get("seconds", 60)))
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return {"slept": True}


async def crash(env: IntentEnvelope) -> JsonObject:
    raise RuntimeError("secret detail")


async def late(env: IntentEnvelope) -> JsonObject:
    await trio.sleep(10)
    return {}


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def math(env: IntentEnvelope) -> JsonObject:
    return {"op": env.intent.name}


def build_router(probe: Probe) -> Router:
    router = register_samples(Router(name="mcp-test"))
    router.register("slow", "slow", probe.slow, description="Sleeps.",
                    input_schema={"type": "object",
                                  "properties": {"seconds": {"type": "number", "minimum": 0}}})
    router.register("crash", "crash", crash)
    router.register("late", "late", late, timeout=0.05)
    router.register("math", "math.*", math)
    return router
