"""Agents for the MCP tests that run a node in a subprocess (named in its TOML file)."""

from __future__ import annotations

import trio

from intentus_trio.protocol.models import IntentEnvelope, JsonObject

STATS = {"started": 0, "cancelled": 0, "finished": 0}


async def slow(env: IntentEnvelope) -> JsonObject:
    """Sleep payload.seconds, counting calls that were cancelled instead."""
    STATS["started"] += 1
    try:
        await trio.sleep(float(env.payload.get("seconds", 60)))
    except trio.Cancelled:
        STATS["cancelled"] += 1
        raise
    STATS["finished"] += 1
    return {"slept": env.payload.get("seconds", 60)}


async def stats(env: IntentEnvelope) -> JsonObject:
    """What slow has seen so far."""
    return dict(STATS)


async def crash(env: IntentEnvelope) -> JsonObject:
    """Fail with an unexpected exception."""
    raise RuntimeError("boom")
