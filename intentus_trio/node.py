"""A node: a Router, the listeners that serve it, and the remote agents it reaches.

``serve_node`` runs a whole node inside the caller's nursery; ``task_status.started``
reports the URLs the listeners are bound to (port 0 becomes the real port).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from typing import Any

import trio
from attrs import frozen

from ._groups import unwrap_single
from .config import ConfigError, McpServerConfig, NodeConfig, build_router
from .emcl.node_keys import load_node_keys
from .emcl.protector import Role
from .protocol.limits import DEFAULT_MAX_FRAME_BYTES
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
    # Remote transports and MCP sessions open first and close last (they may own nurseries,
    # which must nest): the listeners stop before what their agents rely on. A listener
    # that cannot start raises its own error, not a group around it.
    with unwrap_single():
        await _run_node(config, router, task_status)


async def _run_node(
    config: NodeConfig, router: Router, task_status: trio.TaskStatus[RunningNode]
) -> None:
    keys = None
    if config.emcl is not None:  # key files are read off the trio thread
        keys = await trio.to_thread.run_sync(load_node_keys, config.emcl, config.node.name)
    async with AsyncExitStack() as stack:
        limit = config.node.max_frame_bytes
        for i, remote in enumerate(config.remotes):
            options = _frame_limit(remote.url, remote.options, limit, server=False)
            if remote.emcl == "on" and keys is not None:
                options.setdefault("protector", keys.protector(Role.CLIENT, remote.emcl_peer))
            with _starting(f"config.remotes[{i}] ({remote.url})"):
                transport = await stack.enter_async_context(
                    open_transport(remote.url, **options))
            register_remote(router, remote.name, remote.intents, transport,
                            streaming=remote.streaming, timeout=remote.timeout)
        for i, server in enumerate(config.mcp_servers):
            # Tools are registered before any listener serves the router.
            with _starting(f"config.mcp_servers[{i}]"):
                await stack.enter_async_context(_open_mcp_server(router, server))
        async with trio.open_nursery() as nursery:
            urls = []
            for i, listener in enumerate(config.listeners):
                options = _frame_limit(listener.url, listener.options, limit, server=True)
                if listener.emcl != "off" and keys is not None:
                    options.setdefault("protector", keys.protector(Role.SERVER))
                    options.setdefault("require_emcl", listener.emcl == "required")
                    if options.get("distribute"):  # a ZeroMQ node seals its workers' work
                        options.setdefault("work_protector", keys.protector(Role.CLIENT))
                with _starting(f"config.listeners[{i}] ({listener.url})"):
                    urls.append(await nursery.start(_serve_one, server_for(listener.url),
                                                    router, listener.url, options))
            for i, worker in enumerate(config.workers):
                options = dict(worker.options)
                if worker.emcl != "off" and keys is not None:
                    options.setdefault("protector", keys.protector(Role.SERVER))
                    options.setdefault("require_emcl", worker.emcl == "required")
                with _starting(f"config.workers[{i}] ({worker.distributor})"):
                    await nursery.start(_serve_one, worker_for(worker.distributor), router,
                                        worker.distributor, options)
            task_status.started(RunningNode(router, tuple(urls),
                                            tuple(w.distributor for w in config.workers)))
            await trio.sleep_forever()


@contextmanager
def _starting(entry: str) -> Iterator[None]:
    """Say which entry of the node file failed to start.

    A transport refuses a wrong URL or option value with a TypeError or ValueError, and an
    option that should be an object but is not (a NodeConfig built in Python bypasses the
    file's checks) fails with an AttributeError: each is a ConfigError naming the entry.
    Other failures keep their type (a taken port is still an OSError) and get the entry as
    a note, which ``intentus-trio serve`` prints before them.
    """
    try:
        yield
    except (TypeError, ValueError, AttributeError) as exc:  # a ConfigError gains the entry
        raise ConfigError(f"{entry}: {exc}") from exc
    except Exception as exc:
        exc.add_note(entry)
        raise


def _frame_limit(
    url: str, options: dict[str, Any], limit: int, *, server: bool
) -> dict[str, Any]:
    """``options`` with the node's frame limit, unless they set one or it is the default."""
    if limit == DEFAULT_MAX_FRAME_BYTES or "max_frame_bytes" in options:
        return dict(options)
    if server and url.partition(":")[0].lower() in ("http", "https"):
        # the HTTP server's frame limit is its body size, one of its limits
        limits = options.get("limits")
        if limits is None:
            return {**options, "limits": {"max_body_bytes": limit}}
        if isinstance(limits, dict):
            return {**options, "limits": {"max_body_bytes": limit, **limits}}
        return dict(options)
    return {**options, "max_frame_bytes": limit}


async def _serve_one(
    run: Any, router: Router, url: str, options: dict[str, Any],
    *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run(router, url, task_status=task_status, **options)


def _open_mcp_server(router: Router, config: McpServerConfig) -> AbstractAsyncContextManager[Any]:
    try:  # the mcp extra is imported only by nodes that use it
        from mcp import StdioServerParameters

        from .mcp.client import open_mcp_agents
    except ImportError as exc:
        raise ConfigError("[[mcp_servers]] needs the mcp extra: "
                          "pip install 'intentus-trio[mcp]'") from exc
    server: Any = config.url or StdioServerParameters(
        command=config.command[0], args=config.command[1:], env=config.env or None,
        cwd=config.cwd)
    return open_mcp_agents(router, server, prefix=config.prefix, name=config.name,
                           timeout=config.timeout, include=config.include,
                           streaming=config.streaming)
