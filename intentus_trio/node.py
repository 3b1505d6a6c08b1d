"""A node: a Router, the listeners that serve it, and the remote agents it reaches.

``serve_node`` runs a whole node inside the caller's nursery; ``task_status.started``
reports the URLs the listeners are bound to (port 0 becomes the real port).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio
from attrs import frozen

from .config import NodeConfig, build_router
from .routing.remote import register_remote
from .routing.router import Router
from .transports.registry import open_transport, server_for, worker_for


@frozen
class RunningNode:
    router: Router
    #: The URLs the listeners are bound to.
    urls: tuple[str, ...]
    #: The distributors this node works for.
    distributors: tuple[str, ...] = ()


async def serve_node(
    config: NodeConfig,
    *,
    router: Router | None = None,
    task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node described by ``config`` until cancelled."""
    router = router or build_router(config)
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for remote in config.remotes:
            options: dict[str, Any] = dict(remote.options)
            transport = await stack.enter_async_context(open_transport(remote.url, **options))
            register_remote(router, remote.name, remote.intents, transport,
                            streaming=remote.streaming, timeout=remote.timeout)
        urls = []
        for listener in config.listeners:
            serve = server_for(listener.url)
            url = await nursery.start(_serve_one, serve, router, listener.url, listener.options)
            urls.append(url)
        for worker in config.workers:
            run_worker = worker_for(worker.distributor)
            await nursery.start(_serve_one, run_worker, router, worker.distributor,
                                worker.options)
        task_status.started(RunningNode(router, tuple(urls),
                                        tuple(w.distributor for w in config.workers)))
        await trio.sleep_forever()


async def _serve_one(
    run: Any, router: Router, url: str, options: dict[str, Any],
    *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run(router, url, task_status=task_status, **options)
