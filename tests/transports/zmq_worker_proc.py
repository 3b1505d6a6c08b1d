"""A worker process for the worker-queue tests: ``python -m tests.transports.zmq_worker_proc``.

Arguments: the node URL and a mode. ``echo`` answers ``{"pid", "n"}``; ``hold`` prints
``started <n>`` for each intent and never finishes it (a worker about to be killed).
Prints ``ready`` once connected.
"""

from __future__ import annotations

import os
import sys

import trio

from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.zeromq import run_worker


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    router = Router(name=f"worker-{os.getpid()}")

    @router.agent("job", "job")
    async def job(env: IntentEnvelope) -> JsonObject:
        if mode == "hold":
            print(f"started {env.payload['n']}", flush=True)
            await trio.sleep_forever()
        return {"pid": os.getpid(), "n": env.payload["n"]}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_worker(router, url, task_status=task_status,
                                               concurrency=4, renew_interval=0.2)
            )
            print("ready", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
