"""A ZeroMQ node in one trio program: request/reply, a stream, events, and a worker queue.

The node serves its own agents and hands ``job`` intents to a worker (here in the same
process; in production ``run_worker`` runs in other processes, e.g. ``python -m`` a script
that calls it). Run: ``python examples/zeromq_workers.py``
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import trio

from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import ZmqServer, open_client, run_worker


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def countdown(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    for n in range(int(env.payload.get("from", 3)), 0, -1):
        yield {"n": n}


async def job(env: IntentEnvelope) -> JsonObject:
    return {"square": env.payload["x"] ** 2, "worker": os.getpid()}


async def main() -> None:
    node = Router(name="node")
    node.register("echo", "echo", echo)
    node.register("countdown", "countdown", countdown)
    worker = Router(name="worker")
    worker.register("job", "job", job)

    # tcp://127.0.0.1:0 picks a port P with P+1 (events), P+2 (work), P+3 (results) free.
    server = ZmqServer(node, distribute="job", lease_timeout=10.0)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run, "tcp://127.0.0.1:0")
        print("node endpoints:", server.urls)
        await nursery.start(run_worker, worker, url)

        async with open_client(url, timeout=10) as client:
            replies: list[JsonObject | None] = [None] * 5

            async def call(i: int) -> None:
                replies[i] = (await client.send_intent(new_intent("echo", {"i": i}))).payload

            async with trio.open_nursery() as calls:  # five calls in flight on one socket
                for i in range(5):
                    calls.start_soon(call, i)
            print("concurrent:", replies)

            async for item in client.send_stream(new_intent("countdown", {"from": 3})):
                print("stream:", item)

            async with client.subscribe("agent.*") as events:  # confirmed on entry
                await client.publish(new_event("agent.started", {"agent": "echo"}))
                node.events.publish(new_event("agent.stopped", {"agent": "echo"}))
                for _ in range(2):
                    event = await events.__anext__()
                    print("event:", event.event_type, event.payload)

            response = await client.send_intent(new_intent("job", {"x": 12}))
            print("worker queue:", response.payload, "by agent", response.metadata["agent"])
            assert server.distributor is not None
            print("distributor:", server.distributor.stats)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
