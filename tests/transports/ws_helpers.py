"""Shared pieces of the WebSocket transport tests: agents, a running server, a TCP relay
that can cut or freeze connections, a task counter and a test-only FrameProtector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from intentus_trio.protocol.errors import AgentError
from intentus_trio.protocol.models import (
    IntentEnvelope,
    JsonObject,
)
from intentus_trio.routing.router import Router
from intentus_trio.transports.websocket import WebSocketServer

from ..gate import Gate


def make_router(gate: Gate | None = None) -> Router:
    router = Router(name="ws-test")

    @router.agent("echo", "echo")
    async def echo(env: IntentEnvelope) -> JsonObject:
        return env.payload

    @router.agent("count", "count")
    async def count(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
        for i in range(env.payload.get("n", 3)):
            if env.payload.get("delay"):
                await trio.sleep(env.payload["delay"])
            yield {"i": i, "pad": "y" * env.payload.get("pad", 0)}

    @router.agent("sleep", "sleep")
    async def sleep(env: IntentEnvelope) -> JsonObject:
        await trio.sleep(env.payload.get("seconds", 0))
        return {"slept": env.payload.get("seconds", 0)}

    @router.agent("fail", "fail")
    async def fail(env: IntentEnvelope) -> JsonObject:
        raise AgentError("always fails", details={"why": "testing"})

    if gate is not None:
        router.register("gate", "gate", gate.agent)
    return router


@asynccontextmanager
async def running_server(
    router: Router | None = None, url: str = "ws://127.0.0.1:0/", **options: Any
) -> AsyncIterator[tuple[str, WebSocketServer]]:
    """A server for the duration of the block, in a nursery of its own."""
    options.setdefault("shutdown_timeout", 0.5)
    server = WebSocketServer(router or make_router(), url, **options)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.run)
        try:
            yield bound, server
        finally:
            nursery.cancel_scope.cancel()


async def wait_no_connections(server: WebSocketServer) -> None:
    """Wait until the server holds no connection and every task has settled."""
    while server.connections:
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    await trio.testing.wait_all_tasks_blocked(cushion=0.02)


def count_tasks(task: trio.lowlevel.Task) -> int:
    """``task`` and every task below it."""
    return 1 + sum(count_tasks(child) for nursery in task.child_nurseries
                   for child in nursery.child_tasks)


def tasks_below(nursery: trio.Nursery) -> int:
    return sum(count_tasks(task) for task in nursery.child_tasks)


class TcpRelay:
    """Forwards connections on 127.0.0.1 to ``port``; ``cut`` closes them abruptly and
    ``freeze`` stops forwarding on them (the sockets stay open, like a dead peer)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.connections = 0
        self._scopes: set[trio.CancelScope] = set()
        self._frozen: set[int] = set()
        self._next = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    def freeze(self) -> None:
        self._frozen.update(range(self._next))

    async def _handle(self, down: trio.SocketStream) -> None:
        ident = self._next
        self._next += 1
        self.connections += 1
        try:
            up = await trio.open_tcp_stream("127.0.0.1", self.target)
        except OSError:
            await trio.aclose_forcefully(down)
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, down, up, ident, scope)
                nursery.start_soon(self._pump, up, down, ident, scope)
        self._scopes.discard(scope)
        await trio.aclose_forcefully(up)
        await trio.aclose_forcefully(down)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, ident: int,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if ident in self._frozen:
                    await trio.sleep_forever()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()  # one direction ended: end the other


@asynccontextmanager
async def running_relay(port: int) -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(port)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        try:
            yield relay
        finally:
            nursery.cancel_scope.cancel()


