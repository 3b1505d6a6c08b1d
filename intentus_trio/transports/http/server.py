"""``serve``: the HTTP transport's server, hypercorn's trio worker in the caller's nursery.

Shutdown is graceful: when ``serve`` is cancelled the listeners close, idle keep-alive
connections are closed, event streams and long polls end, and requests and tasks still
running get ``graceful_timeout`` seconds to finish before they are cancelled. For that the
worker runs in a shielded scope whose deadline is set when the cancellation arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import Framework

from ..._groups import unwrap_single
from ...routing.router import Router
from ..framing import FrameProtector
from .app import HttpApp, ServerLimits
from .tasks import TaskStore

log = logging.getLogger("intentus_trio.http.server")


def _bind(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError("the server URL takes no path; endpoints live at the root")
    host = parts.hostname or "127.0.0.1"
    port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}", parts.scheme == "https"


def make_config(
    url: str,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    ca_certs: str | None = None,
    keep_alive_timeout: float = 30.0,
    keep_alive_max_requests: int = 1_000_000,
    read_timeout: int = 30,
    graceful_timeout: float = 5.0,
    ssl_handshake_timeout: float = 10.0,
    max_header_bytes: int = 16 * 1024,
    http2: bool = True,
) -> Config:
    """The hypercorn configuration ``serve`` uses (pass ``config=`` to replace it)."""
    bind, tls = _bind(url)
    if tls and not (certfile and keyfile):
        raise ValueError("an https:// server needs certfile= and keyfile=")
    if certfile and not tls:
        raise ValueError("certfile= given for an http:// URL; use https://")
    config = Config()
    config.bind = [bind]
    config.certfile = certfile
    config.keyfile = keyfile
    config.ca_certs = ca_certs
    config.keep_alive_timeout = keep_alive_timeout
    config.keep_alive_max_requests = keep_alive_max_requests
    config.read_timeout = read_timeout
    config.graceful_timeout = graceful_timeout
    config.ssl_handshake_timeout = ssl_handshake_timeout
    config.h11_max_incomplete_size = max_header_bytes
    config.alpn_protocols = ["h2", "http/1.1"] if http2 else ["http/1.1"]
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    return config


class HttpServer:
    """The HTTP server around one Router; ``serve`` builds one and runs it."""

    def __init__(
        self,
        router: Router,
        *,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        limits: ServerLimits | None = None,
        max_tasks: int = 1024,
        task_ttl: float = 300.0,
    ) -> None:
        self.app = HttpApp(
            router, protector=protector, require_emcl=require_emcl, limits=limits,
            tasks=TaskStore(max_tasks=max_tasks, result_ttl=task_ttl),
        )
        #: What hypercorn serves: the app, or the app with other endpoints mounted beside it.
        self.asgi: Any = self.app
        self.url: str | None = None

    async def run(
        self,
        config: Config,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled, then shut down within ``config.graceful_timeout``."""
        app = self.app
        stop = trio.Event()
        grace = float(config.graceful_timeout)
        async with trio.open_nursery() as nursery:
            worker: trio.CancelScope = await nursery.start(self._worker, config, stop)
            tasks_scope: trio.CancelScope = await nursery.start(self._task_host)
            await nursery.start(app.watch.run)
            assert self.url is not None
            task_status.started(self.url)
            try:
                await trio.sleep_forever()
            finally:
                deadline = trio.current_time() + grace
                app.closing.set()
                stop.set()
                tasks_scope.deadline = deadline
                # The worker also waits for its lifespan shutdown: a little longer.
                worker.deadline = deadline + 1.0

    async def _worker(
        self,
        config: Config,
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        app = cast(Framework, self.asgi)
        with trio.CancelScope(shield=True) as scope:
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(
                    partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
                )
                self.url = binds[0]
                task_status.started(scope)

    async def _task_host(
        self, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope(shield=True) as scope:
            async with trio.open_nursery() as nursery:
                self.app.task_nursery = nursery
                task_status.started(scope)
                await self.app.closing.wait()
            self.app.task_nursery = None


def server_limits(fields: Mapping[str, Any]) -> ServerLimits:
    """``ServerLimits`` from a mapping of its fields; unknown names are a ValueError."""
    known = {a.name for a in attrs.fields(ServerLimits)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown HTTP limits {unknown} (known: {sorted(known)})")
    return ServerLimits(**fields)


async def serve(
    router: Router,
    url: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    protector: FrameProtector | None = None,
    require_emcl: bool = False,
    limits: ServerLimits | Mapping[str, Any] | None = None,
    max_tasks: int = 1024,
    task_ttl: float = 300.0,
    config: Config | None = None,
    server: HttpServer | None = None,
    mcp: str | None = None,
    **config_options: Any,
) -> None:
    """Serve ``router`` at ``url`` (``http://host:port``, port 0 for any) until cancelled.

    ``await nursery.start(serve, router, url)`` returns the bound URL. ``config_options``
    go to ``make_config`` (TLS files, timeouts); ``server=`` lets a caller keep a handle on
    the HttpServer (its app's stats, tasks) instead of building one here. ``mcp="/mcp"``
    also answers MCP (Streamable HTTP, the ``mcp`` extra) at that path on the same port.
    ``limits`` may be a mapping of ``ServerLimits`` fields (as a node file gives them).
    """
    if isinstance(limits, Mapping):
        limits = server_limits(limits)
    if server is None:
        server = HttpServer(router, protector=protector, require_emcl=require_emcl,
                            limits=limits, max_tasks=max_tasks, task_ttl=task_ttl)
    if config is None:
        config = make_config(url, **config_options)
    with unwrap_single():
        if mcp is None:
            await server.run(config, task_status=task_status)
            return
        from ...mcp.server import McpMount, McpServer  # the mcp extra, only when asked

        async with McpServer(router) as bridge:
            server.asgi = McpMount(bridge, server.app, path=mcp,
                                   host=urlsplit(url).hostname or "127.0.0.1")
            await server.run(config, task_status=task_status)
