"""Embed intentus_trio in a trio program: agents, a client, a stream and an event.

    python examples/embed_in_trio_app.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import trio

from intentus_trio import (
    InProcessTransport,
    IntentEnvelope,
    Router,
    StreamChunk,
    new_event,
    new_intent,
)

router = Router(name="app")


@router.agent("greeter", "greet", timeout=5.0, description="Say hello")
async def greet(env: IntentEnvelope) -> dict[str, Any]:
    # Events an agent publishes carry the trace id of the intent it is handling.
    router.events.publish(new_event("greeted", {"name": env.payload["name"]}, source="greeter"))
    return {"greeting": f"hello, {env.payload['name']}"}


@router.agent("counter", "count")
async def count(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
    for i in range(env.payload["n"]):
        await trio.sleep(0.01)
        yield {"i": i}


async def main() -> None:
    async with InProcessTransport(router, timeout=10.0) as transport:
        async with transport.subscribe("greeted") as events:
            response = await transport.send_intent(new_intent("greet", {"name": "Ada"}))
            print("response:", response.payload)
            event = await events.__anext__()
            print("event:", event.event_type, event.payload, "same trace:",
                  event.trace_id == response.trace_id)

        async with aclosing(transport.send_stream(new_intent("count", {"n": 3}))) as items:
            async for item in items:
                if isinstance(item, StreamChunk):
                    print("chunk", item.seq, item.payload)
                else:
                    print("final:", item.status.value, item.payload)

        missing = await transport.send_intent(new_intent("nobody-handles-this"))
        assert missing.error is not None
        print("error:", missing.error.code.value, "-", missing.error.message)


if __name__ == "__main__":
    trio.run(main)
