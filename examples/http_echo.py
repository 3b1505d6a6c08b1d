"""An HTTP server and client in one trio program: REST, a batch, a stream, events, a task.

Run: ``python examples/http_echo.py``
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.http import open_client, serve


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def countdown(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    for n in range(int(env.payload.get("from", 3)), 0, -1):
        yield {"n": n}


async def main() -> None:
    router = Router(name="example")
    router.register("echo", "echo", echo)
    router.register("countdown", "countdown", countdown)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, router, "http://127.0.0.1:0")
        print("serving on", url)
        async with open_client(url, timeout=10) as client:
            reply = await client.send_intent(new_intent("echo", {"hello": "world"}))
            print("REST:", reply.status, reply.payload)

            replies = await client.send_batch([new_intent("echo", {"i": i}) for i in range(3)])
            print("batch:", [r.payload for r in replies])

            missing = await client.send_intent(new_intent("nobody"))
            assert missing.error is not None
            print("error:", missing.error.code, "-", missing.error.message)

            async for item in client.send_stream(new_intent("countdown", {"from": 3})):
                print("stream:", item)

            async with client.subscribe("demo.*") as events:
                await client.publish(new_event("demo.hello", {"from": "example"}))
                async for event in events:
                    print("event:", event.event_type, event.payload)
                    break

            result = await client.run_task(new_intent("echo", {"long": "running"}))
            print("task:", result.payload)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
