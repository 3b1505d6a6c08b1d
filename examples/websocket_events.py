"""A WebSocket server and client in one trio program: concurrent calls on one connection,
a stream, and events pushed to a subscriber.

Run: ``python examples/websocket_events.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.websocket import WebSocketServer, open_client


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def countdown(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    for n in range(int(env.payload.get("from", 3)), 0, -1):
        yield {"n": n}


async def main() -> None:
    router = Router(name="example")
    router.register("echo", "echo", echo)
    router.register("countdown", "countdown", countdown)
    server = WebSocketServer(router, "ws://127.0.0.1:0/")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        print("serving on", url)
        async with open_client(url, timeout=10) as client:
            replies: list[JsonObject | None] = [None] * 5

            async def call(i: int) -> None:
                replies[i] = (await client.send_intent(new_intent("echo", {"i": i}))).payload

            async with trio.open_nursery() as calls:  # five calls in flight at once
                for i in range(5):
                    calls.start_soon(call, i)
            print("concurrent:", replies, "over", server.stats.connections, "connection")

            async for item in client.send_stream(new_intent("countdown", {"from": 3})):
                print("stream:", item)

            async with client.subscribe("agent.*") as events:
                await client.publish(new_event("agent.started", {"agent": "echo"}))
                router.events.publish(new_event("agent.stopped", {"agent": "echo"}))
                for _ in range(2):
                    event = await events.__anext__()
                    print("event:", event.event_type, event.payload)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
