"""Compose transports in one nursery: a backend node served over the network, a front
router that reaches it as a remote agent, and a local client of the front.

Uses the first network transport whose extra is installed (HTTP, WebSocket, ZeroMQ, MXP);
with none installed it links the two routers in-process, which is the same code path.

    python examples/compose_transports.py
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from intentus_trio import InProcessTransport, Router, new_intent, register_remote
from intentus_trio.samples import register_samples
from intentus_trio.transports.registry import UnknownScheme, open_transport, server_for

LISTEN_URLS = ("http://127.0.0.1:0", "ws://127.0.0.1:0", "tcp://127.0.0.1:0")


async def main() -> None:
    backend = register_samples(Router(name="backend"))
    front = Router(name="front")
    async with trio.open_nursery() as nursery:
        link: AbstractAsyncContextManager[Any] = InProcessTransport(backend)
        for url in LISTEN_URLS:
            try:
                serve = server_for(url)
            except UnknownScheme:
                continue
            bound = await nursery.start(serve, backend, url)
            print("backend listening on", bound)
            link = open_transport(bound)
            break
        else:
            print("no network transport installed: linking in-process")

        async with link as transport, InProcessTransport(front) as client:
            register_remote(front, "backend-upper", "upper", transport)
            response = await client.send_intent(new_intent("upper", {"text": "composed"}))
            print("front -> backend:", response.payload, "answered by",
                  response.metadata.get("agent"))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
