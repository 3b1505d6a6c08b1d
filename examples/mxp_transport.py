"""Intents, a streamed reply and events over MXP: encrypted, authenticated UDP with one
reliable stream per call, all on one connection.

The server gets a static key generated for the run (pass ``static_key="server.key"`` to use
one from ``intentus-trio keygen x25519``); the URL it reports carries the public half, which
is all a client needs to reach it and authenticate it.

Run: ``python examples/mxp_transport.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import trio

from intentus_trio.protocol.enums import Priority
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject, StreamChunk
from intentus_trio.routing.router import Router
from intentus_trio.transports.mxp import MxpServer, open_client


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def countdown(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    for n in range(int(env.payload.get("from", 3)), 0, -1):
        yield {"n": n}


async def main() -> None:
    router = Router(name="example")
    router.register("echo", "echo", echo)
    router.register("countdown", "countdown", countdown)
    server = MxpServer(router, "mxp://127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        print("serving on", url)
        async with open_client(url, timeout=10) as client:
            replies: list[JsonObject | None] = [None] * 5

            async def call(i: int) -> None:
                priority = Priority.HIGH if i == 0 else Priority.NORMAL  # urgency 0 vs 3
                env = new_intent("echo", {"i": i}, priority=priority)
                replies[i] = (await client.send_intent(env)).payload

            async with trio.open_nursery() as calls:  # five calls, five streams, one connection
                for i in range(5):
                    calls.start_soon(call, i)
            print("concurrent replies:", replies)

            async with aclosing(client.send_stream(new_intent("countdown", {"from": 3}))) as items:
                async for item in items:
                    print("chunk" if isinstance(item, StreamChunk) else "final", item.payload)

            async with client.subscribe("build.*") as events:
                await client.publish(new_event("build.done", {"ok": True}))
                with trio.fail_after(5):
                    event = await events.__anext__()
                print("event:", event.event_type, event.payload)
            print("connections made:", client.pool.stats.connects)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
